"""Shared fixtures: the real test bed (PostgreSQL and the control plane), started once per session.

Tests that need it ask for `pg_bed`/`odbc`/`new_database` (PostgreSQL only) or `kube` (the API server
too). They are marked `testbed` automatically, so `pytest -m "not testbed"` runs the fast ones alone.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from uwm_upgrade.testbed import assets
from uwm_upgrade.testbed.bed import Testbed

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["e2e.e2e_support"]
BED_FIXTURES = {"pg_bed", "odbc", "new_database", "kube"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.testbed)


@pytest.fixture(scope="session")
def _bed() -> Iterator[Testbed]:
    bed = Testbed.at(os.environ.get("UWM_PYTEST_TESTBED_DIR", REPO / ".testbed" / "pytest"))
    yield bed
    bed.down(quiet=True)


@pytest.fixture(scope="session")
def pg_bed(_bed: Testbed) -> Testbed:
    _bed.up(kube=False)
    return _bed


@pytest.fixture(scope="session")
def odbc(pg_bed: Testbed) -> str:
    """ODBC connection string of the test bed's database `uwm` (PostgreSQL through psqlODBC)."""
    return pg_bed.odbc()


@pytest.fixture
def new_database(pg_bed: Testbed) -> str:
    """A fresh, empty database of its own for one test; returns its ODBC connection string."""
    import pyodbc

    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = pyodbc.connect(pg_bed.odbc(), autocommit=True)
    try:
        conn.execute(f"CREATE DATABASE {name}")
    finally:
        conn.close()
    return pg_bed.odbc(name)


@dataclass(frozen=True)
class Kube:
    """The running API server: its kubeconfig and the binaries that talk to it."""

    kubeconfig: Path
    kubectl: Path
    helm: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl_run(self, *args: str, input: str | None = None,
                    check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.kubectl), *args], input=input, capture_output=True, text=True,
                              env=self.env(), check=check, timeout=120)


@pytest.fixture(scope="session")
def kube(_bed: Testbed) -> Kube:
    _bed.up(kube=True)
    found = assets.resolve(build=False)
    return Kube(_bed.kubeconfig, found.kubectl, found.helm)


@pytest.fixture
def namespace(kube: Kube) -> str:
    """A fresh namespace per test: without a controller manager namespaces never finish deleting."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl_run("create", "namespace", name, check=True)
    return name
