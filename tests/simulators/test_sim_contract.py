"""The answers match docs/contracts.md section 2 (and the operator's own parsers of them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import uwm_sim
from uwm_sim import clients, faults
from uwm_sim import estate as rules
from uwm_sim.config import Timing
from uwm_sim.fleet import running_fleet

from sim_helpers import wait_phase

pytest_plugins = ["sim_fixtures"]


STATE_KEYS = {"name", "kind", "version", "phase", "settled", "install", "database", "replication", "rotation",
              "faults"}
NESTED = {"install": {"targetVersion", "startedAt", "finishedAt", "error"},
          "database": {"name", "schemaVersion", "lockHolder", "updatesRequired"},
          "replication": {"role", "enabled", "caughtUp"},
          "rotation": {"loadBalanced", "inRotation", "activeRequests"}}
PHASES = {"Running", "Installing", "DatabaseUpdatesRequired", "MigratingSchema", "LockedOut", "VersionMismatch",
          "Failed", "Starting"}


def check_state(state: dict[str, Any]) -> None:
    assert set(state) >= STATE_KEYS
    for key, keys in NESTED.items():
        assert keys <= set(state[key]), key
    assert state["phase"] in PHASES


@pytest.mark.integration
async def test_state_and_portal_shapes(estate: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(estate()) as fleet, fleet.client("ps-2") as c:
        fresh = (await c.state()).body
        check_state(fresh)
        assert fresh["install"] == {"targetVersion": None, "startedAt": None, "finishedAt": None, "error": None}
        await c.replication(False)
        reply = await c.replication(False)
        assert reply.status == 200 and set(reply.body) == {"state"}
        check_state(reply.body["state"])
        for other in ("ps-1", "ps-3"):  # replication off, and the whole pool out of rotation
            async with fleet.client(other) as o:
                assert (await o.replication(False)).status == 200
                assert (await o.rotation(False)).status == 200
        await c.rotation(False)
        accepted = await c.install("2022.1")
        assert accepted.status == 202 and accepted.body["accepted"] is True
        check_state(accepted.body["state"])
        state = await wait_phase(c, "DatabaseUpdatesRequired")
        check_state(state)
        assert state["install"]["finishedAt"] and state["install"]["targetVersion"] == "2022.1"
        portal = (await c.portal()).body
        assert portal["updatesRequired"] == [{"database": "pers-db", "from": "2021.1", "to": "2022.1"}]
        assert portal["status"] in {"Idle", "Upgrading", "Upgrade Successful", "Failed"}
        try:
            from uwm_upgrade.adapters.servers import AgentState, PortalStatus
        except ImportError:  # the operator's adapters are optional for these tests
            return
        for body in (fresh, state):
            parsed = AgentState.model_validate(body)
            assert parsed.database.name == "pers-db"
        assert PortalStatus.model_validate(portal).updates_required[0].to_version == "2022.1"


# ---------------------------------------------------------------- the document itself (no simulator needed)

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"


def simulator_sections() -> str:
    text = CONTRACTS.read_text(encoding="utf-8")
    return text[text.index("## 2. The upgrade-agent API"):text.index("## 3. The UWM database tables")]


def journal_ops() -> set[str]:
    """Every op the simulators journal, read from their source (`journal(cur, "op"`, `Entry(..., "op"`)."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in Path(uwm_sim.__file__).parent.glob("*.py"))
    found = set(re.findall(r"journal\([^,()]*(?:\([^)]*\))?, \"([a-z-]+)\"", source))
    found |= set(re.findall(r"Entry\([^,]+, [^,]+, \"([a-z-]+)\"", source))
    found |= set(re.findall(r"_journal_quietly\(rt, \"([a-z-]+)\"", source))
    found |= set(re.findall(r"CLIENT_OPS = frozenset\(\{([^}]*)\}", source)[0].replace('"', "").replace(",", " ")
                 .split())
    return found


@pytest.mark.parametrize("names", [
    pytest.param(sorted(v for k, v in vars(rules).items() if k.startswith("RULE_")), id="estate rule ids"),
    pytest.param(sorted(v for k, v in vars(clients).items() if k.startswith("RULE_")), id="client rule ids"),
    pytest.param(list(faults.KINDS), id="fault kinds"),
    pytest.param(list(rules.STATUS_TESTS), id="status page tests"),
    pytest.param(sorted(f.alias or k for k, f in Timing.model_fields.items()), id="timing fields"),
    pytest.param(sorted(journal_ops()), id="journal ops"),
])
def test_the_contract_names_everything_the_simulators_do(names: list[str]) -> None:
    doc = simulator_sections()
    assert names, "nothing found: the lookup is broken"
    missing = [n for n in names if f"`{n}`" not in doc]
    assert not missing, f"in the simulators but not in docs/contracts.md sections 2-2b: {missing}"
