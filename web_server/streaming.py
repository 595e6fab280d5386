"""Streamed HTML pages: the primary content goes out at once, slow optional fragments follow.

A page is text cut at its slots (see ``stencil``): the chunk before the first slot is sent as soon
as the primary data is known (the movie's details: the browser paints the title while the
recommender is still thinking), then each fragment and the text after it, in document order. No
client-side script is involved: it is one chunked HTML response.

Writes are coalesced: whatever is ready goes out in one write, so a page whose fragments are all
done by the time its shell is ready leaves in a single write with its headers (aiohttp sends the
headers with the first body chunk).

Everything that decides the status (404 / 503) happens before ``stream`` is called; once the
first byte is out the page is a 200, and a fragment that fails renders as a short note. A visitor
who left is not an error: nothing more is rendered or sent, and the request is counted as 499.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from services.platform.logs import request_id_var
from services.platform.middleware import REQUEST_ID, client_went_away, mark_client_gone
from web_server import session

log = logging.getLogger("marquee.web")

FAILED_FRAGMENT = (
    '<p class="note degraded" role="status">This part of the page could not be shown.</p>'
)


@dataclass(frozen=True)
class Fragment:
    """A streamed part of a page: whether it is ready, and how to get its HTML."""

    done: Callable[[], bool]
    html: Callable[[], Awaitable[str]]


async def _nothing() -> str:
    return ""


NOTHING = Fragment(lambda: True, _nothing)  # a slot this page leaves empty


def of_future(future: asyncio.Future[str]) -> Fragment:
    async def html() -> str:
        return await future

    return Fragment(future.done, html)


async def _fragment_html(fragment: Fragment) -> str:
    try:
        return await fragment.html()
    except Exception:
        log.exception("page fragment failed")
        return FAILED_FRAGMENT


def html_response(headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    response = web.StreamResponse(headers=headers)
    response.content_type = "text/html"
    response.charset = "utf-8"
    response.headers[REQUEST_ID] = request_id_var.get()
    return response


async def stream(
    request: web.Request,
    chunks: Sequence[str],
    fragments: Sequence[Fragment],
    *,
    headers: Mapping[str, str] | None = None,
    before_send: Callable[[web.StreamResponse], None] | None = None,
) -> web.StreamResponse:
    """Send ``chunks[0]``, then each fragment followed by the next chunk, in document order
    (``len(chunks) == len(fragments) + 1``), in as few writes as the fragments allow."""
    response = html_response(headers)
    session.set_anon_cookie(request, response)
    if before_send is not None:
        before_send(response)
    try:
        await response.prepare(request)
        if request.method == "HEAD":  # headers only: a body here would corrupt the connection
            await response.write_eof()
            return response
        waiting = chunks[0]
        for fragment, after in zip(fragments, chunks[1:], strict=True):
            if waiting and not fragment.done():
                await response.write(waiting.encode())
                waiting = ""
            if client_went_away(request):
                mark_client_gone(request)
                return response
            waiting += await _fragment_html(fragment) + after
        await response.write_eof(waiting.encode())
    except ConnectionError:  # the visitor left mid-page: nothing more to send
        mark_client_gone(request)
    return response
