"""A throwaway PostgreSQL 15 cluster on loopback, from Debian's binaries, for pyodbc through psqlODBC.

`initdb` and `postgres` refuse to run as root, so as root they run as the `postgres` user that
Debian's package creates, with a data and socket directory that user owns. A cluster of our own, on a
free port, never clashes with the package's `15/main` cluster.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import procs

DATABASE = "uwm"
ROLE = "uwm"
PASSWORD = "uwm-testbed"  # a throwaway cluster on loopback; never a production credential


class PostgresError(RuntimeError):
    """PostgreSQL could not be set up or started; the message says why."""


@dataclass(frozen=True)
class PgServer:
    port: int
    data: Path
    log: Path
    bin_dir: Path

    def odbc(self, database: str = DATABASE) -> str:
        return odbc_connection_string(self.port, database)


def odbc_connection_string(port: int, database: str = DATABASE) -> str:
    return (f"DRIVER={{PostgreSQL Unicode}};SERVER=127.0.0.1;PORT={port};DATABASE={database};"
            f"UID={ROLE};PWD={PASSWORD};BoolsAsChar=0")


def find_bin_dir() -> Path:
    env = os.environ.get("UWM_PG_BIN")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "postgres").exists():
            return Path(c)
    raise PostgresError("PostgreSQL server binaries not found (install Debian's postgresql-15, or set UWM_PG_BIN)")


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresError("running as root but there is no `postgres` user to run PostgreSQL as") from exc
    return "postgres"


def _chown(path: Path, user: str | None) -> None:
    if user:
        shutil.chown(path, user, user)


def _check(cmd: list[str], user: str | None, what: str) -> None:
    res = subprocess.run(cmd, user=user, capture_output=True, text=True, check=False, cwd="/")
    if res.returncode != 0:
        raise PostgresError(f"{what} failed (exit {res.returncode}): {res.stderr.strip() or res.stdout.strip()}")


def max_connections() -> int:
    """400, or `UWM_TESTBED_PG_MAX_CONNECTIONS` (the many-plans bench needs a connection per database)."""
    raw = os.environ.get("UWM_TESTBED_PG_MAX_CONNECTIONS", "400")
    if not raw.isdigit() or not 10 <= int(raw) <= 10000:
        raise PostgresError(f"UWM_TESTBED_PG_MAX_CONNECTIONS must be a whole number from 10 to 10000, not {raw!r}")
    return int(raw)


FALLBACK_ROOT = Path("/var/tmp/uwm-testbed-pg")


def _reachable(path: Path, user: str | None) -> bool:
    return not user or subprocess.run(["test", "-w", str(path)], user=user, check=False, cwd="/").returncode == 0


def _home(base: Path, user: str | None) -> Path:
    """Where the cluster lives: `base`, or, when the user PostgreSQL runs as cannot reach it (a checkout
    under a private folder, such as `mktemp -d`'s 0700 one), a folder of its own under FALLBACK_ROOT that
    `base` then links to (so the next start finds the same cluster)."""
    if base.is_symlink():
        return base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    _chown(base, user)
    if _reachable(base, user):
        return base
    home = FALLBACK_ROOT / hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:16]
    FALLBACK_ROOT.mkdir(mode=0o755, exist_ok=True)
    home.mkdir(exist_ok=True)
    _chown(home, user)
    if any(base.iterdir()) or not _reachable(home, user):
        raise PostgresError(f"user {user!r} cannot reach {base}: every parent folder must be traversable (o+x)")
    base.rmdir()
    base.symlink_to(home, target_is_directory=True)
    return home


def start(base: Path, attempts: int = 3, port: int | None = None) -> PgServer:
    """Initialise (once) and start the cluster under ``base`` (on `port` if given: a restart, whose clients
    keep their connection strings); create the role and database."""
    bin_dir = find_bin_dir()
    user = _run_as()
    base = _home(base, user)
    data, run, log = base / "data", base / "run", base / "postgres.log"
    run.mkdir(exist_ok=True)
    _chown(run, user)
    if not (data / "PG_VERSION").exists():
        if data.exists():
            shutil.rmtree(data)
        _check([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                "--no-sync", "--no-instructions"], user, "initdb")
    log.touch()
    _chown(log, user)
    fixed = port
    for _ in range(1 if fixed else attempts):
        port = fixed or procs.free_port()
        opts = (f"-p {port} -k {run} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=on "
                f"-c full_page_writes=off -c max_connections={max_connections()} -c shared_buffers=64MB")
        res = subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "30",
                              "start"], user=user, capture_output=True, text=True, check=False, cwd="/")
        if res.returncode == 0:
            break
    else:
        raise PostgresError(f"postgres did not start; last lines of {log}:\n{procs.tail(log)}")
    assert port is not None
    server = PgServer(port, data, log, bin_dir)
    _bootstrap(server, run, user)
    return server


def _psql(server: PgServer, run: Path, user: str | None, sql: str, database: str = "postgres") -> str:
    res = subprocess.run(["psql", "-h", str(run), "-p", str(server.port), "-U", "postgres", "-d", database,
                          "-v", "ON_ERROR_STOP=1", "-tAc", sql], user=user, capture_output=True, text=True,
                         check=False, cwd="/")
    if res.returncode != 0:
        raise PostgresError(f"psql failed: {res.stderr.strip()}")
    return res.stdout.strip()


def _bootstrap(server: PgServer, run: Path, user: str | None) -> None:
    if _psql(server, run, user, f"SELECT 1 FROM pg_roles WHERE rolname='{ROLE}'") != "1":
        _psql(server, run, user, f"CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    if _psql(server, run, user, f"SELECT 1 FROM pg_database WHERE datname='{DATABASE}'") != "1":
        _psql(server, run, user, f"CREATE DATABASE {DATABASE} OWNER {ROLE}")


def running(data: Path) -> int | None:
    """PID of the postmaster of ``data`` if it is running."""
    pidfile = data / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if procs.alive(pid) else None


def stop(data: Path, bin_dir: Path | None = None, mode: str = "immediate") -> None:
    """`pg_ctl stop -m MODE`: `immediate` (the bed's `down`: at once, nothing to keep) or `fast` (clients
    disconnected at once, every acknowledged commit kept: an outage, not a loss of data)."""
    pid = running(data)
    if pid is None:
        return
    bin_dir = bin_dir or find_bin_dir()
    subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "-t", "20", "stop"],
                   user=_run_as(), capture_output=True, check=False, cwd="/")
    deadline = time.monotonic() + 10
    while procs.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if procs.alive(pid):
        procs.stop(pid)
