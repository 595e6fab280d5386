"""The web server's state on the app: its backend clients and its composer."""

from __future__ import annotations

from aiohttp import web

from web_server.clients import Clients
from web_server.composer import Composer

CLIENTS = web.AppKey("web_clients", Clients)
COMPOSER = web.AppKey("web_composer", Composer)
