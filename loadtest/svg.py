"""The inline-SVG line chart, now kept with the served code (the operator dashboard draws with
it too, and the image ships no load tool): re-exported here for the load tool's report."""

from services.platform.svg import Point, Series, line_chart, nice_ticks

__all__ = ["Point", "Series", "line_chart", "nice_ticks"]
