"""Find or build the control-plane binaries: kube-apiserver, kubectl, etcd and helm.

There is no container engine and no download site on the machines this project runs on, only the Go
module proxy. So the binaries are built from Go modules once, version-stamped, and cached under the
user's cache directory (outside the repository), then reused. The envtest conventions are honoured:
``KUBEBUILDER_ASSETS`` (a directory) or ``TEST_ASSET_KUBE_APISERVER`` / ``TEST_ASSET_ETCD`` /
``TEST_ASSET_KUBECTL`` point at binaries the user already has, and then nothing is built for them.

``k8s.io/kubernetes`` requires its ~30 staging modules at ``v0.0.0`` and its own replace directives do
not apply to a module that depends on it, so the generated go.mod replaces each staging module by its
published twin ``v0.X.Y``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.19.5"

# The replace block of k8s.io/kubernetes's own go.mod at KUBERNETES_VERSION (all "./staging/src/..." entries).
STAGING_MODULES = (
    "api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime", "client-go",
    "cloud-provider", "cluster-bootstrap", "code-generator", "component-base", "component-helpers",
    "controller-manager", "cri-api", "cri-client", "csi-translation-lib", "dynamic-resource-allocation",
    "endpointslice", "externaljwt", "kms", "kube-aggregator", "kube-controller-manager", "kube-proxy",
    "kube-scheduler", "kubectl", "kubelet", "metrics", "mount-utils", "pod-security-admission",
    "sample-apiserver", "sample-cli-plugin", "sample-controller",
)

BINARIES = ("kube-apiserver", "kubectl", "etcd", "helm")
ENV_BY_BINARY = {
    "kube-apiserver": "TEST_ASSET_KUBE_APISERVER",
    "etcd": "TEST_ASSET_ETCD",
    "kubectl": "TEST_ASSET_KUBECTL",
}

Progress = Callable[[str], None]


class AssetError(RuntimeError):
    """A binary could not be found or built; the message says which and why."""


@dataclass(frozen=True)
class Assets:
    """Absolute paths of the four binaries the test bed runs."""

    kube_apiserver: Path
    kubectl: Path
    etcd: Path
    helm: Path

    @property
    def bin_dirs(self) -> list[Path]:
        dirs: list[Path] = []
        for p in (self.kubectl, self.helm, self.kube_apiserver, self.etcd):
            if p.parent not in dirs:
                dirs.append(p.parent)
        return dirs

    def describe(self, env: Mapping[str, str] | None = None) -> str:
        """One line for people: the version of each binary built here, where the user's binaries come from.

        e.g. ``kube-apiserver v1.35.4, etcd v3.6.16, helm v3.19.5 in ~/.cache/uwm-upgrade/.../bin`` (kubectl
        is built with kube-apiserver and not named). The user's own binaries are named with their folder."""
        built = cached_bin_dir(env)
        versions = {"kube-apiserver": KUBERNETES_VERSION, "etcd": ETCD_VERSION, "helm": HELM_VERSION}
        paths = {"kube-apiserver": self.kube_apiserver, "kubectl": self.kubectl, "etcd": self.etcd, "helm": self.helm}
        ours = [f"{name} {version}" for name, version in versions.items() if paths[name].parent == built]
        theirs: dict[Path, list[str]] = {}
        for name, path in paths.items():
            if path.parent != built:
                theirs.setdefault(path.parent, []).append(name)
        parts = [f"{', '.join(ours)} in {_home_relative(built)}"] if ours else []
        parts += [f"{', '.join(names)} from {_home_relative(folder)}" for folder, names in theirs.items()]
        return "; ".join(parts)


def _home_relative(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("UWM_UPGRADE_CACHE"):
        return Path(env["UWM_UPGRADE_CACHE"])
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "uwm-upgrade"


def cached_bin_dir(env: Mapping[str, str] | None = None) -> Path:
    return cache_root(env) / f"k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-helm-{HELM_VERSION}" / "bin"


def _print(msg: str) -> None:
    print(f"[testbed] {msg}", file=sys.stderr, flush=True)


def resolve(env: Mapping[str, str] | None = None, build: bool = True, progress: Progress = _print) -> Assets:
    """Return the binaries to use: the user's (envtest variables), else the cache, building what is missing."""
    env = os.environ if env is None else env
    found: dict[str, Path] = {}
    user_dir = env.get("KUBEBUILDER_ASSETS")
    for name in BINARIES:
        var = ENV_BY_BINARY.get(name)
        if var and env.get(var):
            found[name] = _must_exist(Path(env[var]), var)
        elif user_dir and (Path(user_dir) / name).exists():
            found[name] = Path(user_dir) / name
    if user_dir and not all(n in found for n in ENV_BY_BINARY):
        missing = [n for n in ENV_BY_BINARY if n not in found]
        raise AssetError(f"KUBEBUILDER_ASSETS={user_dir} lacks {', '.join(missing)}")
    bin_dir = cached_bin_dir(env)
    missing = [n for n in BINARIES if n not in found and not (bin_dir / n).exists()]
    if missing:
        if not build:
            raise AssetError(f"not built yet: {', '.join(missing)} (run `uwm-dev testbed build`)")
        build_binaries(missing, bin_dir, progress)
    paths = {n: found.get(n, bin_dir / n) for n in BINARIES}
    return Assets(paths["kube-apiserver"], paths["kubectl"], paths["etcd"], paths["helm"])


def _must_exist(p: Path, var: str) -> Path:
    if not p.is_file() or not os.access(p, os.X_OK):
        raise AssetError(f"{var}={p} is not an executable file")
    return p


def _go_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    env["CGO_ENABLED"] = "0"
    env.setdefault("GOPATH", str(Path.home() / "go"))
    env["GOWORK"] = "off"
    env.pop("GOOS", None)
    env.pop("GOARCH", None)
    env["PWD"] = str(work)
    return env


def _run(cmd: list[str], work: Path, progress: Progress, what: str) -> None:
    """Run a go command, printing a heartbeat every 30 s so a long build never looks stuck."""
    log = work / "build.log"
    start = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=work, env=_go_env(work), stdout=out, stderr=subprocess.STDOUT)
        while True:
            try:
                rc = proc.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                progress(f"  {what}: still working ({time.monotonic() - start:.0f} s)")
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise AssetError(f"{what} failed (exit {rc}); last lines of {log}:\n{tail}")
    progress(f"  {what}: done in {time.monotonic() - start:.0f} s")


def _ldflags_kube() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitCommit=0000000000000000000000000000000000000000",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={now}",
        ]
    return "-s -w " + " ".join(flags)


def _kube_gomod() -> str:
    minor = KUBERNETES_VERSION.lstrip("v").split(".", 1)[1]
    replaces = "\n".join(f"\tk8s.io/{m} => k8s.io/{m} v0.{minor}" for m in STAGING_MODULES)
    return (
        "module uwm-upgrade/kube-build\n\ngo 1.25.0\n\n"
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\nreplace (\n{replaces}\n)\n"
    )


TOOLS_GO = "//go:build tools\n\npackage tools\n\nimport (\n{imports})\n"


def _prepare(work: Path, gomod: str, imports: list[str]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(gomod)
    body = "".join(f'\t_ "{imp}"\n' for imp in imports)
    (work / "tools.go").write_text(TOOLS_GO.format(imports=body))


def build_binaries(names: list[str], bin_dir: Path, progress: Progress = _print) -> None:
    """Build the named binaries into ``bin_dir`` (atomically: a half-written binary is never left)."""
    if shutil.which("go") is None:
        raise AssetError("the Go toolchain is not on PATH; it is needed once to build the control plane")
    bin_dir.mkdir(parents=True, exist_ok=True)
    src = bin_dir.parent / "src"
    progress(f"building {', '.join(names)} from the Go module proxy into {bin_dir} (first time only; minutes)")
    kube = [n for n in names if n in ("kube-apiserver", "kubectl")]
    if kube:
        work = src / "kubernetes"
        pkgs = {"kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver", "kubectl": "k8s.io/kubernetes/cmd/kubectl"}
        _prepare(work, _kube_gomod(), [pkgs[n] for n in kube])
        _run(["go", "mod", "tidy"], work, progress, f"resolve k8s.io/kubernetes {KUBERNETES_VERSION}")
        for n in kube:
            _build_one(work, pkgs[n], n, bin_dir, _ldflags_kube(), progress)
    if "etcd" in names:
        work = src / "etcd"
        gomod = f"module uwm-upgrade/etcd-build\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
        _prepare(work, gomod, ["go.etcd.io/etcd/server/v3"])
        _run(["go", "mod", "tidy"], work, progress, f"resolve etcd {ETCD_VERSION}")
        ld = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={ETCD_VERSION}"
        _build_one(work, "go.etcd.io/etcd/server/v3", "etcd", bin_dir, ld, progress)
    if "helm" in names:
        work = src / "helm"
        _prepare(work, f"module uwm-upgrade/helm-build\n\ngo 1.25.0\n\nrequire helm.sh/helm/v3 {HELM_VERSION}\n",
                 ["helm.sh/helm/v3/cmd/helm"])
        _run(["go", "mod", "tidy"], work, progress, f"resolve helm {HELM_VERSION}")
        ld = f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"
        _build_one(work, "helm.sh/helm/v3/cmd/helm", "helm", bin_dir, ld, progress)


def _build_one(work: Path, pkg: str, name: str, bin_dir: Path, ldflags: str, progress: Progress) -> None:
    tmp = bin_dir / f".{name}.partial"
    _run(["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp), pkg], work, progress, f"build {name}")
    tmp.replace(bin_dir / name)
