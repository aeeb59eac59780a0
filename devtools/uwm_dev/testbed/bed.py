"""The test bed as a whole: `up`, `down` and `status` over etcd, kube-apiserver and PostgreSQL.

Its state lives in one directory (default `.testbed/`): the PKI, etcd's and PostgreSQL's data, logs, a
kubeconfig, `state.json` (PIDs and ports) and `env` (shell exports). `up` on a running bed only checks
it; `up` after a crash stops the leftovers and starts afresh; `down` stops everything it started.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import assets as assets_mod
from . import controlplane, postgres, procs
from .certs import Pki, make_pki


def _say(msg: str) -> None:
    print(f"[testbed] {msg}", file=sys.stderr, flush=True)


@dataclass
class State:
    etcd_pid: int = 0
    etcd_port: int = 0
    apiserver_pid: int = 0
    apiserver_port: int = 0
    pg_port: int = 0
    pg_data: str = ""
    pg_bin: str = ""
    bin_dirs: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Testbed:
    """A test bed rooted at ``dir``. Paths are absolute so `.testbed/env` works from anywhere."""

    __test__ = False  # not a pytest test class, despite its name
    dir: Path

    @classmethod
    def at(cls, directory: str | Path = ".testbed") -> Testbed:
        return cls(Path(directory).resolve())

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.dir / "env"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def state(self) -> State | None:
        return State.load(self.state_file)

    def odbc(self, database: str = postgres.DATABASE) -> str:
        st = self.state()
        if st is None or not st.pg_port:
            raise RuntimeError(f"the test bed at {self.dir} is not up")
        return postgres.odbc_connection_string(st.pg_port, database)

    def pg_healthy(self, st: State | None = None) -> bool:
        st = st or self.state()
        return bool(st and st.pg_data and postgres.running(Path(st.pg_data)) is not None
                    and procs.port_open(st.pg_port))

    def kube_healthy(self, st: State | None = None) -> bool:
        st = st or self.state()
        pki = Pki(self.dir / "pki")
        return bool(st and st.apiserver_pid and pki.complete() and procs.alive(st.etcd_pid)
                    and procs.alive(st.apiserver_pid) and controlplane.readyz(st.apiserver_port, pki))

    def healthy(self) -> bool:
        st = self.state()
        return self.pg_healthy(st) and self.kube_healthy(st)

    def up(self, kube: bool = True, build: bool = True) -> State:
        """Start what is not running yet (PostgreSQL, then etcd and kube-apiserver unless ``kube`` is false)."""
        start = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        st = self.state() or State()
        changed = False
        try:
            if not self.pg_healthy(st):
                if st.pg_data:
                    postgres.stop(Path(st.pg_data), Path(st.pg_bin) if st.pg_bin else None)
                _say("starting PostgreSQL")
                pg = postgres.start(self.dir / "pg")
                st.pg_port, st.pg_data, st.pg_bin = pg.port, str(pg.data), str(pg.bin_dir)
                self._save(st)
                changed = True
            if kube and not self.kube_healthy(st):
                self._start_kube(st, build)
                changed = True
        except Exception:
            self.down(quiet=True)
            raise
        self._write_env(st)
        if changed:
            _say(f"up in {time.monotonic() - start:.1f} s: source {self.env_file}")
        else:
            _say(f"already up ({self.dir})")
        return st

    def _start_kube(self, st: State, build: bool) -> None:
        for pid in (st.apiserver_pid, st.etcd_pid):
            if pid:
                procs.stop(pid)
        found = assets_mod.resolve(build=build, progress=_say)
        st.bin_dirs = [str(d) for d in found.bin_dirs]
        pki = make_pki(self.dir / "pki")
        _say("starting etcd")
        etcd_data = self.dir / "etcd"
        shutil.rmtree(etcd_data, ignore_errors=True)  # the cluster is throwaway: never reuse old objects
        etcd = controlplane.start_etcd(found, etcd_data, self.logs)
        st.etcd_pid, st.etcd_port = etcd.pid, etcd.port
        self._save(st)
        _say("starting kube-apiserver")
        api = controlplane.start_apiserver(found, pki, etcd.port, self.dir / "apiserver", self.logs)
        st.apiserver_pid, st.apiserver_port = api.pid, api.port
        self._save(st)
        controlplane.write_kubeconfig(self.kubeconfig, st.apiserver_port, pki)
        try:
            self._apply_crds(found)
        except RuntimeError as exc:  # the bed is up; a broken CRD is the repository's problem, said loudly
            _say(f"WARNING: {exc}")

    # ------------------------------------------------------------ outages, for tests and the failure campaign
    def stop_apiserver(self) -> None:
        """Stop kube-apiserver (etcd keeps the cluster's objects): clients see the API server go away."""
        st = self._running()
        procs.stop(st.apiserver_pid)

    def start_apiserver(self) -> None:
        """Start kube-apiserver again on its old port, with its old certificates: clients reconnect as they are."""
        st = self._running()
        if procs.alive(st.apiserver_pid):
            return
        found = assets_mod.resolve(build=False)
        api = controlplane.start_apiserver(found, Pki(self.dir / "pki"), st.etcd_port, self.dir / "apiserver",
                                           self.logs, port=st.apiserver_port)
        st.apiserver_pid = api.pid
        self._save(st)

    def stop_postgres(self) -> None:
        """Stop PostgreSQL at once, as a crash would (`pg_ctl -m immediate`): every connection is lost, and
        every commit a client was told of is kept (the bed commits synchronously to the WAL; only fsync is
        off, which matters for a crash of the machine, not of the database)."""
        st = self._running()
        postgres.stop(Path(st.pg_data), Path(st.pg_bin) if st.pg_bin else None, mode="immediate")

    def start_postgres(self) -> None:
        """Start PostgreSQL again on its old port and data: connection strings stay valid."""
        st = self._running()
        if postgres.running(Path(st.pg_data)) is not None:
            return
        postgres.start(self.dir / "pg", port=st.pg_port)

    def _running(self) -> State:
        st = self.state()
        if st is None:
            raise RuntimeError(f"the test bed at {self.dir} is not up")
        return st

    def _save(self, st: State) -> None:
        self.state_file.write_text(json.dumps(asdict(st), indent=2))

    def _write_env(self, st: State) -> None:
        path = ":".join(st.bin_dirs)
        lines = [f"export KUBECONFIG={shlex.quote(str(self.kubeconfig))}"] if st.apiserver_port else []
        lines += [
            f"export UWM_TESTBED_ODBC={shlex.quote(postgres.odbc_connection_string(st.pg_port))}",
            f"export UWM_TESTBED_BIN={shlex.quote(path)}",
            f"export UWM_TESTBED_DIR={shlex.quote(str(self.dir))}",
            f'export PATH={shlex.quote(path)}:"$PATH"',
        ]
        self.env_file.write_text("\n".join(lines) + "\n")
        self.env_file.chmod(0o600)

    def _apply_crds(self, found: assets_mod.Assets) -> None:
        crds = Path(__file__).resolve().parents[3] / "crds"
        if not crds.is_dir():
            return
        res = subprocess.run([str(found.kubectl), "--kubeconfig", str(self.kubeconfig), "apply",
                              "--server-side", "-f", str(crds)], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"applying the CRDs in {crds} failed: {res.stderr.strip()}")
        subprocess.run([str(found.kubectl), "--kubeconfig", str(self.kubeconfig), "wait", "--for=condition=Established",
                        "--timeout=30s", "crd", "--all"], capture_output=True, check=False)

    def down(self, quiet: bool = False) -> None:
        st = self.state()
        if st is None:
            if not quiet:
                _say(f"nothing to stop at {self.dir}")
            return
        for pid in (st.apiserver_pid, st.etcd_pid):
            if pid:
                procs.stop(pid)
        if st.pg_data:
            postgres.stop(Path(st.pg_data), Path(st.pg_bin) if st.pg_bin else None)
        self.state_file.unlink(missing_ok=True)
        self.env_file.unlink(missing_ok=True)
        if not quiet:
            _say("down: etcd, kube-apiserver and PostgreSQL stopped")

    def describe(self) -> str:
        st = self.state()
        if st is None:
            return f"test bed at {self.dir}: down"
        parts = [
            f"test bed at {self.dir}: {'up' if self.healthy() else 'UNHEALTHY'}",
            f"  kube-apiserver  https://127.0.0.1:{st.apiserver_port} (pid {st.apiserver_pid}, "
            f"{'alive' if procs.alive(st.apiserver_pid) else 'dead'})",
            f"  etcd            http://127.0.0.1:{st.etcd_port} (pid {st.etcd_pid}, "
            f"{'alive' if procs.alive(st.etcd_pid) else 'dead'})",
            f"  postgresql      127.0.0.1:{st.pg_port} "
            f"({'running' if postgres.running(Path(st.pg_data)) else 'stopped'})",
            f"  env             {self.env_file}",
        ]
        return "\n".join(parts)
