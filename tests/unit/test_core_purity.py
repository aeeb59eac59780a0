"""The core stays pure: no I/O library and no other layer of the operator is imported by it.

The import-linter contract in pyproject.toml says the same; this test also runs where lint-imports is
not configured, and reads the source, so a lazy import inside a function is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "operator" / "uwm_upgrade" / "core"
FORBIDDEN = ("kopf", "aiohttp", "pyodbc", "kubernetes", "asyncio", "requests", "socket", "subprocess",
             "uwm_upgrade.adapters", "uwm_upgrade.handlers", "uwm_upgrade.cli", "uwm_sim", "uwm_dev")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 1:
            names.add("uwm_upgrade." + (node.module or ""))  # reaches outside the core package
    return names


@pytest.mark.parametrize("module", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_io(module: Path) -> None:
    bad = {n for n in imported(module) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)}
    bad |= {n for n in imported(module) if n.startswith("uwm_upgrade.") and not n.startswith("uwm_upgrade.core")}
    assert not bad, f"{module.name} imports {sorted(bad)}"


def test_every_core_module_says_why_it_exists() -> None:
    for module in CORE.glob("*.py"):
        tree = ast.parse(module.read_text())
        assert ast.get_docstring(tree), f"{module.name} has no docstring"
