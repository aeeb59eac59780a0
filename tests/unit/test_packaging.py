"""What `pip install ./operator` (the operator's image) and `pip install ./simulators` (theirs) install.

Each wheel is built here, offline, from a copy of its folder, and read: it holds its one package and
nothing else (no simulators or dev tools beside the operator), every module of that package, its one
command, and as dependencies exactly the distributions its modules import (found through the installed
environment's `packages_distributions()`, so a dependency left over from the dev tools shows up too).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Dist:
    folder: str
    package: str
    name: str
    commands: frozenset[str]


DISTS = [Dist("operator", "uwm_upgrade", "uwm-upgrade-operator", frozenset({"uwm-upgrade", "kubectl-uplan"})),
         Dist("simulators", "uwm_sim", "uwm-sim", frozenset({"uwm-sim"}))]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _build(dist: Dist, tmp: Path) -> zipfile.ZipFile:
    src = tmp / dist.folder
    shutil.copytree(REPO / dist.folder, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    out = tmp / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                            "--no-build-isolation", "--no-index", "-w", str(out), str(src)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def _third_party_imports(package_dir: Path, own: str) -> set[str]:
    found: set[str] = set()
    for path in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            found |= {n.split(".")[0] for n in names}
    return {n for n in found if n not in sys.stdlib_module_names and n not in (own, "__future__")}


# Distributions of data that the standard library reads, never imported: zoneinfo falls back on `tzdata`
# where the system has no time zone database (spec.maintenanceWindow.timeZone in a slim image).
DATA_ONLY = {"tzdata"}


@pytest.fixture(scope="module", params=DISTS, ids=lambda d: d.folder)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Dist, zipfile.ZipFile]:
    dist: Dist = request.param
    return dist, _build(dist, tmp_path_factory.mktemp(dist.folder))


def test_the_wheel_holds_its_package_alone(built: tuple[Dist, zipfile.ZipFile]) -> None:
    dist, wheel = built
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names}
    info = next(t for t in tops if t.endswith(".dist-info"))
    assert tops == {dist.package, info}, f"{dist.folder}'s wheel holds {sorted(tops)}"
    assert info.startswith(dist.name.replace("-", "_") + "-")
    sources = {p.relative_to(REPO / dist.folder).as_posix()
               for p in (REPO / dist.folder / dist.package).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert sources <= set(names), f"missing from the wheel: {sorted(sources - set(names))}"
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    commands = {line.split("=")[0].strip() for line in entry_points.splitlines() if "=" in line}
    assert commands == dist.commands


def test_the_wheel_depends_on_exactly_what_its_package_imports(built: tuple[Dist, zipfile.ZipFile]) -> None:
    dist, wheel = built
    info = next(n.split("/")[0] for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    requires = wheel.read(f"{info}/METADATA").decode()
    declared = {_normalized(re.split(r"[\s<>=!~;\[(]", line.split(":", 1)[1].strip())[0])
                for line in requires.splitlines() if line.startswith("Requires-Dist:")}
    providers = metadata.packages_distributions()
    imported = _third_party_imports(REPO / dist.folder / dist.package, dist.package)
    unknown = {m for m in imported if m not in providers}
    assert not unknown, f"{dist.package} imports modules no installed distribution provides: {unknown}"
    needed = {_normalized(providers[m][0]) for m in imported} | (declared & DATA_ONLY)
    assert declared == needed, (f"{dist.folder}/pyproject.toml declares {sorted(declared)}, "
                                f"its modules import {sorted(needed)}")
