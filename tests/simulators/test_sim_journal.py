"""The journal: gap-free ordered sequence numbers under concurrency, NDJSON over the agent, the auditor."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from uwm_sim import store
from uwm_sim.db import Database
from uwm_sim.dialect import detect
from uwm_sim.fleet import running_fleet
from uwm_sim.journal import Entry, Event, append, read, read_journal, violations

pytest_plugins = ["sim_fixtures"]


def snap(name: str, **kw: Any) -> dict[str, Any]:
    base = {"name": name, "kind": "Personalization", "database": "pers-db", "version": "2021.1", "role": "None",
            "group": None, "replicationEnabled": False, "loadBalanced": False, "inRotation": True}
    return {**base, **kw}


def ev(seq: int, server: str, op: str, outcome: str = "ok", **detail: Any) -> Event:
    return Event(seq, float(seq), server, "pers-db", op, outcome, detail)


def test_violations_replays_the_rules() -> None:
    start = [ev(1, "ps-1", "start", snapshot=snap("ps-1", role="Master", group="g", replicationEnabled=True)),
             ev(2, "ps-2", "start", snapshot=snap("ps-2", role="Subscriber", group="g", loadBalanced=True)),
             ev(3, "ps-3", "start", snapshot=snap("ps-3"))]
    bad = [*start,
           ev(4, "ps-2", "install", **{"from": "2021.1", "to": "2022.1", "jump": 1}),
           ev(5, "ps-1", "replication", enabled=False),
           ev(6, "ps-2", "rotation", inRotation=False),
           ev(7, "ps-3", "install", **{"from": "2021.1", "to": "2024.1", "jump": 3}),
           ev(8, "ps-3", "schema-migrate"),
           ev(9, "ps-2", "install", **{"from": "2021.1", "to": "2022.1", "jump": 1}),
           ev(10, "ps-3", "schema-migrated", "failed"),
           ev(11, "ps-2", "install", **{"from": "2021.1", "to": "2022.1", "jump": 1}),
           ev(12, "ps-2", "install", "refused", rule="busy"),
           ev(13, "ps-2", "traffic-out-of-rotation", "failed")]
    found = violations(bad)
    assert len(found) == 5, found
    assert "#4" in found[0] and "replication was enabled on ps-1" in found[0]
    assert "#4" in found[1] and "in rotation" in found[1]
    assert "#7" in found[2] and "jump of 3" in found[2]
    assert "#9" in found[3] and "ps-3 held the schema lock" in found[3]
    assert "#13" in found[4]
    assert violations(start) == []


def test_event_json_round_trip() -> None:
    e = ev(7, "ms-1", "install", **{"to": "2022.1"})
    data = e.to_json()
    assert data["ts"].endswith("Z") and data["seq"] == 7
    assert Event.from_json(json.loads(json.dumps(data))) == e


def test_appends_are_gap_free_and_readers_never_skip(new_database: str) -> None:
    d = detect(new_database)
    db = Database("state", new_database, d, max_idle=8)
    db.call_sync(lambda c: store.ensure_schema(c, d))
    writers, per_writer = 6, 25
    skipped: list[str] = []
    done = threading.Event()

    def write(w: int) -> None:
        for i in range(per_writer):
            db.call_sync(lambda c, i=i: append(c.cursor(), d, [Entry(f"s{w}", None, "op", detail={"i": i})]))

    def watch() -> None:
        seen = 0
        while not done.is_set() or seen < writers * per_writer:
            got = db.call_sync(lambda c, s=seen: read(c.cursor(), d, s, 50))
            for e in got:
                if e.seq != seen + 1:
                    skipped.append(f"after {seen} got {e.seq}")
                seen = e.seq

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join(timeout=30)
    db.close()
    events = read_journal(new_database)
    assert [e.seq for e in events] == list(range(1, writers * per_writer + 1))
    assert skipped == []
    assert all(b.ts >= a.ts for a, b in itertools.pairwise(events))


@pytest.mark.integration
async def test_journal_over_the_agent_api(estate: Callable[..., dict[str, Any]]) -> None:
    cfg = estate()
    async with running_fleet(cfg) as fleet, fleet.client("ms-1") as c:
        first = await c.journal()
        assert [e["op"] for e in first].count("start") == 5
        assert [e["seq"] for e in first] == list(range(1, len(first) + 1))
        last = first[-1]["seq"]
        await c.install("2024.1")
        new = await c.journal(since=last)
        assert [(e["op"], e["outcome"], e["detail"]["rule"]) for e in new] == [("install", "refused", "version-jump")]
        assert set(new[0]) == {"seq", "ts", "t", "server", "database", "op", "outcome", "detail"}
        only = await c.journal(server="ps-1")
        assert {e["server"] for e in only} == {"ps-1"}
        reply = await c.request("GET", "/agent/v1/journal?since=abc")
        assert reply.status == 400 and "since" in reply.body["error"]
        raw = await c.request("GET", "/agent/v1/journal?since=0")
        assert raw.text.count("\n") == len(first) + 1
        text = raw.text
    assert cfg["token"] not in text and "PWD" not in text
    tail = read_journal(cfg["stateDatabase"]["odbc"], since=last + 1)
    assert [(e.seq, e.op) for e in tail] == [(last + 2 + i, "stop") for i in range(5)]
