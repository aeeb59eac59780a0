"""etcd and kube-apiserver on loopback, started with the flags envtest uses, and a kubeconfig for them."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import procs
from .assets import Assets
from .certs import Pki


class ControlPlaneError(RuntimeError):
    """A control-plane process did not come up; the message carries its log's last lines."""


@dataclass
class Endpoint:
    pid: int
    port: int
    log: Path


def start_etcd(assets: Assets, data: Path, logs: Path, attempts: int = 3) -> Endpoint:
    log = logs / "etcd.log"
    for _ in range(attempts):
        client, peer = procs.free_port(), procs.free_port()
        cmd = [str(assets.etcd), "--name=testbed", f"--data-dir={data}",
               f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
               f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
               f"--initial-cluster=testbed=http://127.0.0.1:{peer}", "--unsafe-no-fsync", "--log-level=warn",
               "--quota-backend-bytes=4294967296"]
        pid = procs.start(cmd, log)
        if _wait(lambda c=client: _http_ok(f"http://127.0.0.1:{c}/health"), pid, 30):
            return Endpoint(pid, client, log)
        procs.stop(pid)  # most likely a port was taken between choosing and binding: try other ports
    raise ControlPlaneError(f"etcd did not become healthy; last lines of {log}:\n{procs.tail(log)}")


def start_apiserver(assets: Assets, pki: Pki, etcd_port: int, work: Path, logs: Path, attempts: int = 3,
                    port: int | None = None) -> Endpoint:
    """Start kube-apiserver on a free port, or on `port` (a restart: clients keep their kubeconfig)."""
    log = logs / "kube-apiserver.log"
    fixed = port
    for _ in range(1 if fixed else attempts):
        port = fixed or procs.free_port()
        cmd = [str(assets.kube_apiserver), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
               f"--cert-dir={work}", f"--secure-port={port}", "--bind-address=127.0.0.1",
               "--advertise-address=127.0.0.1", "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
               "--disable-admission-plugins=ServiceAccount", "--authorization-mode=RBAC",
               f"--service-account-issuer=https://127.0.0.1:{port}/",
               f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
               f"--client-ca-file={pki.ca_cert}", f"--tls-cert-file={pki.serving_cert}",
               f"--tls-private-key-file={pki.serving_key}", "--endpoint-reconciler-type=none",
               "--storage-media-type=application/json", "--v=0"]
        pid = procs.start(cmd, log)
        if _wait(lambda p=port: readyz(p, pki), pid, 90):
            return Endpoint(pid, port, log)
        procs.stop(pid)
    raise ControlPlaneError(f"kube-apiserver did not become ready; last lines of {log}:\n{procs.tail(log)}")


def _wait(check: object, pid: int, timeout: float) -> bool:
    assert callable(check)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            return False
        if check():
            return True
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    return False


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _client_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return ctx


def readyz(port: int, pki: Pki) -> bool:
    return _http_ok(f"https://127.0.0.1:{port}/readyz", _client_context(pki))


def write_kubeconfig(path: Path, port: int, pki: Pki) -> None:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters:\n- name: testbed\n  cluster:\n"
        f"    server: https://127.0.0.1:{port}\n    certificate-authority: {pki.ca_cert}\n"
        "users:\n- name: admin\n  user:\n"
        f"    client-certificate: {pki.admin_cert}\n    client-key: {pki.admin_key}\n"
        "contexts:\n- name: testbed\n  context:\n    cluster: testbed\n    user: admin\n    namespace: default\n"
        "current-context: testbed\n"
    )
    path.chmod(0o600)
