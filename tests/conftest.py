"""Shared fixtures: the real test bed (PostgreSQL and the control plane), started once per run.

Tests that need it ask for `pg_bed`/`odbc`/`new_database` (PostgreSQL only) or `kube` (the API server
too). They are marked `testbed` automatically, so `pytest -m "not testbed"` runs the fast ones alone.

With pytest-xdist (`make test` runs `-n`), every worker shares the one test bed: the first to need it
starts it under a file lock, the others find it up, and only the controlling process stops it when the
whole run is over (a worker that stopped it would pull it from under the others). Each test has its own
namespace, databases, fleet, ports and operator, so tests run side by side; a test that restarts the
API server or PostgreSQL asks for a test bed of its own (`private_bed`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from uwm_dev.testbed import assets
from uwm_dev.testbed.bed import Testbed

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["e2e.e2e_support"]
BED_FIXTURES = {"pg_bed", "odbc", "new_database", "kube", "private_bed"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.testbed)


BED_DIR = Path(os.environ.get("UWM_PYTEST_TESTBED_DIR", REPO / ".testbed" / "pytest"))


def _worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _bring_up(bed: Testbed, kube: bool) -> None:
    """`up` under a lock shared by every worker of this run: one starts what is missing, the rest wait."""
    bed.dir.mkdir(parents=True, exist_ok=True)
    with (bed.dir.parent / f"{bed.dir.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            bed.up(kube=kube)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _worker(session.config):  # the controller (or a run without workers): the bed's last user
        Testbed.at(BED_DIR).down(quiet=True)


@pytest.fixture(scope="session")
def _bed() -> Testbed:
    return Testbed.at(BED_DIR)


@pytest.fixture(scope="session")
def pg_bed(_bed: Testbed) -> Testbed:
    _bring_up(_bed, kube=False)
    return _bed


@pytest.fixture
def private_bed() -> Iterator[Callable[[bool], Testbed]]:
    """A test bed of this test's own (its own etcd, kube-apiserver and PostgreSQL), for a test that stops or
    restarts them; `private_bed(kube)` starts it, and it is stopped when the test ends."""
    beds: list[Testbed] = []

    def start(kube: bool = True) -> Testbed:
        bed = Testbed.at(REPO / ".testbed" / "private" / uuid.uuid4().hex[:8])
        beds.append(bed)
        bed.up(kube=kube)
        return bed

    yield start
    for bed in beds:
        bed.down(quiet=True)
        pg = bed.dir / "pg"
        if pg.is_symlink():  # its cluster was kept out of a private checkout (testbed/postgres.py): gone too
            shutil.rmtree(pg.resolve(), ignore_errors=True)
        shutil.rmtree(bed.dir, ignore_errors=True)


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
    _bring_up(_bed, kube=True)
    found = assets.resolve(build=False)
    return Kube(_bed.kubeconfig, found.kubectl, found.helm)


@pytest.fixture
def namespace(kube: Kube) -> str:
    """A fresh namespace per test: without a controller manager namespaces never finish deleting."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl_run("create", "namespace", name, check=True)
    return name


# ---------------------------------------------------------------- the Go tools the tests judge with


def _go_tool(name: str) -> Path:
    from uwm_dev import gotools

    found = gotools.find(name)
    if found is None:
        pytest.skip(f"{name} is not built: `make tools` (uwm-dev tools build) builds it from the Go module proxy")
    return found


@pytest.fixture(scope="session")
def kstatus_bin() -> Path:
    """sigs.k8s.io/cli-utils' kstatus, as Flux, `helm --wait` and kpt run it (devtools/uwm_dev/gotools.py)."""
    return _go_tool("kstatus")


@pytest.fixture(scope="session")
def kubeconform_bin() -> Path:
    return _go_tool("kubeconform")
