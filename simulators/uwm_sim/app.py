"""`init_app()`: the aiohttp application of one simulated server, with its middlewares.

Why middlewares: cross-cutting behaviour applies to every route the same way: a crashed server drops
connections, the agent API needs the bearer token (checked first: a rejected call consumes no fault and
counts as no traffic), injected transient errors hit a share of the agent calls, requests arriving
through the load-balancer front are counted (and journalled when they reach a server out of rotation),
an injected "slow" fault delays answers, and database trouble becomes a 503 whose message never
contains a connection string. aiohttp runs the list outermost first.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import agent_views, client_views, fault_ops, portal_views, status_views
from .db import DatabaseError
from .faults import FaultKind
from .guards import LB_SIGNATURE_HEADER, lb_signed
from .journal import FAILED
from .keys import RUNTIME
from .service import ServerRuntime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("uwm_sim")
LB_HEADER = "X-Uwm-Lb"
DRAIN_SECONDS = 1.0  # requests already on their way when a server left the rotation
UNFAULTED_AGENT_PATHS = ("/agent/v1/faults", "/agent/v1/journal")  # the test harness's own calls


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
        fault = await fault_ops.take_request_fault(request.app[RUNTIME], FaultKind.SLOW)
        if fault is not None:
            await asyncio.sleep(fault.delay_ms / 1000)
    return await handler(request)


@web.middleware
async def lb_traffic(request: web.Request, handler: Handler) -> web.StreamResponse:
    pool = request.headers.get(LB_HEADER)
    rt = request.app[RUNTIME]
    if not pool or not lb_signed(rt.estate.config.agent_token, pool, request.headers.get(LB_SIGNATURE_HEADER, "")):
        return await handler(request)  # not from the load-balancer front (a forged header counts as nothing)
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
            await fault_ops.journal_auth_rejection(rt, request.method, request.path)
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
    return await handler(request)


@web.middleware
async def transient(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`http-500`: answer 500 and do nothing; `drop-connection`: do it, then drop the connection unanswered."""
    path = request.path
    if not path.startswith("/agent/v1/") or path.startswith(UNFAULTED_AGENT_PATHS):
        return await handler(request)
    rt = request.app[RUNTIME]
    fault = await fault_ops.transient_hit(rt)
    if fault is None:
        return await handler(request)
    if fault.kind == FaultKind.HTTP_500:
        await fault_ops.journal_hit(rt, fault, request.method, path)
        return web.json_response({"error": "internal server error (injected fault http-500)"}, status=500)
    try:
        return await handler(request)  # its effect happens (or its error would be answered) ...
    finally:  # ... but nothing is: the connection is dropped
        await fault_ops.journal_hit(rt, fault, request.method, path)
        if request.transport is not None:
            request.transport.abort()


def init_app(runtime: ServerRuntime) -> web.Application:
    app = web.Application(middlewares=[crashed, errors, auth, transient, lb_traffic, slow])
    app[RUNTIME] = runtime
    app.add_routes(agent_views.routes())
    app.add_routes(client_views.routes())
    app.add_routes(portal_views.routes())
    app.add_routes(status_views.routes(runtime.cfg.kind))
    return app
