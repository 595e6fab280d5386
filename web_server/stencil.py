"""Pages rendered once and filled per request.

Most of a movie page is the same for every visitor: the movie's details, the similar row of a
model version, the plan box of a plan. Rendering those with Jinja2 on every request was a third
of the page's CPU. Instead a template is rendered once with *holes* where the per-request values
go (the viewer's id and CSRF token, a form's idempotency key) and *slots* where streamed fragments
go; the result is split into a ``Stencil``, cached, and filled per request by joining strings.

A hole is a marker no rendered text can contain (a NUL-delimited name; ``autoescape`` leaves the
Markup alone). Fill values are escaped here, so a hole is exactly as safe as ``{{ value }}``.
"""

from __future__ import annotations

from collections.abc import Mapping

from markupsafe import Markup, escape

MARK = "\x00"
SLOT = "slot:"


def hole(name: str) -> Markup:
    """Where a per-request value goes (a template variable's value at stencil time)."""
    return Markup(f"{MARK}{name}{MARK}")


def slot(name: str) -> Markup:
    """Where a streamed fragment goes (a template global)."""
    return hole(SLOT + name)


class Stencil:
    """Rendered text split at its holes: ``parts[0::2]`` literal text, ``parts[1::2]`` names."""

    __slots__ = ("parts", "slots")

    def __init__(self, rendered: str) -> None:
        if rendered.count(MARK) % 2:
            raise ValueError("unbalanced hole markers in a rendered template")
        self.parts = tuple(rendered.split(MARK))
        self.slots = tuple(n[len(SLOT) :] for n in self.parts[1::2] if n.startswith(SLOT))

    def fill(self, values: Mapping[str, object]) -> list[str]:
        """The text with every hole filled (values escaped), cut at the slots: one chunk before
        the first slot, one after each."""
        chunks: list[str] = []
        current: list[str] = [self.parts[0]]
        parts = self.parts
        for i in range(1, len(parts), 2):
            name = parts[i]
            if name.startswith(SLOT):
                chunks.append("".join(current))
                current = []
            else:
                current.append(escape(values[name]))
            current.append(parts[i + 1])
        chunks.append("".join(current))
        return chunks

    def text(self, values: Mapping[str, object] | None = None) -> str:
        """The filled text of a stencil without slots."""
        return "".join(self.fill(values or {}))
