"""The load-balancer front: one common address forwarding only to pool members in rotation.

Why it reads the rotation from the state database on every request: rotation is changed through each
server's own agent (possibly in another process), and "take a server offline, verify no traffic
reaches it" must hold the moment the agent answers. No member in rotation: 503. Members are tried
round-robin; one that does not answer is skipped (502 when none answers). What it forwards carries its
pool's name and a signature made with the fleet's token (`guards.lb_signature`), so a server can tell
real load-balancer traffic from a client that only sets the header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from .config import LoadBalancerConfig
from .db import Database, rows
from .guards import LB_SIGNATURE_HEADER, lb_signature
from .store import SERVER

HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}


@dataclass(frozen=True)
class Member:
    name: str
    url: str | None
    in_rotation: bool


class LoadBalancer:
    def __init__(self, cfg: LoadBalancerConfig, state: Database, token: str) -> None:
        self.cfg = cfg
        self.signature = lb_signature(token, cfg.name)
        self.name = cfg.name
        self.state = state
        self.session: aiohttp.ClientSession | None = None
        self._next = 0
        self.url = ""

    async def members(self) -> list[Member]:
        names = self.cfg.servers

        def read(conn: Any) -> list[Member]:
            cur = conn.cursor()
            cur.execute(f"SELECT name, url, in_rotation FROM {SERVER} WHERE name IN "
                        f"({', '.join('?' for _ in names)})", *names)
            found = {r["name"]: Member(r["name"], r["url"], bool(r["in_rotation"])) for r in rows(cur)}
            return [found.get(n, Member(n, None, False)) for n in names]
        return await self.state.call(read)

    def pick(self, members: list[Member]) -> list[Member]:
        """Members in rotation, starting at the next one round-robin."""
        live = [m for m in members if m.in_rotation and m.url]
        if not live:
            return []
        start = self._next % len(live)
        self._next += 1
        return live[start:] + live[:start]


LB = web.AppKey("lb", LoadBalancer)


async def pool(request: web.Request) -> web.Response:
    lb = request.app[LB]
    members = await lb.members()
    return web.json_response({"name": lb.name, "url": lb.url, "members": [
        {"name": m.name, "url": m.url, "inRotation": m.in_rotation} for m in members]})


async def forward(request: web.Request) -> web.StreamResponse:
    lb = request.app[LB]
    order = lb.pick(await lb.members())
    if not order:
        return web.json_response({"error": f"no server of pool {lb.name} is in rotation"}, status=503,
                                 headers={"X-Uwm-Lb": lb.name})
    body = await request.read()
    own = {"x-uwm-lb", LB_SIGNATURE_HEADER.lower()}  # set by the front alone, never passed on from a client
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS | own}
    headers["X-Uwm-Lb"] = lb.name
    headers[LB_SIGNATURE_HEADER] = lb.signature
    assert lb.session is not None
    for member in order:
        try:
            async with lb.session.request(request.method, f"{member.url}{request.rel_url.path_qs}", data=body,
                                          headers=headers, allow_redirects=False) as resp:
                data = await resp.read()
                out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS}
                out.update({"X-Uwm-Lb": lb.name, "X-Uwm-Lb-Member": member.name})
                return web.Response(status=resp.status, body=data, headers=out)
        except (aiohttp.ClientError, TimeoutError):
            continue
    return web.json_response({"error": f"no server of pool {lb.name} answered"}, status=502)


def init_lb_app(cfg: LoadBalancerConfig, state: Database, token: str) -> web.Application:
    lb = LoadBalancer(cfg, state, token)
    app = web.Application()
    app[LB] = lb

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        lb.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), auto_decompress=True)
        yield
        await lb.session.close()

    app.cleanup_ctx.append(session_ctx)
    app.add_routes([web.get("/lb/v1/pool", pool), web.route("*", "/{tail:.*}", forward)])
    return app
