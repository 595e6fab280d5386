"""Catalog and subscription set up on one app, as the monolith's web server does."""

from __future__ import annotations

import aiohttp

from services.catalog.app import setup_catalog
from services.platform.app import create_base_app
from services.platform.settings import Settings
from services.subscription.app import setup_subscription
from tests.services.conftest import Serve
from tests.support import get_json


async def test_both_services_share_one_app(
    http: aiohttp.ClientSession, settings: Settings, serve: Serve
) -> None:
    app = create_base_app(settings, "web", own_middlewares=True)
    setup_catalog(app)
    setup_subscription(app)
    server = await serve(app)
    ready, readiness = await get_json(http, str(server.make_url("/readyz")))
    movie, _ = await get_json(http, str(server.make_url("/v1/movies/1")))
    plans, _ = await get_json(http, str(server.make_url("/v1/plans")))
    assert (ready, movie, plans) == (200, 200, 200)
    assert readiness["checks"] == {"catalog": True, "subscription": True}
