"""Fixtures of the simulator tests: fresh PostgreSQL databases and fleet configurations built from them.

Not a conftest.py on purpose: other test folders import the root conftest as module `conftest`, which a
second conftest.py would shadow. Test modules import the fixtures they use from here.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyodbc
import pytest

from sim_helpers import FAST, RELEASES, TOKEN, acceptance_fleet


@pytest.fixture
def make_db(pg_bed: Any) -> Iterator[Callable[[], str]]:
    """Creates empty databases on the test bed's PostgreSQL; drops them after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"s_{uuid.uuid4().hex[:12]}"
        conn = pyodbc.connect(pg_bed.odbc(), autocommit=True)
        try:
            conn.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()
        made.append(name)
        return str(pg_bed.odbc(name))

    yield make
    conn = pyodbc.connect(pg_bed.odbc(), autocommit=True)
    try:
        for name in made:
            with contextlib.suppress(pyodbc.Error):
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        conn.close()


@pytest.fixture
def estate(make_db: Callable[[], str]) -> Callable[..., dict[str, Any]]:
    """The acceptance topology on three fresh databases (state, management, personalization)."""
    def build(**timing: float) -> dict[str, Any]:
        return acceptance_fleet(make_db(), make_db(), make_db(), **timing)
    return build


@pytest.fixture
def small(make_db: Callable[[], str]) -> Callable[..., dict[str, Any]]:
    """Two Management servers (ms-1 load-balanced, ms-2 not) on one database; `timing` overrides FAST."""
    def build(**timing: float) -> dict[str, Any]:
        return {
            "releases": RELEASES, "token": TOKEN, "stateDatabase": {"odbc": make_db()},
            "timing": {**FAST, **timing},
            "databases": [{"name": "mgmt-db", "kind": "Management", "odbc": make_db(), "seedRows": 10}],
            "servers": [
                {"name": "ms-1", "kind": "Management", "database": "mgmt-db", "port": 0, "loadBalanced": True,
                 "inRotation": False},
                {"name": "ms-2", "kind": "Management", "database": "mgmt-db", "port": 0},
            ],
        }
    return build
