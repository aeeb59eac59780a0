"""The plugin's one way to the cluster: `kubectl`, with the user's context, kubeconfig and namespace, every
call bounded by a timeout. Errors are `KubectlError`s with kubectl's own message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

CALL_SECONDS = 60.0


class KubectlError(RuntimeError):
    """kubectl failed, or could not be run; the message is kubectl's (or why it could not run)."""


@dataclass(frozen=True)
class Kubectl:
    """`kubectl` with the global flags the user gave the plugin (`--context`, `--kubeconfig`)."""

    namespace: str | None = None
    context: str | None = None
    kubeconfig: str | None = None
    binary: str = field(default_factory=lambda: os.environ.get("KUBECTL") or shutil.which("kubectl") or "kubectl")

    def _globals(self) -> list[str]:
        found = []
        if self.context:
            found += ["--context", self.context]
        if self.kubeconfig:
            found += ["--kubeconfig", self.kubeconfig]
        return found

    def _ns(self) -> list[str]:
        return ["-n", self.namespace] if self.namespace else []

    def run(self, *args: str, namespaced: bool = True, stdin: str | None = None,
            timeout: float = CALL_SECONDS) -> str:
        cmd = [self.binary, *self._globals(), *(self._ns() if namespaced else []), *args]
        try:
            res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise KubectlError(f"kubectl not found ({self.binary}): put it on PATH or set KUBECTL") from None
        except subprocess.TimeoutExpired:
            raise KubectlError(f"kubectl {' '.join(args[:3])} gave no answer within {timeout:.0f} s") from None
        if res.returncode != 0:
            raise KubectlError(res.stderr.strip() or f"kubectl {' '.join(args[:3])} exited {res.returncode}")
        return res.stdout

    def json(self, *args: str, namespaced: bool = True) -> dict[str, Any]:
        out = json.loads(self.run(*args, "-o", "json", namespaced=namespaced))
        if not isinstance(out, dict):
            raise KubectlError("kubectl answered something other than an object")
        return out

    def plan(self, name: str) -> dict[str, Any]:
        return self.json("get", "upgradeplans.upgrade.uwm.io", name)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.run("patch", "upgradeplans.upgrade.uwm.io", name, "--type=merge", "-p", json.dumps({"spec": spec}))
