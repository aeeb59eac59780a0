"""A local UWM estate on the test bed: fresh databases, a simulator fleet and the operator, as processes.

`make demo` and the end-to-end tests both use it, so what the demo shows is what the tests check: the
real `uwm-sim fleet` and `uwm-upgrade run` commands, talking to the test bed's real API server and
PostgreSQL. Processes run in their own sessions with their output in log files, and are stopped with
their whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import procs
from .bed import Testbed

TOKEN_BYTES = 16


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def create_databases(bed: Testbed, names: list[str]) -> dict[str, str]:
    """Fresh, empty databases (dropped first if they exist); returns their ODBC connection strings."""
    import pyodbc

    conn = pyodbc.connect(bed.odbc(), autocommit=True)
    try:
        for name in names:
            if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", name):
                raise ValueError(f"not a database name: {name!r}")
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
    finally:
        conn.close()
    return {name: bed.odbc(name) for name in names}


def drop_databases(bed: Testbed, names: list[str]) -> None:
    """Drop databases made by `create_databases` (a test's estate, once it is over)."""
    import pyodbc

    conn = pyodbc.connect(bed.odbc(), autocommit=True)
    try:
        for name in names:
            if re.match(r"^[a-z_][a-z0-9_]{0,62}$", name):
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        conn.close()


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup runs."""
        self.stop(signal.SIGKILL, timeout=5.0)


def _spawn(name: str, cmd: list[str], env: dict[str, str], log: Path) -> Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("ab")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    out.close()
    return Process(name, proc, log)


RESPAWN_SECONDS = 1.0  # a fleet that exited while starting is started again this often (Fleet.restart)


class FleetExitedError(RuntimeError):
    """The simulator fleet exited before it was ready."""


@dataclass
class Fleet:
    process: Process
    endpoints: dict[str, Any]
    token: str
    state_odbc: str
    odbc: dict[str, str] = field(default_factory=dict)
    fleet_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)  # the token and connection strings
    databases: list[str] = field(default_factory=list)  # the PostgreSQL databases made for it

    def url(self, server: str) -> str:
        return str(self.endpoints["servers"][server]["url"])

    def restart(self, *, down_seconds: float = 0.0, kill: bool = True, timeout: float = 120.0) -> None:
        """Stop the fleet process (SIGKILL: a crash; else SIGTERM) and start it again as it was: same
        environment, same databases (kept, not reset) and the same ports, so every URL stays valid.

        A fleet that exits while starting (its state database down: the campaign may restart PostgreSQL
        and the fleet at once) is started again, every `RESPAWN_SECONDS`, until `timeout`, as a supervisor
        (a kubelet, systemd) restarts a crashed service; before, the first exit left the estate down for
        the rest of the run."""
        if self.fleet_file is None:
            raise RuntimeError("this fleet was not started by start_fleet(); it cannot be restarted")
        if kill:
            self.process.kill()
        else:
            self.process.stop()
        config = yaml.safe_load(self.fleet_file.read_text())
        lbs = self.endpoints.get("loadBalancers", {})
        for server in config["servers"]:
            server["port"] = _port(self.url(server["name"]))
        for lb in config.get("loadBalancers", []):
            lb["port"] = _port(str(lbs[lb["name"]]))
        pinned = self.process.log.parent / f"{self.fleet_file.stem}.ports.yaml"
        pinned.write_text(yaml.safe_dump(config, sort_keys=False))
        time.sleep(down_seconds)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.process, self.endpoints = _spawn_fleet([_bin("uwm-sim"), "fleet", str(pinned), "--json"],
                                                            self.env, self.process.log,
                                                            max(deadline - time.monotonic(), 1.0))
                return
            except FleetExitedError:
                if time.monotonic() + RESPAWN_SECONDS >= deadline:
                    raise
                time.sleep(RESPAWN_SECONDS)


def _port(url: str) -> int:
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"no port in {url}")
    return port


def _spawn_fleet(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[Process, dict[str, Any]]:
    """Start `uwm-sim fleet ... --json` and wait for its "ready" line; returns the process and endpoints."""
    offset = log.stat().st_size if log.exists() else 0  # the log is appended to: read only this run's lines
    process = _spawn("fleet", cmd, env, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with log.open("rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").splitlines()
        for line in lines:
            if line.startswith("{") and '"ready"' in line:
                return process, json.loads(line)
        if not process.alive():
            raise FleetExitedError(f"the simulator fleet exited; last lines of {log}:\n{procs.tail(log)}")
        time.sleep(0.1)
    process.stop()
    raise RuntimeError(f"the simulator fleet was not ready in {timeout:.0f} s; see {log}")


def start_fleet(bed: Testbed, fleet_file: Path, work: Path, *, settle: float = 1.0, install: float = 1.0,
                migration_step: float = 0.5, caught_up: float = 0.5, prefix: str | None = None,
                timeout: float = 120.0) -> Fleet:
    """Fresh databases for the fleet's state and each UWM database, then `uwm-sim fleet --json`."""
    config = yaml.safe_load(fleet_file.read_text())
    prefix = prefix or f"e{uuid.uuid4().hex[:8]}"
    db_names = {d["name"]: f"{prefix}_{d['name'].replace('-', '_')}" for d in config["databases"]}
    odbc = create_databases(bed, [*db_names.values(), f"{prefix}_state"])
    token = uuid.uuid4().hex
    env = {**os.environ, "UWM_SIM_TOKEN": token, "UWM_SIM_STATE_ODBC": odbc[f"{prefix}_state"],
           "UWM_SIM_SETTLE_SECONDS": str(settle), "UWM_SIM_INSTALL_SECONDS": str(install),
           "UWM_SIM_MIGRATION_STEP_SECONDS": str(migration_step), "UWM_SIM_CAUGHT_UP_SECONDS": str(caught_up)}
    for name, db in db_names.items():
        env[f"UWM_SIM_{name.split('-')[0].upper()}_ODBC"] = odbc[db]
    cmd = [_bin("uwm-sim"), "fleet", str(fleet_file), "--json", "--ephemeral-ports", "--reset"]
    process, endpoints = _spawn_fleet(cmd, env, work / "fleet.log", timeout)
    return Fleet(process, endpoints, token, odbc[f"{prefix}_state"], {name: odbc[db] for name, db in db_names.items()},
                 fleet_file, env, [*db_names.values(), f"{prefix}_state"])


@dataclass
class Operator:
    process: Process
    metrics_port: int
    liveness_port: int


def start_operator(bed: Testbed, namespaces: list[str], work: Path, *, extra: list[str] | None = None,
                   log_name: str = "operator.log", insecure_http: bool = True, standalone: bool = True,
                   hostname: str | None = None, command: list[str] | None = None,
                   env: dict[str, str] | None = None) -> Operator:
    """`uwm-upgrade run` on `namespaces` against the test bed's API server.

    The simulators answer plain http on loopback, so the operator runs with `--allow-insecure-http` unless
    `insecure_http` is False (a test of that refusal). `standalone=False`: one replica among others,
    electing a leader by the Lease of each namespace (pass `--lease-seconds` in `extra` to shorten
    takeovers); `hostname` (HOSTNAME, as a pod's name) starts its Lease identity, so a test can tell the
    replicas apart. `command` runs in place of `uwm-upgrade` (the referee's tests run a broken one)."""
    environment = {**os.environ, **(env or {}), "KUBECONFIG": str(bed.kubeconfig),
                   **({"HOSTNAME": hostname} if hostname else {})}
    log = work / log_name
    for _ in range(PORT_ATTEMPTS):
        metrics_port, liveness_port = procs.free_port(), procs.free_port()
        cmd = [*(command or [_bin("uwm-upgrade")]), "run", *(["--standalone"] if standalone else []), "--verbose",
               "--metrics-port", str(metrics_port), "--liveness-port", str(liveness_port),
               *[a for ns in namespaces for a in ("-n", ns)], *(["--allow-insecure-http"] if insecure_http else []),
               *(extra or [])]
        offset = log.stat().st_size if log.exists() else 0
        operator = Operator(_spawn("operator", cmd, environment, log), metrics_port, liveness_port)
        if not _lost_its_port(operator, log, offset):
            return operator
    return operator


PORT_ATTEMPTS = 3
OPERATOR_LISTENS_WITHIN = 30.0


def _lost_its_port(operator: Operator, log: Path, offset: int) -> bool:
    """Wait until the operator serves its metrics and liveness ports, or exits; True when it exited because a port it
    was given was taken between choosing it and binding it (another test's process got there first): the
    caller starts it again on other ports. Any other exit is the test's to see."""
    deadline = time.monotonic() + OPERATOR_LISTENS_WITHIN
    while time.monotonic() < deadline:
        pid = operator.process.proc.pid
        if procs.listens(pid, operator.metrics_port) and procs.listens(pid, operator.liveness_port):
            return False
        if not operator.process.alive():
            with log.open("rb") as fh:
                fh.seek(offset)
                return b"address already in use" in fh.read().lower()
        time.sleep(0.05)
    return False


def secrets_file(plan_file: Path) -> Path:
    """Where an example plan's Secrets are: `secrets.yaml` beside it (kept apart, so that `kubectl delete -f`
    of the plan's file leaves them for the plan's teardown). The tests' own plans keep theirs inline."""
    return plan_file.parent / "secrets.yaml"


def plan_documents(plan_file: Path, fleet: Fleet, namespace: str, **spec_overrides: Any) -> list[dict[str, Any]]:
    """The example's Secrets (its own file, or in the plan's file) and plan, pointed at this fleet (URLs,
    connection strings, token); the Secrets first."""
    files = [f for f in (secrets_file(plan_file), plan_file) if f.exists()]
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    for doc in docs:
        doc.setdefault("metadata", {})["namespace"] = namespace
        if doc["kind"] == "Secret" and "token" in doc.get("stringData", {}):
            doc["stringData"]["token"] = fleet.token
        elif doc["kind"] == "Secret" and any(k in fleet.odbc for k in doc.get("stringData", {})):
            doc["stringData"] = {k: fleet.odbc[k] for k in doc["stringData"] if k in fleet.odbc}
        elif doc["kind"] == "UpgradePlan":
            spec = doc["spec"]
            for key in ("managementServers", "personalizationServers"):
                for server in spec.get(key, []):
                    server["url"] = fleet.url(server["name"])
                    replacement = server.get("replacement")  # strategy CleanInstall: the fleet's new server
                    new_name = (replacement or {}).get("name") or f"{server['name']}-new"
                    if replacement is not None and new_name in fleet.endpoints["servers"]:
                        replacement["url"] = fleet.url(new_name)
            spec.update(spec_overrides)
    return docs


def kubectl(bed: Testbed, *args: str, input: str | None = None, check: bool = True) -> str:
    from .assets import resolve

    res = subprocess.run([str(resolve(build=False).kubectl), "--kubeconfig", str(bed.kubeconfig), *args],
                         input=input, capture_output=True, text=True, check=False, timeout=60)
    if check and res.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def apply(bed: Testbed, docs: list[dict[str, Any]]) -> None:
    kubectl(bed, "apply", "-f", "-", input=yaml.safe_dump_all(docs))


def get_plan(bed: Testbed, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl(bed, "get", "upgradeplan", name, "-n", namespace, "-o", "json")))
