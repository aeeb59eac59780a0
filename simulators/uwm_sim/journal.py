"""The append-only journal of every operation and refusal, and helpers to read and audit it.

Why: tests (ours and the operator's) check the order of events and that no rule was ever broken,
across processes and restarts. Appends take an exclusive table lock and number events MAX(seq)+1, so
sequence numbers are gap-free and commit in order: a reader asking `since=N` never misses an event.
`violations()` replays the journal and reports anything the guide forbids.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .clients import journal_violations
from .db import Database, after_commit, execute_drained, rows
from .dialect import Dialect, detect
from .store import JOURNAL

OK, REFUSED, FAILED = "ok", "refused", "failed"


@dataclass(frozen=True)
class Event:
    seq: int
    ts: float
    server: str | None
    database: str | None
    op: str
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": iso(self.ts), "t": self.ts, "server": self.server,
                "database": self.database, "op": self.op, "outcome": self.outcome, "detail": self.detail}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(int(data["seq"]), float(data.get("t") or 0.0), data.get("server"), data.get("database"),
                   str(data["op"]), str(data["outcome"]), dict(data.get("detail") or {}))


@dataclass(frozen=True)
class Entry:
    """An event to append (its number and time are given at append)."""

    server: str | None
    database: str | None
    op: str
    outcome: str = OK
    detail: dict[str, Any] = field(default_factory=dict)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def append(cur: Any, d: Dialect, entries: Iterable[Entry]) -> list[int]:
    """Append in the caller's transaction; the table lock is held until it commits."""
    entries = list(entries)
    if not entries:
        return []
    execute_drained(cur, d.table_lock(JOURNAL))
    cur.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {JOURNAL}")
    seq = int(cur.fetchone()[0])
    now = time.time()
    params = []
    for e in entries:
        seq += 1
        params.append((seq, now, e.server, e.database, e.op, e.outcome, json.dumps(e.detail, sort_keys=True)))
    cur.executemany(f"INSERT INTO {JOURNAL} (seq, ts, server, database_name, op, outcome, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", params)
    after_commit(cur, entries)  # long-polled states wake once this commits (watch.py)
    return [p[0] for p in params]


def read(cur: Any, d: Dialect, since: int = 0, limit: int = 10_000, server: str | None = None) -> list[Event]:
    where = "seq > ?"
    params: list[Any] = [since]
    if server:
        where += " AND server = ?"
        params.append(server)
    cur.execute(d.select_page("seq, ts, server, database_name, op, outcome, detail", JOURNAL, where, "seq",
                              limit), *params)
    return [Event(int(r["seq"]), float(r["ts"]), r["server"], r["database_name"], r["op"], r["outcome"],
                  json.loads(r["detail"] or "{}")) for r in rows(cur)]


def read_journal(odbc: str, since: int = 0, dialect: str | None = None, limit: int = 100_000) -> list[Event]:
    """Blocking helper for tests: the journal of the estate whose state database is `odbc`."""
    d = detect(odbc, dialect)
    db = Database("state", odbc, d, max_idle=0)
    try:
        return db.call_sync(lambda conn: read(conn.cursor(), d, since, limit))
    finally:
        db.close()


def violations(events: Sequence[Event]) -> list[str]:
    """Replay the journal from its start and list every broken rule (empty when the estate was safe),
    including every moment a client pointed at no online server (`clients.journal_violations`)."""
    servers: dict[str, dict[str, Any]] = {}
    locks: dict[str, str] = {}
    found: list[str] = []

    def bad(e: Event, why: str) -> None:
        found.append(f"#{e.seq} {e.op} on {e.server}: {why}")

    for e in events:
        s = servers.get(e.server or "")
        if e.op in ("register", "start") and "snapshot" in e.detail:
            servers[e.server or ""] = dict(e.detail["snapshot"])
            continue
        if e.op == "traffic-out-of-rotation":
            bad(e, "load-balancer traffic reached a server out of rotation")
        if s is None:
            continue
        if e.op == "schema-migrated":  # succeeded or failed, the lock is released
            locks.pop(s["database"], None)
            continue
        if e.outcome != OK:
            continue
        if e.op == "install" and not e.detail.get("noop"):
            group = [o for o in servers.values() if s["role"] != "None" and o["role"] != "None"
                     and o["group"] == s["group"]]
            on = sorted(o["name"] for o in group if o["replicationEnabled"])
            if on:
                bad(e, f"installed while replication was enabled on {', '.join(on)}")
            if s["loadBalanced"] and s["inRotation"]:
                bad(e, "installed while in rotation")
            if int(e.detail.get("jump", 0)) > 2:
                bad(e, f"jump of {e.detail['jump']} major releases")
            holder = locks.get(s["database"])
            if holder and holder != s["name"]:
                bad(e, f"installed while {holder} held the schema lock")
        elif e.op == "install-complete":
            s["version"] = e.detail.get("to", s["version"])
        elif e.op == "replication":
            s["replicationEnabled"] = bool(e.detail.get("enabled"))
        elif e.op == "rotation":
            s["inRotation"] = bool(e.detail.get("inRotation"))
        elif e.op == "schema-migrate":
            holder = locks.get(s["database"])
            if holder and holder != s["name"]:
                bad(e, f"migrated while {holder} held the schema lock")
            locks[s["database"]] = s["name"]
    return found + journal_violations(events)
