"""Small Go tools the tests judge the project with, built once from the Go module proxy and cached.

- `kstatus`: sigs.k8s.io/cli-utils' kstatus (what Flux health checks, `helm --wait` and kpt read), wrapped
  in a tiny program of ours: it reads objects as JSON (one, a list, or a `kind: List`) on stdin and prints,
  per object, one JSON line `{"name", "status", "message"}` with kstatus's verdict (InProgress, Current,
  Failed, ...). So the tests ask the real library, never a copy of its rules.
- `kubeconform`: validates the chart's rendered manifests against JSON schemas (the tests make those from
  the test bed's own API server, since nothing can be downloaded here).

Like the control plane's binaries (`testbed/assets.py`), they live in the user's cache (`~/.cache/
uwm-upgrade/tools/<name>-<version>/bin`), outside the repository: only the few lines of our own program
are in it, never the fetched modules. `uwm-dev tools build` (`make tools`) builds what is missing.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .testbed.assets import AssetError, Progress, _prepare, _print, _run, cache_root

KSTATUS_MAIN = """// kstatus's verdict on Kubernetes objects read as JSON on stdin (uwm-upgrade-operator's tests).
package main

import (
    "encoding/json"
    "fmt"
    "io"
    "os"

    "k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
    "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
    data, err := io.ReadAll(os.Stdin)
    if err != nil {
        fmt.Fprintln(os.Stderr, "reading stdin:", err)
        os.Exit(2)
    }
    // The API machinery's own decoder: whole numbers stay int64, as kstatus expects of objects read from it.
    doc := &unstructured.Unstructured{}
    if err := doc.UnmarshalJSON(data); err != nil {
        fmt.Fprintln(os.Stderr, "stdin is not one Kubernetes object or list:", err)
        os.Exit(2)
    }
    objects := []*unstructured.Unstructured{doc}
    if doc.IsList() {
        list, err := doc.ToList()
        if err != nil {
            fmt.Fprintln(os.Stderr, "a list of objects was expected:", err)
            os.Exit(2)
        }
        objects = nil
        for i := range list.Items {
            objects = append(objects, &list.Items[i])
        }
    }
    out := json.NewEncoder(os.Stdout)
    for _, u := range objects {
        res, err := status.Compute(u)
        if err != nil {
            fmt.Fprintln(os.Stderr, "kstatus:", u.GetName(), err)
            os.Exit(1)
        }
        _ = out.Encode(map[string]string{"name": u.GetName(), "status": res.Status.String(), "message": res.Message})
    }
}
"""


@dataclass(frozen=True)
class GoTool:
    """One tool: the module it comes from, at which version, and the package to build (None: our own
    `main.go`, `source`, which imports the module)."""

    name: str
    module: str
    version: str
    package: str | None = None
    source: str | None = None


TOOLS: Mapping[str, GoTool] = {
    "kstatus": GoTool("kstatus", "sigs.k8s.io/cli-utils", "v0.37.2", source=KSTATUS_MAIN),
    "kubeconform": GoTool("kubeconform", "github.com/yannh/kubeconform", "v0.7.0",
                          package="github.com/yannh/kubeconform/cmd/kubeconform"),
}


def tool_dir(tool: GoTool, env: Mapping[str, str] | None = None) -> Path:
    """Where the tool is cached: by module version, and by a digest of our own source when it has one."""
    own = f"-{hashlib.sha256(tool.source.encode()).hexdigest()[:8]}" if tool.source else ""
    return cache_root(env) / "tools" / f"{tool.name}-{tool.version}{own}"


def find(name: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The cached binary of tool `name`, or None when it is not built yet."""
    path = tool_dir(TOOLS[name], env) / "bin" / name
    return path if path.is_file() else None


def build(name: str, env: Mapping[str, str] | None = None, progress: Progress = _print) -> Path:
    """The tool's binary, built first if it is not in the cache (atomically: never half a binary)."""
    tool = TOOLS[name]
    found = find(name, env)
    if found is not None:
        return found
    if shutil.which("go") is None:
        raise AssetError(f"the Go toolchain is not on PATH; it is needed once to build {name}")
    home = tool_dir(tool, env)
    work, bin_dir = home / "src", home / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    progress(f"building {name} ({tool.module} {tool.version}) from the Go module proxy into {bin_dir}")
    gomod = f"module uwm-upgrade/{name}-build\n\ngo 1.25.0\n\nrequire {tool.module} {tool.version}\n"
    if tool.source is not None:
        work.mkdir(parents=True, exist_ok=True)
        (work / "go.mod").write_text(gomod)
        (work / "main.go").write_text(tool.source)
        package = "."
    else:
        assert tool.package is not None
        _prepare(work, gomod, [tool.package])
        package = tool.package
    _run(["go", "mod", "tidy"], work, progress, f"resolve {tool.module} {tool.version}")
    partial = bin_dir / f".{name}.partial"
    _run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), package], work, progress,
         f"build {name}")
    partial.replace(bin_dir / name)
    return bin_dir / name
