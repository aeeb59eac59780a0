"""Pure parts of the engine: which plans hold an estate, and what a deletion restores."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from uwm_upgrade.core.enums import ReplicationRole, ReplicationState, ServerKind, ServerPhase
from uwm_upgrade.core.models import ServerStatus, UpgradePlanStatus, parse_spec
from uwm_upgrade.core.observations import Observations, ServerObservation
from uwm_upgrade.engine.overlap import holders
from uwm_upgrade.engine.teardown import pending_work, restorations, started

SPEC: dict[str, Any] = {
    "targetVersion": "2023.1", "releases": ["2021.1", "2022.1", "2023.1"],
    "agentSecretRef": {"name": "agent"},
    "databases": [{"name": "mgmt-db", "kind": "Management", "connectionSecretRef": {"name": "dbs", "key": "m"}},
                  {"name": "pers-db", "kind": "Personalization", "connectionSecretRef": {"name": "dbs", "key": "p"}}],
    "managementServers": [{"name": "ms-1", "url": "http://ms-1:7751", "database": "mgmt-db", "loadBalanced": True},
                          {"name": "ms-2", "url": "http://ms-2:7751", "database": "mgmt-db", "loadBalanced": True}],
    "personalizationServers": [
        {"name": "ps-1", "url": "http://ps-1:7771", "database": "pers-db", "replicationRole": "Master"},
        {"name": "ps-2", "url": "http://ps-2:7771", "database": "pers-db", "replicationRole": "Subscriber"}],
}


def _plan(name: str, created: str, phase: str | None = None, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": "ns", "uid": name, "creationTimestamp": created},
                           "spec": {**SPEC, **spec}}
    if phase:
        obj["status"] = {"phase": phase}
    return obj


OTHER_ESTATE = {
    "databases": [{"name": "x-db", "kind": "Management", "connectionSecretRef": {"name": "other", "key": "x"}}],
    "managementServers": [{"name": "x-1", "url": "http://x-1:7751", "database": "x-db"}],
    "personalizationServers": [],
}


@pytest.mark.parametrize(("me", "others", "expected"), [
    (_plan("b", "2026-01-02"), [_plan("a", "2026-01-01")], ("a",)),            # older pending plan goes first
    (_plan("a", "2026-01-01"), [_plan("b", "2026-01-02")], ()),                # newer one waits, not me
    (_plan("a", "2026-01-01"), [_plan("b", "2026-01-02", "Running")], ("b",)),  # a running plan holds it
    (_plan("a", "2026-01-01", "Running"), [_plan("b", "2026-01-02", "Running")], ()),  # I already started
    (_plan("b", "2026-01-02"), [_plan("a", "2026-01-01", "Succeeded")], ()),  # over: holds nothing
    (_plan("b", "2026-01-02"), [_plan("a", "2026-01-01", "Failed")], ()),
    (_plan("b", "2026-01-02"), [_plan("a", "2026-01-01", **OTHER_ESTATE)], ()),  # no overlap
    (_plan("b", "2026-01-01"), [_plan("a", "2026-01-01")], ("a",)),            # same instant: the name decides
    (_plan("b", "2026-01-02"), [_plan("a", "2026-01-01", "Paused")], ("a",)),
    (_plan("b", "2026-01-02"), [{**_plan("a", "2026-01-01"), "spec": {"bad": True}}], ()),  # invalid: ignored
])
def test_holders(me: dict[str, Any], others: list[dict[str, Any]], expected: tuple[str, ...]) -> None:
    assert holders(me, parse_spec(me["spec"]), [me, *others]) == expected


def test_a_shared_database_secret_alone_is_an_overlap() -> None:
    other = _plan("a", "2026-01-01", "Running", managementServers=[
        {"name": "z-1", "url": "http://z-1:7751", "database": "mgmt-db"}], personalizationServers=[
        {"name": "z-2", "url": "http://z-2:7771", "database": "pers-db"}])
    me = _plan("b", "2026-01-02")
    assert holders(me, parse_spec(me["spec"]), [other]) == ("a",)


def _obs(name: str, kind: ServerKind, *, phase: ServerPhase = ServerPhase.RUNNING, lb: bool = False,
         rotation: bool = False, role: ReplicationRole = ReplicationRole.NONE, replication: bool = False,
         version: str = "2022.1") -> ServerObservation:
    return ServerObservation(name=name, kind=kind, version=version, phase=phase,
                             database="mgmt-db" if kind is ServerKind.MANAGEMENT else "pers-db",
                             load_balanced=lb, in_rotation=rotation, replication_role=role,
                             replication_enabled=replication)


STATUS = UpgradePlanStatus(servers=(
    ServerStatus(name="ms-1", online_before=True), ServerStatus(name="ms-2", online_before=False),
    ServerStatus(name="ps-1", replication_before=ReplicationState.ENABLED),
    ServerStatus(name="ps-2", replication_before=ReplicationState.ENABLED)))


def test_deletion_restores_what_was_there_before_master_first() -> None:
    spec = parse_spec(SPEC)
    seen = Observations.of(servers=(
        _obs("ms-1", ServerKind.MANAGEMENT, lb=True), _obs("ms-2", ServerKind.MANAGEMENT, lb=True),
        _obs("ps-2", ServerKind.PERSONALIZATION, role=ReplicationRole.SUBSCRIBER),
        _obs("ps-1", ServerKind.PERSONALIZATION, role=ReplicationRole.MASTER)))
    assert started(STATUS) and not started(UpgradePlanStatus())
    rotation, replication, notes = restorations(spec, STATUS, seen)
    assert rotation == ["ms-1"]  # ms-2 was out of rotation before the plan: it stays out
    assert replication == ["ps-1", "ps-2"]
    assert notes == []


def test_deletion_does_not_force_what_the_guide_forbids_and_waits_for_busy_servers() -> None:
    spec = parse_spec(SPEC)
    seen = Observations.of(servers=(
        _obs("ms-1", ServerKind.MANAGEMENT, lb=True, phase=ServerPhase.VERSION_MISMATCH),
        _obs("ms-2", ServerKind.MANAGEMENT, lb=True, phase=ServerPhase.INSTALLING),
        _obs("ps-1", ServerKind.PERSONALIZATION, role=ReplicationRole.MASTER, replication=True)))
    rotation, replication, notes = restorations(spec, STATUS, seen)
    assert rotation == [] and replication == []
    assert notes == ["ms-1: cannot go back into rotation while VersionMismatch", "ps-2: not reachable"]
    assert pending_work(spec, STATUS, seen).waiting_for == ["ms-2 (Installing)"]


def test_deletion_waits_for_a_server_still_starting_that_goes_back_into_rotation() -> None:
    """Just installed, its status page not confirming yet: once it serves, it goes back (not 'NOT restored')."""
    spec = parse_spec(SPEC)
    seen = Observations.of(servers=(
        _obs("ms-1", ServerKind.MANAGEMENT, lb=True, phase=ServerPhase.STARTING),
        _obs("ms-2", ServerKind.MANAGEMENT, lb=True, phase=ServerPhase.STARTING),  # out before the plan
        _obs("ps-1", ServerKind.PERSONALIZATION, role=ReplicationRole.MASTER, phase=ServerPhase.STARTING)))
    assert pending_work(spec, STATUS, seen).waiting_for == ["ms-1 (Starting)"]


async def test_deletion_waits_until_the_plans_loop_has_stopped() -> None:
    """The loop finishes the action in flight after its stop flag is set; the teardown looks only after."""
    import asyncio

    from uwm_upgrade.engine import deletion, reconciler
    from uwm_upgrade.engine.teardown import MustWaitError

    runtime = reconciler.Runtime(kube=None)  # type: ignore[arg-type]  # nothing reaches the API here
    body = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}, "spec": SPEC,
            "status": {"phase": "Running"}}
    runtime.loops.add("u-1")
    with pytest.raises(MustWaitError, match="loop to stop"):
        await deletion.on_delete(runtime, body, logging.getLogger("t"), retry=0)
    runtime.loops.clear()

    stopped = asyncio.Event()
    stopped.set()

    class Flag:
        def is_set(self) -> bool:
            return stopped.is_set()

        async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (the StopFlag protocol)
            await stopped.wait()

    await reconciler.drive(runtime, body, Flag(), logging.getLogger("t"))
    assert runtime.loops == set()  # a loop that ended is no longer waited for
