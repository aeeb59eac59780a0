"""The status pages at the guide's exact paths, and the servers' own service endpoints.

Why: the guide's test of a finished upgrade is "visit the status page; after about 30 seconds it
confirms a successful connection and lists the tests". The page answers 200 with "Connection
successful" only when the server runs the release of its database's schema and has settled; in any
other phase (starting, installing, locked out, version mismatch, failed) it says why and answers 503.
"""

from __future__ import annotations

from aiohttp import web

from . import pages
from .estate import Phase
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
    if ok and await rt.flap():
        ok, message = False, "Health check failed: the server did not answer in time (injected health flap)"
    tests = [
        ("Web service started and settled", phase is not Phase.STARTING and snap.now - me.started_at
         >= rt.timing.settle_seconds),
        ("Installation complete", not me.installing and not me.install_error),
        ("Database connection", db.reachable),
        ("Database not locked for a schema upgrade", db.lock_holder is None),
        ("Server release matches database schema", db.schema_version == me.version),
    ]
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
                                  "tests": [{"name": n, "passed": p} for n, p in tests]}, status=code)
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
    if phase in (Phase.RUNNING, Phase.STARTING):
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
