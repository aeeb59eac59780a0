"""The status pages at the guide's exact paths, and the servers' own service endpoints.

Why: the guide's test of a finished upgrade is "visit the status page; after about 30 seconds it
confirms a successful connection; check the details are correct and the tests are successful". The
page answers 200 with "Connection successful" only when the server runs the release of its database's
schema and has settled; in any other phase (starting, installing, locked out, version mismatch, failed)
it says why and answers 503. An injected `test-fail` shows one test failed on a page that still
answers 200: a client must read the tests, not only the status code. The client routes serve only
while the page would confirm.
"""

from __future__ import annotations

from aiohttp import web

from . import fault_ops, pages
from .estate import Phase, status_tests
from .keys import RUNTIME

STATUS_PATHS = {"Management": "/ManagementServer/deployment/status.aspx",
                "Personalization": "/PersonalizationServer/status.aspx"}
PREFIXES = {"Management": "/ManagementServer", "Personalization": "/PersonalizationServer"}


def wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


async def status(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    snap = await rt.snapshot()
    phase = rt.phase(snap)
    me, db = snap.me, snap.db
    ok = phase is Phase.RUNNING
    message = rt.reason(snap, phase)
    if ok and await fault_ops.flap(rt):
        ok, message = False, "Health check failed: the server did not answer in time (injected health flap)"
    tests = status_tests(me, db, phase, snap.now, rt.timing.settle_seconds)
    failing = await fault_ops.failing_test(rt, request.path) if ok else None
    tests = [(name, passed and name != failing) for name, passed in tests]
    database_state = ("unreachable" if not db.reachable else
                      f"locked by {db.lock_holder}" if db.lock_holder else
                      "OK" if db.schema_version == me.version else "version mismatch")
    details = [("Server", me.name), ("Kind", f"{me.kind} Server"), ("Version", me.version),
               ("Database", db.name), ("Database schema", db.schema_version or "unknown"),
               ("Database state", database_state), ("Phase", phase.value)]
    code = 200 if ok else 503
    if wants_json(request):
        return web.json_response({"server": me.name, "kind": me.kind, "version": me.version, "ok": ok,
                                  "message": message, "phase": phase.value, "database": db.name,
                                  "schemaVersion": db.schema_version, "databaseState": database_state,
                                  "tests": [{"name": n, "passed": p} for n, p in tests],
                                  "testsPassed": all(p for _, p in tests)}, status=code)
    title = f"{me.kind} Server Status"
    return web.Response(text=pages.status_page(title, details, tests, ok, message), status=code,
                        content_type="text/html")


async def service(request: web.Request) -> web.StreamResponse:
    """Any other request to the server's site: served only when the server is up and current."""
    rt = request.app[RUNTIME]
    snap = await rt.snapshot()
    phase = rt.phase(snap)
    if not snap.online:
        return web.json_response({"error": f"{rt.name} is offline (not serving clients)", "server": rt.name},
                                 status=503)
    if phase is Phase.RUNNING:  # as its status page: not while starting
        return web.json_response({"server": rt.name, "version": snap.me.version, "path": request.path})
    return web.json_response({"error": rt.reason(snap, phase), "server": rt.name}, status=503)


async def index(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    links = [STATUS_PATHS[rt.cfg.kind], "/ServerConfigurationPortal/"]
    return web.Response(text=pages.index_page(rt.name, rt.cfg.kind, links), content_type="text/html")


def routes(kind: str) -> list[web.RouteDef]:
    prefix = PREFIXES[kind]
    return [web.get(STATUS_PATHS[kind], status), web.get("/", index),
            web.route("*", prefix + "/{tail:.*}", service)]
