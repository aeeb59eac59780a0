"""Fixtures of the simulator tests: fresh PostgreSQL databases and fleet configurations built from them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyodbc
import pytest

TOKEN = "sim-test-token-0123456789"
RELEASES = ["2021.1", "2022.1", "2023.1", "2024.1", "2025.1"]
FAST = {"settleSeconds": 0, "installSeconds": 0.05, "migrationStepSeconds": 0.02, "caughtUpSeconds": 0.05,
        "crashRestartSeconds": 0.3}


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
            try:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except pyodbc.Error:
                pass
    finally:
        conn.close()


def acceptance_fleet(state: str, mgmt: str, pers: str, **timing: float) -> dict[str, Any]:
    """2 Management servers and 3 Personalization servers (1 master, 2 subscribers) on two databases."""
    return {
        "releases": RELEASES,
        "token": TOKEN,
        "stateDatabase": {"odbc": state},
        "timing": {**FAST, **timing},
        "databases": [
            {"name": "mgmt-db", "kind": "Management", "odbc": mgmt, "schemaVersion": "2021.1", "seedRows": 25},
            {"name": "pers-db", "kind": "Personalization", "odbc": pers, "schemaVersion": "2021.1",
             "seedRows": 40},
        ],
        "servers": [
            {"name": "ms-1", "kind": "Management", "database": "mgmt-db", "port": 0, "loadBalanced": True},
            {"name": "ms-2", "kind": "Management", "database": "mgmt-db", "port": 0, "loadBalanced": True},
            {"name": "ps-1", "kind": "Personalization", "database": "pers-db", "port": 0, "loadBalanced": True,
             "replicationRole": "Master"},
            {"name": "ps-2", "kind": "Personalization", "database": "pers-db", "port": 0, "loadBalanced": True,
             "replicationRole": "Subscriber"},
            {"name": "ps-3", "kind": "Personalization", "database": "pers-db", "port": 0, "loadBalanced": True,
             "replicationRole": "Subscriber"},
        ],
        "loadBalancers": [
            {"name": "ms-pool", "port": 0, "servers": ["ms-1", "ms-2"]},
            {"name": "ps-pool", "port": 0, "servers": ["ps-1", "ps-2", "ps-3"]},
        ],
    }


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
