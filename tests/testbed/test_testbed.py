"""The test bed is real: a version-stamped API server, RBAC, PostgreSQL through pyodbc, clean shutdown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pyodbc
import pytest

from uwm_dev.testbed import assets, controlplane, procs
from uwm_dev.testbed.bed import State, Testbed

from conftest import REPO, Kube


def test_server_reports_a_real_stamped_version(kube: Kube) -> None:
    out = kube.kubectl_run("version", "-o", "json", check=True).stdout
    info = json.loads(out)
    server = info["serverVersion"]["gitVersion"]
    assert server == assets.KUBERNETES_VERSION, server
    major, minor = int(info["serverVersion"]["major"]), int(info["serverVersion"]["minor"])
    assert (major, minor) >= (1, 34)
    assert info["clientVersion"]["gitVersion"] == assets.KUBERNETES_VERSION


def test_api_resources_lists_upgradeplans(kube: Kube) -> None:
    out = kube.kubectl_run("api-resources", "--api-group=upgrade.uwm.io", check=True).stdout
    assert "upgradeplans" in out and "uplan" in out


def test_rbac_is_enforced_for_other_users(kube: Kube, namespace: str) -> None:
    allowed = kube.kubectl_run("auth", "can-i", "create", "upgradeplans", "-n", namespace)
    assert allowed.stdout.strip() == "yes"
    denied = kube.kubectl_run("auth", "can-i", "create", "upgradeplans", "-n", namespace,
                              "--as=system:serviceaccount:default:nobody")
    assert denied.stdout.strip() == "no"


def test_odbc_round_trip_to_postgresql(new_database: str) -> None:
    conn = pyodbc.connect(new_database, autocommit=False)
    try:
        conn.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(40), ok BOOLEAN)")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", 1, "ünïcode", True)
        conn.commit()
        row = conn.execute("SELECT id, name, ok FROM t WHERE id = ?", 1).fetchone()
        assert tuple(row) == (1, "ünïcode", True)
        assert isinstance(row.ok, bool)  # BoolsAsChar=0 in the connection string
    finally:
        conn.close()


def test_etcd_start_survives_a_taken_port(kube: Kube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A port taken between choosing and binding costs one retry, not the test bed."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    real = procs.free_port
    calls = iter([taken, taken])
    monkeypatch.setattr(procs, "free_port", lambda host="127.0.0.1": next(calls, None) or real(host))
    found = assets.resolve(build=False)
    ep = controlplane.start_etcd(found, tmp_path / "etcd", tmp_path / "logs")
    try:
        assert ep.port != taken
        assert procs.alive(ep.pid)
    finally:
        procs.stop(ep.pid)
        blocker.close()
    assert not procs.alive(ep.pid)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "uwm-dev"
    if not exe.exists():
        exe = REPO / ".venv" / "bin" / "uwm-dev"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.testbed
def test_cli_up_twice_env_and_down_leaves_no_process(kube: Kube) -> None:
    """The README's flow on a bed of its own: up, up again (harmless), source env, kubectl, down."""
    work = REPO / ".testbed" / f"cli-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    bed = Testbed.at(work / ".testbed")
    try:
        t0 = time.monotonic()
        first = _cli("testbed", "up", cwd=work)
        assert first.returncode == 0, first.stderr
        warm_seconds = time.monotonic() - t0
        print(f"warm `testbed up`: {warm_seconds:.1f} s")
        state = bed.state()
        assert state is not None and state.apiserver_pid and state.etcd_pid and state.pg_port

        again = _cli("testbed", "up", cwd=work)
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stderr
        assert bed.state() == state  # nothing restarted

        script = f"source {work / '.testbed' / 'env'} && kubectl get ns -o name && kubectl version -o json"
        res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False,
                             env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"})
        assert res.returncode == 0, res.stderr
        assert "namespace/default" in res.stdout

        status = _cli("testbed", "status", cwd=work)
        assert status.returncode == 0 and "up" in status.stdout
    finally:
        down = _cli("testbed", "down", cwd=work)
    assert down.returncode == 0, down.stderr
    _assert_all_stopped(state, work)
    status = _cli("testbed", "status", cwd=work)
    assert status.returncode == 1 and "down" in status.stdout


def _assert_all_stopped(state: State, work: Path) -> None:
    pg_pid = None
    pidfile = Path(state.pg_data) / "postmaster.pid"
    if pidfile.exists():
        pg_pid = int(pidfile.read_text().splitlines()[0])
    for pid in (state.etcd_pid, state.apiserver_pid, pg_pid):
        if pid:
            assert not procs.alive(pid), f"process {pid} still running after `testbed down`"
    left = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True, check=False).stdout.split()
    assert left == [], f"processes still running from {work}: {left}"


@pytest.mark.testbed
def test_up_after_a_crash_replaces_dead_processes(kube: Kube) -> None:
    work = REPO / ".testbed" / f"crash-{os.getpid()}"
    bed = Testbed.at(work)
    try:
        st = bed.up()
        procs.stop(st.apiserver_pid)  # simulate a crash of the API server
        assert not bed.healthy()
        st2 = bed.up()
        assert bed.healthy()
        assert st2.apiserver_pid != st.apiserver_pid
        assert st2.pg_port == st.pg_port  # the healthy part was kept
    finally:
        bed.down(quiet=True)
    assert bed.state() is None


def test_outages_api_server_and_postgresql_restart_on_their_old_ports(private_bed: Any) -> None:
    """The failure campaign and the robustness tests stop and restart the API server and PostgreSQL: clients
    reconnect with the kubeconfig and connection strings they already hold, and the cluster's objects stay."""
    bed: Testbed = private_bed(True)
    env = {**os.environ, "KUBECONFIG": str(bed.kubeconfig)}
    kubectl = str(assets.resolve(build=False).kubectl)

    def kubectl_ok(*args: str) -> bool:
        return subprocess.run([kubectl, *args], env=env, capture_output=True, timeout=30, check=False).returncode == 0

    assert kubectl_ok("create", "namespace", "outage")
    bed.stop_apiserver()
    assert not kubectl_ok("get", "namespace", "outage", "--request-timeout=3s")
    bed.start_apiserver()
    assert kubectl_ok("get", "namespace", "outage")  # etcd kept it
    odbc = bed.odbc()
    pyodbc.connect(odbc, timeout=5).close()
    bed.stop_postgres()
    with pytest.raises(pyodbc.Error):
        pyodbc.connect(odbc, timeout=5)
    bed.start_postgres()
    assert bed.odbc() == odbc and bed.healthy()
    pyodbc.connect(odbc, timeout=5).close()


def test_a_postgresql_outage_keeps_every_acknowledged_commit(private_bed: Any) -> None:
    """A row committed the instant before the stop is there after it (the bed runs synchronous_commit=off:
    an immediate stop lost such commits, and an outage test saw a schema lock vanish)."""
    bed: Testbed = private_bed(False)
    odbc = bed.odbc()
    conn = pyodbc.connect(odbc, autocommit=True, timeout=5)
    conn.execute("CREATE TABLE committed (n INT)")
    for n in range(20):
        conn.execute("INSERT INTO committed VALUES (?)", n)
    conn.close()
    bed.stop_postgres()
    bed.start_postgres()
    conn = pyodbc.connect(odbc, timeout=5)
    try:
        assert conn.execute("SELECT COUNT(*) FROM committed").fetchone()[0] == 20
    finally:
        conn.close()
