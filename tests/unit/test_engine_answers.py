"""Which answers to a turn's effects the next turn may take for the servers' states (`engine/answers.py`),
and that the effects hand them over (`engine/execute.py`)."""

from __future__ import annotations

from typing import Any

import pytest
from core_builders import SMALL_ESTATE, key

from uwm_upgrade.adapters.servers import AgentState, answered_state
from uwm_upgrade.core.actions import (
    ClosePortal,
    DisableReplication,
    Effect,
    InstallServer,
    TakeOutOfRotation,
    UpgradeSchema,
)
from uwm_upgrade.core.enums import StepName
from uwm_upgrade.core.models import parse_spec
from uwm_upgrade.engine.answers import adoptable, touched
from uwm_upgrade.engine.execute import execute
from uwm_upgrade.engine.observe import Estate

SPEC = parse_spec(SMALL_ESTATE)  # ms-1, ms-2 on mgmt-db (load-balanced); ps-1 Master, ps-2 Subscriber on pers-db


def state(name: str, version: str = "2022.1") -> AgentState:
    kind = "Management" if name.startswith("ms") else "Personalization"
    return AgentState.model_validate({
        "name": name, "kind": kind, "version": version, "phase": "Running", "settled": True,
        "database": {"name": "mgmt-db" if kind == "Management" else "pers-db", "schemaVersion": version},
        "stateVersion": f"v{name.replace('-', '')}"})


def off(*servers: str) -> DisableReplication:
    return DisableReplication(key(StepName.DISABLE_REPLICATION), servers)


def install(server: str) -> InstallServer:
    return InstallServer(key(StepName.INSTALL_SERVER, server=server), server, "2022.1")


OUT = TakeOutOfRotation(key(StepName.TAKE_OUT_OF_ROTATION), ("ms-1", "ms-2"))
SCHEMA = UpgradeSchema(key(StepName.UPGRADE_SCHEMA, database="mgmt-db"), "ms-1", "mgmt-db", "2022.1")

CASES: list[tuple[str, list[Effect], dict[str, list[AgentState]], set[str]]] = [
    ("each server of one effect, one answer each", [off("ps-1", "ps-2")],
     {"ps-1": [state("ps-1")], "ps-2": [state("ps-2")]}, {"ps-1", "ps-2"}),
    ("installs of two servers at once", [install("ms-1"), install("ms-2")],
     {"ms-1": [state("ms-1")], "ms-2": [state("ms-2")]}, {"ms-1", "ms-2"}),
    ("a server two effects touched: neither answer says what both left", [OUT, install("ms-1")],
     {"ms-1": [state("ms-1")], "ms-2": [state("ms-2")]}, {"ms-2"}),
    ("a schema upgrade changes every server of its database", [SCHEMA, install("ms-2")],
     {"ms-2": [state("ms-2")]}, set()),
    ("a Subscriber while another effect changes its Master", [install("ps-1"), install("ps-2")],
     {"ps-1": [state("ps-1")], "ps-2": [state("ps-2")]}, {"ps-1"}),
    ("two answers for one server", [off("ps-1", "ps-2")], {"ps-2": [state("ps-2"), state("ps-2", "2023.1")]},
     set()),
    ("an answer naming another server", [install("ms-1")], {"ms-1": [state("ms-2")]}, set()),
    ("an answer from a server no effect touched", [install("ms-1")], {"ms-2": [state("ms-2")]}, set()),
]


@pytest.mark.parametrize(("effects", "answered", "kept"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_an_answer_is_taken_only_when_nothing_else_of_the_turn_changed_its_server(
        effects: list[Effect], answered: dict[str, list[AgentState]], kept: set[str]) -> None:
    found = adoptable(SPEC, effects, answered)
    assert set(found) == kept
    assert all(found[name] is answered[name][0] for name in kept)
    assert kept <= touched(SPEC, effects)


def test_touched_counts_a_close_for_every_server_of_its_database() -> None:
    close = ClosePortal(key(StepName.UPGRADE_SCHEMA, database="pers-db"), "ps-1", "pers-db")
    assert touched(SPEC, [close, install("ms-1")]) == {"ps-1", "ps-2", "ms-1"}


@pytest.mark.parametrize(("data", "why"), [
    ({"accepted": True}, "no state"),
    ({"state": "Running"}, "not an object"),
    ({"state": {"name": "ps-1"}}, "not a whole state"),
    ({"state": state("ps-2").model_dump(by_alias=True)}, "another server's"),
    ([1, 2], "not an object at all"),
])
def test_an_answer_without_the_server_s_own_state_gives_none(data: Any, why: str) -> None:
    assert answered_state("ps-1", data) is None, why


def test_an_answer_with_the_server_s_state_gives_it() -> None:
    got = answered_state("ps-1", {"accepted": True, "state": state("ps-1").model_dump(by_alias=True)})
    assert got == state("ps-1")


class Agents:
    """The agents' change requests: each answers with the server's state, or (`silent`) without one."""

    def __init__(self, silent: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.silent = silent

    def _answer(self, what: str, server: str) -> AgentState | None:
        self.calls.append((what, server))
        return None if server in self.silent else state(server)

    async def set_replication(self, server: str, base_url: str, enabled: bool) -> AgentState | None:
        return self._answer("replication", server)

    async def set_rotation(self, server: str, base_url: str, in_rotation: bool) -> AgentState | None:
        return self._answer("rotation", server)

    async def install(self, server: str, base_url: str, version: str) -> AgentState | None:
        return self._answer("install", server)


async def test_the_effects_hand_over_what_the_agents_answered() -> None:
    agents = Agents(silent=frozenset({"ms-2"}))
    estate = Estate(servers=agents, databases={})  # type: ignore[arg-type]  # the fake has what is used
    answered: dict[str, list[AgentState]] = {}
    for effect in (off("ps-2", "ps-1"), OUT, install("ms-1")):
        assert await execute(estate, SPEC, effect, answered) is None
    assert agents.calls[0] == ("replication", "ps-1")  # the Master first
    assert {name: [s.name for s in states] for name, states in answered.items()} == {
        "ps-1": ["ps-1"], "ps-2": ["ps-2"], "ms-1": ["ms-1", "ms-1"]}  # ms-2 answered without its state
