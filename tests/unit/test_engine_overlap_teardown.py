"""The engine around plans: which plans hold an estate, and a deletion waiting for the plan's loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from core_builders import SMALL_ESTATE as SPEC

from uwm_upgrade.core.models import parse_spec
from uwm_upgrade.engine.overlap import contenders, holders, static_footprint


def held(me: dict[str, Any], others: list[dict[str, Any]]) -> tuple[str, ...]:
    """`holders` over the plans' spec-only footprints (the resolved ones are tested in test_engine_overlap)."""
    mine = static_footprint(parse_spec(me["spec"]), me["metadata"]["namespace"])
    theirs = [(o, static_footprint(spec, o["metadata"]["namespace"])) for o, spec in contenders(me, others)]
    return holders(me, mine, theirs)


def _plan(name: str, created: str, phase: str | None = None, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": "ns", "uid": name, "creationTimestamp": created},
                           "spec": {**SPEC, **spec}}
    if phase:
        obj["status"] = {"phase": phase}
    return obj


def _started(plan: dict[str, Any]) -> dict[str, Any]:
    plan["status"]["startedAt"] = "2026-01-02T00:00:00Z"
    return plan


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
    # waiting for its window between hops (started), a newer plan holds the estate still
    (_plan("a", "2026-01-01"), [_started(_plan("b", "2026-01-02", "AwaitingWindow"))], ("b",)),
    (_plan("a", "2026-01-01"), [_plan("b", "2026-01-02", "AwaitingWindow")], ()),  # not started: it waits
    (_started(_plan("a", "2026-01-01", "AwaitingWindow")), [_plan("b", "2026-01-02", "Running")], ()),
])
def test_holders(me: dict[str, Any], others: list[dict[str, Any]], expected: tuple[str, ...]) -> None:
    assert held(me, [me, *others]) == expected


def test_a_shared_database_secret_alone_is_an_overlap() -> None:
    other = _plan("a", "2026-01-01", "Running", managementServers=[
        {"name": "z-1", "url": "http://z-1:7751", "database": "mgmt-db"}], personalizationServers=[
        {"name": "z-2", "url": "http://z-2:7771", "database": "pers-db"}])
    me = _plan("b", "2026-01-02")
    assert held(me, [other]) == ("a",)


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


class _Kube:
    """What a teardown asks the API server: the plan's Secrets, and an Event at the end."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        return "DRIVER={PostgreSQL Unicode};SERVER=db;PORT=5432;DATABASE=d;UID=u;PWD=p" if name == "dbs" else "t"

    async def event(self, plan: dict[str, Any], type_: str, reason: str, note: str) -> None:
        self.events.append((type_, reason, note))


async def test_a_teardown_waits_for_work_in_flight_as_long_as_an_install_may_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It used to give up after 120 tries (about 4 minutes) while an install may run 30; now it waits by
    time, the install limit, however many tries kopf counted."""
    import dataclasses
    import time

    from uwm_upgrade.core.observations import Observations
    from uwm_upgrade.core.teardown import TeardownResult
    from uwm_upgrade.engine import deletion, reconciler
    from uwm_upgrade.engine.teardown import MustWaitError

    runtime = reconciler.Runtime(kube=_Kube())  # type: ignore[arg-type]
    runtime.limits = dataclasses.replace(runtime.limits, install_seconds=0.6, schema_seconds=0.3)

    async def seen(*_: Any) -> Observations:
        return Observations()

    restored: list[str] = []

    async def restore(*_: Any) -> TeardownResult:
        restored.append("now")
        return TeardownResult(restored=["ms-1 back in rotation"])

    monkeypatch.setattr(deletion, "observe", seen)
    monkeypatch.setattr(deletion, "pending_work", lambda *_: TeardownResult(waiting_for=["ms-2 installing"]))
    monkeypatch.setattr(deletion, "restore", restore)
    body = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-2"}, "spec": SPEC,
            "status": {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z", "currentHop": 1,
                       "steps": [{"name": "RecordBaseline", "hop": 0, "state": "Succeeded"}]}}
    logger = logging.getLogger("t")
    with pytest.raises(MustWaitError, match="ms-2 installing"):
        await deletion.on_delete(runtime, body, logger, retry=500)
    deadline = time.monotonic() + 5
    while not restored and time.monotonic() < deadline:
        try:
            await deletion.on_delete(runtime, body, logger, retry=501)
        except MustWaitError:
            await asyncio.sleep(0.05)
    assert restored == ["now"]
    assert runtime.teardowns == {}


async def test_a_standby_does_not_tear_down() -> None:
    from uwm_upgrade.engine import deletion, reconciler
    from uwm_upgrade.engine.teardown import MustWaitError

    class Standby:
        def leading(self, namespace: str) -> bool:
            return False

    runtime = reconciler.Runtime(kube=None, leadership=Standby())  # type: ignore[arg-type]
    body = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-3"}, "spec": SPEC, "status": {"phase": "Running"}}
    with pytest.raises(MustWaitError, match="standing by: another operator replica leads namespace ns"):
        await deletion.on_delete(runtime, body, logging.getLogger("t"), retry=0)
