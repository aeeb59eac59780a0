"""The Server Configuration Portal: "Database Updates Required", UPDATE SELECTED / UPDATE ALL, status.

Why: the guide upgrades databases through this portal, not through the installer; the operator (and
a human with a browser) drive the same endpoints. HTML by default, JSON for `Accept: application/json`
or JSON requests; no token, as on the real portal of the simulator.
"""

from __future__ import annotations

from html import escape
from typing import Any

from aiohttp import web

from . import migration, pages
from .agent_views import BadRequestError, parse_json
from .keys import RUNTIME
from .service import Outcome

BASE = pages.PORTAL


def _json_client(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return request.content_type == "application/json" or ("application/json" in accept
                                                            and "text/html" not in accept)


async def _status(request: web.Request) -> dict[str, Any]:
    rt = request.app[RUNTIME]
    return migration.portal_status(rt, await rt.snapshot())


async def portal(request: web.Request) -> web.StreamResponse:
    status = await _status(request)
    if _json_client(request):
        return web.json_response(status)
    return web.Response(text=pages.portal_page(status), content_type="text/html")


async def database_updates(request: web.Request) -> web.StreamResponse:
    status = await _status(request)
    if "text/html" in request.headers.get("Accept", ""):
        return web.Response(text=pages.portal_page(status), content_type="text/html")
    return web.json_response(status)


async def summary(request: web.Request) -> web.StreamResponse:
    status = await _status(request)
    if _json_client(request):
        return web.json_response(status)
    return web.Response(text=pages.summary_page(status), content_type="text/html")


async def _selected(request: web.Request) -> list[str]:
    if request.content_type == "application/json":
        body = parse_json(await request.read() or b"{}")
        dbs = body.get("databases") if isinstance(body, dict) else None
        if not isinstance(dbs, list) or not all(isinstance(d, str) for d in dbs):
            raise BadRequestError("databases: a list of database names is required")
        return list(dbs)
    form = await request.post()
    return [str(v) for v in form.getall("databases", [])]


async def _answer(request: web.Request, outcome: Outcome) -> web.StreamResponse:
    if _json_client(request):
        return web.json_response(outcome.body, status=outcome.status)
    if outcome.status >= 300:
        body = pages.page("Database Updates", f"<p id=\"error\">{escape(str(outcome.body.get('error', '')))}</p>")
        return web.Response(text=body, status=outcome.status, content_type="text/html")
    status = await _status(request)
    return web.Response(text=pages.portal_page(status), status=outcome.status, content_type="text/html")


async def update_selected(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    return await _answer(request, await migration.start(rt, await _selected(request)))


async def update_all(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    return await _answer(request, await migration.start(rt, None))


async def close(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    await migration.close(rt)
    if _json_client(request):
        return web.json_response(await _status(request))
    raise web.HTTPSeeOther(f"{BASE}/Summary")


def routes() -> list[web.RouteDef]:
    return [
        web.get(f"{BASE}/", portal),
        web.get(BASE, portal),
        web.get(f"{BASE}/DatabaseUpdates", database_updates),
        web.post(f"{BASE}/DatabaseUpdates/UpdateSelected", update_selected),
        web.post(f"{BASE}/DatabaseUpdates/UpdateAll", update_all),
        web.post(f"{BASE}/DatabaseUpdates/Close", close),
        web.get(f"{BASE}/Summary", summary),
    ]
