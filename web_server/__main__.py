"""``python -m web_server``: serve the Marquee web pages (monolith by default)."""

from __future__ import annotations

import logging

from services.platform.logs import configure_logging
from services.platform.runner import run_service
from services.platform.settings import settings_or_exit
from web_server.app import create_app

log = logging.getLogger("marquee.web")


def main() -> None:
    settings = settings_or_exit()
    configure_logging("web", settings.log_level)
    log.info(
        "starting Marquee web server",
        extra={"mode": settings.mode, "url": f"http://127.0.0.1:{settings.web_port}/"},
    )
    run_service(create_app, settings, "web", settings.web_port)


if __name__ == "__main__":
    main()
