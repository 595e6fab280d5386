"""The operator dashboard's routes: ``/admin`` (the page), ``/admin/login`` and
``/admin/logout``.

Server-rendered like every page (autoescaped Jinja2, no script), CSRF on both forms through the
site's own tokens (``session.require_csrf``), and answered with ``Cache-Control: no-store`` so
no proxy or back button keeps an operator's page. Who may see it: ``admin_session``. What it
shows: ``admin_data`` (each section degrades on its own, so the page is never a 500 because a
backend is).
"""

from __future__ import annotations

from aiohttp import web

from recommender.schemas import ModelList
from services.feedback.schemas import ExperimentReport
from services.platform.app import SETTINGS
from services.platform.errors import NotFound
from services.platform.jsonutil import read_form
from services.platform.openapi import form_post, operation
from services.subscription.throttle import retry_after_header
from web_server import admin_data, admin_session, session
from web_server.admin_chart import ctr_charts
from web_server.admin_data import LoadedModel, SourceDown, Unavailable
from web_server.render import page

NO_STORE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}
PREFERRED_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "hitrate@10")
MAX_METRIC_COLUMNS = 6
NOT_CONFIGURED = (
    "The operator dashboard is not configured here: set MARQUEE_ADMIN_TOKEN to turn it on."
)


def _require_enabled(request: web.Request) -> None:
    if not admin_session.enabled(request.app[SETTINGS]):
        raise NotFound(NOT_CONFIGURED, code="admin_disabled")


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **NO_STORE})


def _login_page(
    request: web.Request,
    *,
    error: str | None = None,
    status: int = 200,
    retry_after: int | None = None,
) -> web.Response:
    headers = dict(NO_STORE)
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    return page(request, "admin_login.html", {"error": error}, status=status, headers=headers)


async def login_form(request: web.Request) -> web.Response:
    _require_enabled(request)
    if admin_session.is_operator(request):
        return _see_other("/admin")
    return _login_page(request)


async def login(request: web.Request) -> web.Response:
    """The admin token, typed: right sets the session cookie; wrong is a 403 that sets nothing
    (and takes one of this address's few tries)."""
    _require_enabled(request)
    form = await read_form(request)
    session.require_csrf(request, form)
    settings = request.app[SETTINGS]
    typed = str(form.get("token", ""))[: admin_session.MAX_TOKEN + 1]
    client = session.client_address(request) or "unknown"
    tries = request.app[admin_session.ADMIN_LOGINS]
    wait = tries.take(client)
    if wait:
        return _login_page(
            request,
            error="Too many wrong tokens from this address; wait a minute and try again.",
            status=429,
            retry_after=retry_after_header(wait),
        )
    if not admin_session.token_ok(settings, typed):
        return _login_page(request, error="That is not the admin token.", status=403)
    tries.give_back(client)
    response = _see_other("/admin")
    admin_session.start(request, response)
    return response


async def logout(request: web.Request) -> web.Response:
    _require_enabled(request)
    form = await read_form(request)
    session.require_csrf(request, form)
    response = _see_other("/admin/login")
    admin_session.end(response)
    return response


async def dashboard(request: web.Request) -> web.Response:
    _require_enabled(request)
    if not admin_session.is_operator(request):
        return _see_other("/admin/login")
    data = await admin_data.gather(request.app)
    experiment = data.experiment
    charts = (
        ctr_charts(experiment.arms)
        if experiment is not None and not isinstance(experiment, Unavailable)
        else []
    )
    context = {
        "d": data,
        "charts": charts,
        "metric_keys": _metric_columns(data.published),
        "loaded_versions": _loaded_versions(data.loaded),
        "arm_of": _arm_of(data.experiment),
        "unavailable": _is_unavailable,
        "down": _is_down,
    }
    return page(request, "admin.html", context, headers=NO_STORE)


def _metric_columns(published: ModelList | Unavailable) -> list[str]:
    """The offline metrics the versions' table shows: the usual ones first, at most a few."""
    if isinstance(published, Unavailable):
        return []
    present = {
        key
        for m in published.items
        for key, value in m.metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    ordered = [k for k in PREFERRED_METRICS if k in present]
    ordered += sorted(present - set(ordered))
    return ordered[:MAX_METRIC_COLUMNS]


def _loaded_versions(loaded: list[LoadedModel] | Unavailable) -> set[str]:
    if isinstance(loaded, Unavailable):
        return set()
    return {m.version for m in loaded if m.version}


def _arm_of(experiment: ExperimentReport | None | Unavailable) -> dict[str, str]:
    """Which arm of the running experiment each version serves (none once it stopped)."""
    if experiment is None or isinstance(experiment, Unavailable):
        return {}
    if experiment.experiment.stopped is not None:
        return {}
    return {arm.version: arm.arm for arm in experiment.arms}


def _is_unavailable(value: object) -> bool:
    return isinstance(value, Unavailable)


def _is_down(value: object) -> bool:
    return isinstance(value, SourceDown)


def setup_admin(app: web.Application) -> None:
    admin_session.setup_admin_sessions(app)
    app.cleanup_ctx.append(admin_data.admin_probes_ctx)
    app.router.add_get("/admin", dashboard, name="admin")
    app.router.add_get("/admin/login", login_form, name="admin_login")
    app.router.add_post("/admin/login", login)
    app.router.add_post("/admin/logout", logout, name="admin_logout")


def openapi_paths() -> dict:
    html = "text/html"

    return {
        "/admin": {
            "get": operation(
                "Operator dashboard (HTML; an admin session, else a redirect to its login)",
                ok=200,
                errors=(404,),
                content_type=html,
            )
        },
        "/admin/login": {
            "get": operation("Operator login form (HTML)", errors=(404,), content_type=html),
            "post": form_post(
                "Log in with the admin token; sets the admin session cookie (Path=/admin)",
                (403, 404, 429),
            ),
        },
        "/admin/logout": {"post": form_post("End this browser's admin session", (403, 404))},
    }
