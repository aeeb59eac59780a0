"""The test bed is real: a version-stamped API server, RBAC, PostgreSQL through pyodbc, clean shutdown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pyodbc
import pytest

from uwm_upgrade.testbed import assets, controlplane, procs
from uwm_upgrade.testbed.bed import State, Testbed

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
    exe = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "uwm-upgrade"
    if not exe.exists():
        exe = REPO / ".venv" / "bin" / "uwm-upgrade"
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
