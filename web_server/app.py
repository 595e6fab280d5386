"""The web server's app factory, in either deployment mode.

- ``monolith`` (default): one process hosts the catalog, subscription and recommender services
  (their ``/v1`` APIs included) and the web pages call their logic objects in-process.
- ``microservices``: the web pages call the three services over HTTP.

Everything above the clients (composer, pages, templates) is the same code in both modes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.platform.app import SETTINGS, add_openapi_paths, add_ready_check, create_base_app
from services.platform.middleware import METRICS
from services.platform.settings import Settings
from web_server import admin, pages, render, session
from web_server.batch import setup_batch_pages
from web_server.clients import Clients, http_clients, local_clients
from web_server.composer import Composer
from web_server.feedback import setup_feedback
from web_server.state import CLIENTS, COMPOSER

MODES = ("monolith", "microservices")


def _install(app: web.Application, clients: Clients) -> None:
    app[CLIENTS] = clients
    app[COMPOSER] = Composer(clients, app[SETTINGS], app[METRICS])


async def http_clients_ctx(app: web.Application) -> AsyncIterator[None]:
    """HTTP clients (one connection pool per backend), closed on shutdown."""
    clients = http_clients(app[SETTINGS], app[METRICS])
    _install(app, clients)
    try:
        yield
    finally:
        await clients.close()


async def local_clients_ctx(app: web.Application) -> AsyncIterator[None]:
    """In-process clients over the logic objects the services' own cleanup_ctx opened."""
    from recommender.app import RECOMMENDER
    from recommender.batch_api import BATCH_JOBS
    from recommender.experiments import EXPERIMENTS
    from services.catalog.app import CATALOG
    from services.subscription.app import ACCOUNTS, SUBSCRIPTIONS

    clients = local_clients(
        app[CATALOG],
        app[SUBSCRIPTIONS],
        app[ACCOUNTS],
        app[RECOMMENDER],
        app[BATCH_JOBS],
        app[SETTINGS],
        app[METRICS],
        app[EXPERIMENTS].report,
    )
    _install(app, clients)
    yield


def setup_web(app: web.Application) -> None:
    """The pages, templates and static files on an app whose ``CLIENTS`` a cleanup_ctx fills."""
    render.setup_templates(app)
    app.middlewares.append(render.html_errors)
    session.setup_sessions(app)  # who is logged in, before any handler runs
    pages.setup_routes(app)
    setup_feedback(app)
    setup_batch_pages(app)
    admin.setup_admin(app)  # the operator dashboard, /admin
    add_openapi_paths(app, pages.openapi_paths(app[SETTINGS]))
    add_openapi_paths(app, admin.openapi_paths())
    add_ready_check(app, "web", lambda: CLIENTS in app)


def create_app(settings: Settings) -> web.Application:
    if settings.mode not in MODES:
        raise ValueError(f"MARQUEE_MODE must be one of {', '.join(MODES)}, got {settings.mode!r}")
    app = create_base_app(settings, "web", own_middlewares=True)
    if settings.mode == "monolith":
        from recommender.app import setup_recommender
        from recommender.batch_worker import batch_worker_ctx
        from services.catalog.app import setup_catalog
        from services.feedback.worker import aggregator_ctx
        from services.subscription.app import setup_subscription

        setup_catalog(app)
        setup_subscription(app)
        setup_recommender(app)
        app.cleanup_ctx.append(local_clients_ctx)
        app.cleanup_ctx.append(batch_worker_ctx)  # offline predictions, in-process too
        app.cleanup_ctx.append(aggregator_ctx)  # experiment counts, in-process too
    else:
        app.cleanup_ctx.append(http_clients_ctx)
    setup_web(app)
    return app
