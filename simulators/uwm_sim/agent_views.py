"""The upgrade-agent JSON API (docs/contracts.md section 2), standing in for the vendor's installer.

Why thin: each view parses and validates its body (400 naming the field), hands it to the server's
runtime, and turns the outcome into JSON; the rules live in `estate`, the effects in `service`.
The bearer token is checked by the app's middleware before any of these run.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from . import fault_ops
from . import journal as journal_mod
from .guards import MAX_JSON_DEPTH, json_depth_exceeds
from .keys import RUNTIME
from .service import Outcome
from .watch import MAX_WAIT_SECONDS, state_after

VERSION = re.compile(r"^[0-9A-Za-z]{1,64}$")


class BadRequestError(Exception):
    pass


def parse_json(raw: bytes) -> Any:
    """A request body as JSON; 400 (`BadRequestError`) when it is not JSON or is nested too deeply."""
    too_deep = BadRequestError(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise too_deep from None
    except ValueError:
        raise BadRequestError("body: not valid JSON") from None
    if json_depth_exceeds(value):
        raise too_deep
    return value


async def body_of(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    return parse_json(raw)


def reply(outcome: Outcome) -> web.Response:
    return web.json_response(outcome.body, status=outcome.status)


async def get_state(request: web.Request) -> web.Response:
    """The state; with `waitForChange=SECONDS` (and `since=VERSION`, a `stateVersion` the client has), once
    it differs from that version or after SECONDS at the latest (`watch.py`)."""
    rt = request.app[RUNTIME]
    if "waitForChange" not in request.query:
        return web.json_response(await rt.state())
    seconds = _int_param(request, "waitForChange", 0, 0, MAX_WAIT_SECONDS)
    since = request.query.get("since") or None
    if since is not None and not VERSION.match(since):
        raise BadRequestError("since: a stateVersion (up to 64 letters and digits) is required")
    return web.json_response(await state_after(rt, since, seconds))


async def post_install(request: web.Request) -> web.Response:
    return reply(await request.app[RUNTIME].install(await body_of(request)))


async def post_replication(request: web.Request) -> web.Response:
    return reply(await request.app[RUNTIME].set_replication(await body_of(request)))


async def post_rotation(request: web.Request) -> web.Response:
    return reply(await request.app[RUNTIME].set_rotation(await body_of(request)))


async def post_faults(request: web.Request) -> web.Response:
    return reply(await fault_ops.add_fault(request.app[RUNTIME], await body_of(request)))


async def delete_faults(request: web.Request) -> web.Response:
    return reply(await fault_ops.clear_faults(request.app[RUNTIME]))


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"{name}: an integer is required") from None
    if not low <= value <= high:
        raise BadRequestError(f"{name}: must be between {low} and {high}")
    return value


async def get_journal(request: web.Request) -> web.Response:
    since = _int_param(request, "since", 0, 0, 2**62)
    limit = _int_param(request, "limit", 10_000, 1, 100_000)
    server = request.query.get("server") or None
    rt = request.app[RUNTIME]
    state = rt.estate.state
    events = await state.call(lambda conn: journal_mod.read(conn.cursor(), state.dialect, since, limit, server))
    text = "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in events)
    return web.Response(text=text, content_type="application/x-ndjson")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/agent/v1/state", get_state),
        web.post("/agent/v1/install", post_install),
        web.post("/agent/v1/replication", post_replication),
        web.post("/agent/v1/rotation", post_rotation),
        web.post("/agent/v1/faults", post_faults),
        web.delete("/agent/v1/faults", delete_faults),
        web.get("/agent/v1/journal", get_journal),
    ]
