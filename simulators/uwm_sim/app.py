"""`init_app()`: the aiohttp application of one simulated server, with its middlewares.

Why middlewares: cross-cutting behaviour applies to every route the same way: a crashed server drops
connections, an injected "slow" fault delays answers, requests arriving through the load-balancer
front are counted (and journalled when they reach a server out of rotation), the agent API needs the
bearer token, and database trouble becomes a 503 whose message never contains a connection string.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import agent_views, client_views, portal_views, status_views
from .db import DatabaseError
from .journal import FAILED, REFUSED
from .keys import RUNTIME
from .service import ServerRuntime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("uwm_sim")
LB_HEADER = "X-Uwm-Lb"
DRAIN_SECONDS = 1.0  # requests already on their way when a server left the rotation


@web.middleware
async def crashed(request: web.Request, handler: Handler) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    if rt.down:
        if request.transport is not None:
            request.transport.abort()
        raise web.HTTPServiceUnavailable(text="crashed")
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except agent_views.BadRequestError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except DatabaseError as exc:
        return web.json_response({"error": str(exc)}, status=503)


@web.middleware
async def slow(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/agent/v1/faults"):
        fault = await request.app[RUNTIME].take_request_fault("slow")
        if fault is not None:
            await asyncio.sleep(fault.delay_ms / 1000)
    return await handler(request)


@web.middleware
async def lb_traffic(request: web.Request, handler: Handler) -> web.StreamResponse:
    pool = request.headers.get(LB_HEADER)
    if not pool:
        return await handler(request)
    rt = request.app[RUNTIME]
    rt.lb_requests += 1
    rt.active_requests += 1
    try:
        if not rt.in_rotation and time.time() - rt.rotation_changed_at > DRAIN_SECONDS:
            await rt.estate.state.call(lambda conn: rt.journal(conn.cursor(), "traffic-out-of-rotation", FAILED,
                                                               pool=pool, path=request.path))
        return await handler(request)
    finally:
        rt.active_requests -= 1


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/agent/"):
        rt = request.app[RUNTIME]
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {rt.estate.config.agent_token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            await rt.estate.state.call(lambda conn: rt.journal(conn.cursor(), "auth", REFUSED,
                                                               path=request.path, method=request.method))
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
    return await handler(request)


def init_app(runtime: ServerRuntime) -> web.Application:
    app = web.Application(middlewares=[crashed, errors, lb_traffic, slow, auth])
    app[RUNTIME] = runtime
    app.add_routes(agent_views.routes())
    app.add_routes(client_views.routes())
    app.add_routes(portal_views.routes())
    app.add_routes(status_views.routes(runtime.cfg.kind))
    return app
