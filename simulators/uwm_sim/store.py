"""The estate-state database: every server's shared state and the portal status, in SQL.

Why in a database and not in memory: one process per server and one process for many must agree on
replication flags, rotation and in-progress installs, and all of it must survive a simulator restart.
Mutations take the estate lock (`sim_server` exclusive, to commit) so a rule check and the change it
allows are atomic across processes. Functions here are blocking; callers run them via `Database.call`.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from .db import execute_drained, rows
from .dialect import Column, Dialect
from .estate import GroupMember, ServerState

SERVER, PORTAL, JOURNAL, CLIENTS = "sim_server", "sim_portal", "sim_journal", "sim_clients"

TABLES: dict[str, tuple[Column, ...]] = {
    SERVER: (
        Column("name", "varchar(128)", primary_key=True),
        Column("kind", "varchar(32)", nullable=False),
        Column("database_name", "varchar(128)", nullable=False),
        Column("version", "varchar(64)", nullable=False),
        Column("url", "varchar(512)"),
        Column("repl_role", "varchar(16)", nullable=False),
        Column("repl_group", "varchar(128)"),
        Column("repl_enabled", "int", nullable=False),
        Column("repl_changed_at", "float", nullable=False),
        Column("load_balanced", "int", nullable=False),
        Column("in_rotation", "int", nullable=False),
        Column("started_at", "float", nullable=False),
        Column("install_target", "varchar(64)"),
        Column("install_started", "float"),
        Column("install_finished", "float"),
        Column("install_error", "varchar(512)"),
        Column("install_fault", "varchar(32)"),
        Column("install_seconds", "float", nullable=False),
        Column("faults", "text"),
    ),
    PORTAL: (
        Column("database_name", "varchar(128)", primary_key=True),
        Column("status", "varchar(32)", nullable=False),
        Column("from_version", "varchar(64)"),
        Column("to_version", "varchar(64)"),
        Column("by_server", "varchar(128)"),
        Column("error", "varchar(512)"),
        Column("updated_at", "float", nullable=False),
    ),
    JOURNAL: (
        Column("seq", "bigint", primary_key=True),
        Column("ts", "float", nullable=False),
        Column("server", "varchar(128)"),
        Column("database_name", "varchar(128)"),
        Column("op", "varchar(64)", nullable=False),
        Column("outcome", "varchar(16)", nullable=False),
        Column("detail", "text"),
    ),
    CLIENTS: (  # the estate's client configuration (uwm_sim.clients), one JSON document
        Column("id", "int", primary_key=True),
        Column("doc", "text", nullable=False),
        Column("updated_at", "float", nullable=False),
    ),
}

_STATE_FIELDS = [f.name for f in fields(ServerState)]
_COLUMN_OF = {"database": "database_name"}
_BOOLS = {"repl_enabled", "load_balanced", "in_rotation"}
_SELECT = ", ".join(_COLUMN_OF.get(f, f) for f in _STATE_FIELDS)
_PORTAL_FIELDS = ("status", "from_version", "to_version", "by_server", "error", "updated_at")
# One server's row, its database's portal status and the client configuration document, in one statement:
# a state look is asked for after every change of every server, so its round trips are what a wide fleet
# in one process pays most often.
_LOOK = (f"SELECT {', '.join('s.' + _COLUMN_OF.get(f, f) for f in _STATE_FIELDS)}, "
         f"{', '.join(f'p.{c} AS portal_{c}' for c in _PORTAL_FIELDS)}, "
         f"(SELECT doc FROM {CLIENTS} WHERE id = 1) AS clients_doc "
         f"FROM {SERVER} s LEFT JOIN {PORTAL} p ON p.database_name = s.database_name WHERE s.name = ?")

_LOOK_MANY = _LOOK.replace("WHERE s.name = ?", "WHERE s.name IN (?)")
LOOK_CHUNK = 500  # names per statement (SQL Server takes at most 2100 parameters)


def ensure_schema(conn: Any, d: Dialect, reset: bool = False) -> None:
    cur = conn.cursor()
    execute_drained(cur, d.ddl_lock())
    for table, columns in TABLES.items():
        if reset:
            cur.execute(d.drop_table(table))
        cur.execute(d.create_table(table, columns))


def lock_estate(cur: Any, d: Dialect) -> None:
    execute_drained(cur, d.table_lock(SERVER))


def _state(row: dict[str, Any]) -> ServerState:
    values = {f: row[_COLUMN_OF.get(f, f)] for f in _STATE_FIELDS}
    for b in _BOOLS:
        values[b] = bool(values[b])
    return ServerState(**values)


def get_server(cur: Any, name: str) -> ServerState | None:
    cur.execute(f"SELECT {_SELECT} FROM {SERVER} WHERE name = ?", name)
    found = rows(cur)
    return _state(found[0]) if found else None


def look(cur: Any, name: str) -> tuple[ServerState, dict[str, Any] | None, str | None] | None:
    """The server `name`, the portal status of its database (None: none yet) and the client configuration
    document (None: none yet), as of one statement; None when the server is not registered."""
    cur.execute(_LOOK, name)
    found = rows(cur)
    if not found:
        return None
    row = found[0]
    portal = {c: row[f"portal_{c}"] for c in _PORTAL_FIELDS} if row["portal_status"] is not None else None
    doc = row["clients_doc"]
    return _state(row), portal, str(doc) if doc else None


def look_many(cur: Any, names: list[str]) -> dict[str, tuple[ServerState, dict[str, Any] | None, str | None]]:
    """`look` for each of `names` (those registered), as of one statement per `LOOK_CHUNK` names."""
    found: dict[str, tuple[ServerState, dict[str, Any] | None, str | None]] = {}
    for i in range(0, len(names), LOOK_CHUNK):
        chunk = names[i:i + LOOK_CHUNK]
        cur.execute(_LOOK_MANY.replace("(?)", f"({', '.join('?' for _ in chunk)})"), *chunk)
        for row in rows(cur):
            portal = {c: row[f"portal_{c}"] for c in _PORTAL_FIELDS} if row["portal_status"] is not None else None
            doc = row["clients_doc"]
            state = _state(row)
            found[state.name] = (state, portal, str(doc) if doc else None)
    return found


def list_servers(cur: Any, *, group: str | None = None, database: str | None = None,
                 names: list[str] | None = None, role: str | None = None) -> list[ServerState]:
    where, params = ["1 = 1"], []
    if group is not None:
        where.append("repl_group = ? AND repl_role <> 'None'")
        params.append(group)
    if role is not None:
        where.append("repl_role = ?")
        params.append(role)
    if database is not None:
        where.append("database_name = ?")
        params.append(database)
    if names is not None:
        if not names:
            return []
        where.append(f"name IN ({', '.join('?' for _ in names)})")
        params.extend(names)
    cur.execute(f"SELECT {_SELECT} FROM {SERVER} WHERE {' AND '.join(where)} ORDER BY name", *params)
    return [_state(r) for r in rows(cur)]


def group_members(cur: Any, group: str | None) -> list[GroupMember]:
    """The members of replication group `group`, by name, with only what enabling replication reads: each
    of 200 subscribers enabling it read the whole rows of all 200, most of a wide fleet's re-enabling."""
    cur.execute(f"SELECT name, database_name, version, install_target, install_finished FROM {SERVER} "
                "WHERE repl_group = ? AND repl_role <> 'None' ORDER BY name", group)
    return [GroupMember(str(r[0]), str(r[1]), str(r[2]), r[3] is not None and r[4] is None)
            for r in cur.fetchall()]


def list_database_peers(cur: Any, database: str) -> list[ServerState]:
    """The servers of `database` and every member of a replication group with a server on it, by name, in
    one statement (an install's rules need both; in a group of 200 on one database, reading each apart read
    the same 200 rows twice, under the estate lock)."""
    replicated = "repl_role <> 'None' AND repl_group IS NOT NULL"
    cur.execute(f"SELECT {_SELECT} FROM {SERVER} WHERE database_name = ? OR ({replicated} AND repl_group IN "
                f"(SELECT repl_group FROM {SERVER} WHERE database_name = ? AND {replicated})) ORDER BY name",
                database, database)
    return [_state(r) for r in rows(cur)]


def get_faults(cur: Any, name: str) -> str:
    cur.execute(f"SELECT faults FROM {SERVER} WHERE name = ?", name)
    row = cur.fetchone()
    return str(row[0]) if row and row[0] else "[]"


def insert_server(cur: Any, state: ServerState) -> None:
    values = asdict(state)
    cols = [_COLUMN_OF.get(f, f) for f in _STATE_FIELDS] + ["faults"]
    params = [int(values[f]) if f in _BOOLS else values[f] for f in _STATE_FIELDS] + ["[]"]
    cur.execute(f"INSERT INTO {SERVER} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", *params)


def delete_server(cur: Any, name: str) -> None:
    cur.execute(f"DELETE FROM {SERVER} WHERE name = ?", name)


_UPDATABLE = set(_STATE_FIELDS) | {"faults"}


def update_server(cur: Any, name: str, **changes: Any) -> None:
    bad = set(changes) - _UPDATABLE
    if bad:
        raise ValueError(f"not server columns: {sorted(bad)}")
    cols = [f"{_COLUMN_OF.get(k, k)} = ?" for k in changes]
    params = [int(v) if k in _BOOLS else v for k, v in changes.items()]
    cur.execute(f"UPDATE {SERVER} SET {', '.join(cols)} WHERE name = ?", *params, name)


def get_portal(cur: Any, database: str) -> dict[str, Any] | None:
    cur.execute(f"SELECT status, from_version, to_version, by_server, error, updated_at FROM {PORTAL} "
                "WHERE database_name = ?", database)
    found = rows(cur)
    return found[0] if found else None


def set_portal(cur: Any, database: str, status: str, now: float, from_version: str | None = None,
               to_version: str | None = None, by_server: str | None = None, error: str | None = None) -> None:
    cur.execute(f"UPDATE {PORTAL} SET status = ?, from_version = ?, to_version = ?, by_server = ?, error = ?, "
                "updated_at = ? WHERE database_name = ?",
                status, from_version, to_version, by_server, error, now, database)
    if cur.rowcount == 0:
        cur.execute(f"INSERT INTO {PORTAL} (database_name, status, from_version, to_version, by_server, error, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    database, status, from_version, to_version, by_server, error, now)
