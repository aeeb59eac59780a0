"""`kubectl uplan report`: a support bundle of one plan, as a .tar.gz, with nothing secret in it.

It holds the plan (YAML) and what `kubectl uplan status` says of it, its Events, the Secrets it names with
their values replaced by their size (never a value), the operator's Leases and pods, and each operator
pod's log of the last `--since` (every line through the operator's redaction, as a second net: the
operator writes no secret into its log). What could not be collected is listed in `errors.txt`.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ..core.observations import redact
from .kubectl import Kubectl, KubectlError
from .show import render

OPERATOR_SELECTOR = "app.kubernetes.io/name=uwm-upgrade-operator"
LOG_SECONDS = 60.0


def _secret_names(spec: dict[str, Any]) -> list[str]:
    refs = [spec.get("agentSecretRef") or {}]
    refs += [d.get("connectionSecretRef") or {} for d in spec.get("databases") or []]
    tls = spec.get("tls") or {}
    refs += [tls.get("caBundleSecretRef") or {}, tls.get("clientCertificateSecretRef") or {}]
    for server in (*(spec.get("managementServers") or []), *(spec.get("personalizationServers") or [])):
        refs.append(((server.get("replacement") or {}).get("license")) or {})
    return sorted({r["name"] for r in refs if r.get("name")})


def redacted_secret(secret: dict[str, Any]) -> dict[str, Any]:
    """The Secret with every value replaced by its size: which keys exist, never what they hold."""
    meta = {k: v for k, v in (secret.get("metadata") or {}).items() if k in ("name", "namespace", "labels",
                                                                          "creationTimestamp", "resourceVersion")}
    data = {key: f"<redacted: {len(value) * 3 // 4} bytes>" for key, value in (secret.get("data") or {}).items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": secret.get("type"), "data": data}


class Bundle:
    """The files of the bundle, kept in memory until written (each text passes the redaction)."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.errors: list[str] = []

    def add(self, name: str, text: str) -> None:
        self.files[name] = "\n".join(redact(line) for line in text.splitlines()) + "\n"

    def collect(self, name: str, fetch: Callable[[], str]) -> None:
        try:
            self.add(name, fetch())
        except KubectlError as exc:
            self.errors.append(f"{name}: {redact(str(exc))}")

    def write(self, target: Path) -> Path:
        if self.errors:
            self.add("errors.txt", "\n".join(self.errors))
        with tarfile.open(target, "w:gz") as tar:
            for name, text in sorted(self.files.items()):
                data = text.encode()
                info = tarfile.TarInfo(f"{target.name.removesuffix('.tar.gz')}/{name}")
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(data))
        return target


def report(kubectl: Kubectl, name: str, target: Path, operator_namespace: str | None, since: str) -> Path:
    plan = kubectl.plan(name)
    namespace = plan["metadata"]["namespace"]
    bundle = Bundle()
    bundle.add("plan.yaml", kubectl.run("get", "upgradeplans.upgrade.uwm.io", name, "-o", "yaml"))
    bundle.add("status.txt", render(plan, every_hop=True))
    bundle.collect("events.txt", lambda: kubectl.run(
        "get", "events", "--field-selector", f"involvedObject.name={name}", "--sort-by=.metadata.creationTimestamp"))
    secrets = []
    for secret in _secret_names(plan.get("spec") or {}):
        try:
            secrets.append(redacted_secret(kubectl.json("get", "secret", secret)))
        except KubectlError as exc:
            bundle.errors.append(f"secret {secret}: {redact(str(exc))}")
    bundle.add("secrets.json", json.dumps(secrets, indent=2))
    where = Kubectl(operator_namespace or namespace, kubectl.context, kubectl.kubeconfig, kubectl.binary)
    bundle.collect("leases.txt", lambda: where.run("get", "leases", "-o", "wide"))
    try:
        pods = where.json("get", "pods", "-l", OPERATOR_SELECTOR).get("items", [])
    except KubectlError as exc:
        pods = []
        bundle.errors.append(f"operator pods: {redact(str(exc))}")
    bundle.add("operator-pods.txt", "\n".join(p["metadata"]["name"] for p in pods) or "no operator pod found with "
               f"{OPERATOR_SELECTOR} in namespace {where.namespace} (--operator-namespace)")
    for pod in pods:
        bundle.collect(f"logs/{pod['metadata']['name']}.log", partial(
            where.run, "logs", pod["metadata"]["name"], "--all-containers", f"--since={since}", "--tail=20000",
            timeout=LOG_SECONDS))
    return bundle.write(target)
