"""Streamed HTML pages: the primary content goes out at once, slow optional fragments follow.

A page is a shell template (the head, the navigation and the primary content, e.g. the movie's
details) with named slots, ``{{ slot("similar") }}``, where the optional fragments belong. The
shell is rendered and sent as soon as the primary data is known; each fragment is then written in
document order as it completes, so the browser paints the title while the recommender is still
thinking. No client-side script is involved: it is one chunked HTML response.

Everything that decides the status (404 / 503) happens before ``stream_page`` is called; once
the first byte is out the page is a 200, and a fragment that fails renders as a short note.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup

from services.platform.logs import request_id_var
from services.platform.middleware import REQUEST_ID
from web_server import session

log = logging.getLogger("marquee.web")

_SLOT = re.compile(r"<!--marquee-slot:([a-z_]+)-->")
FAILED_FRAGMENT = (
    '<p class="note degraded" role="status">This part of the page could not be shown.</p>'
)


def slot(name: str) -> Markup:
    """The place of a fragment in the shell (a template global)."""
    return Markup(f"<!--marquee-slot:{name}-->")


async def _fragment_html(name: str, fragment: Awaitable[str] | None) -> str:
    if fragment is None:
        return ""
    try:
        return await fragment
    except Exception:
        log.exception("page fragment failed", extra={"fragment": name})
        return FAILED_FRAGMENT


async def stream_page(
    request: web.Request,
    template: str,
    context: Mapping[str, object],
    fragments: Mapping[str, asyncio.Future[str]],
    *,
    headers: Mapping[str, str] | None = None,
    before_send: Callable[[web.StreamResponse], None] | None = None,
) -> web.StreamResponse:
    """Send the shell up to the first slot now, then each fragment (already running as a task
    or future) and the shell text after it, in document order. Unfinished fragments are
    cancelled when the page ends early (the client went away)."""
    try:
        # Settle the visitor's CSRF identity (and its cookie) before the headers go out: a
        # fragment rendered after that may hold a form.
        session.csrf_token(request)
        shell = aiohttp_jinja2.render_string(template, request, dict(context))
        pieces = _SLOT.split(shell)
        response = web.StreamResponse(headers=dict(headers or {}))
        response.content_type = "text/html"
        response.charset = "utf-8"
        response.headers[REQUEST_ID] = request_id_var.get() or ""
        session.set_anon_cookie(request, response)
        if before_send is not None:
            before_send(response)
        await response.prepare(request)
        if request.method == "HEAD":  # headers only: a body here would corrupt the connection
            await response.write_eof()
            return response
        try:
            await response.write(pieces[0].encode())
            for index in range(1, len(pieces), 2):
                name, after = pieces[index], pieces[index + 1]
                html = await _fragment_html(name, fragments.get(name))
                await response.write((html + after).encode())
            await response.write_eof()
        except ConnectionResetError:  # the visitor left mid-page: nothing more to send
            log.debug("client went away while the page streamed", extra={"path": request.path})
        return response
    finally:
        for fragment in fragments.values():
            fragment.cancel()
        for fragment in fragments.values():
            with contextlib.suppress(BaseException):
                await fragment
