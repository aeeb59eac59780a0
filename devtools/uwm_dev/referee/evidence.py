"""What the audit reads of a finished (or running) run, gathered from the estate itself, never from the
operator: the simulators' journal, the topology of the fleet file, the rows of `uwm_backups` and a
checksum of the user data of every UWM database. Blocking (pyodbc); callers run it off the event loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyodbc
import yaml

from uwm_sim.config import expand_env
from uwm_sim.journal import Event, read_journal

from .audit import Backup, Topology

QUERY_TIMEOUT = 30


def topology(fleet_file: Path, env: Mapping[str, str], *, backups_required: bool = True) -> Topology:
    """The catalog, pools, settle delay and starting schemas of a fleet file (its `${VAR}`s from `env`)."""
    raw = expand_env(yaml.safe_load(fleet_file.read_text()), env=env)
    releases = tuple(str(r) for r in raw["releases"])
    pools = {str(lb["name"]): frozenset(str(s) for s in lb["servers"]) for lb in raw.get("loadBalancers") or ()}
    settle = float((raw.get("timing") or {}).get("settleSeconds", 30.0))
    schemas = {str(d["name"]): str(d.get("schemaVersion") or releases[0]) for d in raw["databases"]}
    return Topology(releases, pools, settle, schemas, backups_required)


def journal(state_odbc: str) -> list[Event]:
    return read_journal(state_odbc)


def _connect(odbc: str) -> pyodbc.Connection:
    conn = pyodbc.connect(odbc, autocommit=True, timeout=10)
    if "postgres" in odbc.lower():  # psqlODBC refuses pyodbc's connection timeout attribute
        conn.execute(f"SET statement_timeout = {QUERY_TIMEOUT * 1000}")
    else:
        conn.timeout = QUERY_TIMEOUT
    return conn


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return 0.0


def backups(databases: Mapping[str, str]) -> list[Backup]:
    """Every row of `uwm_backups` in each UWM database (name -> ODBC string); none where there is no table."""
    found: list[Backup] = []
    for name, odbc in sorted(databases.items()):
        conn = _connect(odbc)
        try:
            exists = conn.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'uwm_backups'")
            if not exists.fetchone()[0]:
                continue
            rows = conn.execute("SELECT id, taken_at, schema_version, verified FROM uwm_backups").fetchall()
            found += [Backup(name, str(r[0]), _epoch(r[1]), r[2], bool(r[3])) for r in rows]
        finally:
            conn.close()
    return found


def user_data(databases: Mapping[str, str]) -> dict[str, str]:
    """`rows:sha256` of `uwm_user_data` in each UWM database, independent of the rows' physical order."""
    found = {}
    for name, odbc in sorted(databases.items()):
        conn = _connect(odbc)
        try:
            rows = conn.execute("SELECT id, owner, item, value FROM uwm_user_data ORDER BY id").fetchall()
        finally:
            conn.close()
        found[name] = _digest(rows)
    return found


def backup_user_data(databases: Mapping[str, str], taken: list[Backup]) -> dict[str, dict[str, str]]:
    """database -> backup id -> `rows:sha256` of that backup's copy of `uwm_user_data` (PostgreSQL copies,
    `uwm_backup_<id>_user_data`; a SQL Server backup file cannot be read through ODBC: left out)."""
    found: dict[str, dict[str, str]] = {}
    for b in taken:
        odbc = databases.get(b.database)
        if odbc is None or "postgres" not in odbc.lower():
            continue
        table = f"uwm_backup_{b.id.replace('-', '_')}_user_data"
        conn = _connect(odbc)
        try:
            rows = conn.execute(f"SELECT id, owner, item, value FROM {table} ORDER BY id").fetchall()
        except pyodbc.Error:
            continue
        finally:
            conn.close()
        found.setdefault(b.database, {})[b.id] = _digest(rows)
    return found


def _digest(rows: list[Any]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr(tuple(row)).encode())
    return f"{len(rows)}:{digest.hexdigest()[:16]}"
