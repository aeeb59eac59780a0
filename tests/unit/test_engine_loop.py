"""The engine's loop under failure: no exception ends it, the plan says why it stalled, waits are bounded,
and nothing is done that was not recorded first at the plan's current version.

The real `reconciler.drive` runs against a fake API server (`engine_fakes.FakeKube`: merge patches,
resourceVersions, 409s) and the core tests' in-memory estate; the errors are those seen or traced in the
field: a urllib3 error for an unreachable API server, a 409 from another writer, a 422 for a status the
API server will not store, an answer of the wrong shape (pydantic), a non-UTF-8 answer, a header value
aiohttp refuses, a binary Secret value, an effect or an observation that never returns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest
from engine_fakes import CONNECTION, TOKEN, LoopHarness, Turns
from pydantic import BaseModel, ValidationError

from uwm_upgrade.adapters.kube import KubeError
from uwm_upgrade.core.actions import Effect
from uwm_upgrade.core.models import parse_spec
from uwm_upgrade.engine import reconciler, status_record


class Shape(BaseModel):
    state: int


def validation_error() -> ValidationError:
    try:
        Shape.model_validate({"state": "garbage"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


UNEXPECTED = {
    "wrong-shape": validation_error(),
    "non-utf8": UnicodeDecodeError("utf-8", b"\xff\xfe", 0, 1, "invalid start byte"),
    "header": ValueError("Forbidden control character detected in headers. Potential header injection attack."),
    "bug": KeyError("servers"),
}


def failing_for(h: LoopHarness, error: BaseException, turns: int) -> None:
    """observe() raises `error` for its first `turns` calls, then observes again."""
    calls = {"n": 0}

    async def hook() -> None:
        calls["n"] += 1
        h.observe_error = error if calls["n"] <= turns else None

    h.observe_hook = hook


@pytest.mark.parametrize("kind", list(UNEXPECTED))
async def test_an_unexpected_error_stalls_the_plan_says_why_and_the_loop_goes_on(
        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    h = LoopHarness(monkeypatch)
    error = UNEXPECTED[kind]
    failing_for(h, error, 3)
    seen: list[dict[str, Any]] = []

    async def watch(effect: Effect) -> None:
        seen.append(h.kube.condition("Stalled"))

    h.execute_hook = watch
    flag = await h.run(20, until=lambda: bool(h.effects))
    assert flag.waits == [1.0, 2.0, 4.0]  # backed off, then went on
    stalled = [e for e in h.kube.events if e[1] == "Stalled"]
    assert len(stalled) == 1, h.kube.events  # one Warning for three identical failures
    assert stalled[0][0] == "Warning" and stalled[0][2].startswith(f"UnexpectedError: {type(error).__name__} at ")
    recovered = [e for e in h.kube.events if e[1] == "Recovered"]
    assert [e[0] for e in recovered] == ["Normal"]
    assert sorted(h.effects) == ["DisableReplication", "TakeOutOfRotation"]  # went on (the prelude, at once)
    assert seen[0]["status"] == "False" and seen[0]["reason"] == "NotStalled"


async def test_the_stalled_condition_while_it_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    h.observe_error = validation_error()
    await h.run(2)
    stalled = h.kube.condition("Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "UnexpectedError"
    assert stalled["message"].startswith("ValidationError at ") and "state" in stalled["message"]
    assert h.effects == []


async def test_a_stall_never_shows_a_secret(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    h = LoopHarness(monkeypatch)
    h.observe_error = RuntimeError(f"cannot reach {CONNECTION} with {TOKEN}\n")
    await h.run(2)
    message = h.kube.condition("Stalled")["message"]
    shown = [message, *(e[2] for e in h.kube.events), caplog.text]
    for text in shown:
        assert TOKEN not in text and "hunter2" not in text, text
    assert "cannot reach" in message


async def test_the_api_server_unreachable_costs_short_waits_and_nothing_is_done_unrecorded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What urllib3's MaxRetryError becomes in the adapter (test_engine_adapters): a transient KubeError."""
    h = LoopHarness(monkeypatch)
    down = KubeError("patching the status: the API server is unreachable (MaxRetryError)", transient=True)
    h.kube.patch_failures = [down] * 8
    flag = await h.run(30, until=lambda: len(h.effects) >= 2)
    assert flag.waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0], flag.waits  # capped: the outage costs ~itself
    assert h.kube.condition("Stalled")["status"] == "False"  # an outage the loop rides out: not stalled
    assert h.effects == ["DisableReplication", "TakeOutOfRotation"]
    assert h.effects_preceded_by_a_write(), h.kube.log


async def test_a_status_the_api_server_refuses_stalls_the_plan_naming_the_field(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan too large for its status (or any 422): the turn's write is refused, so nothing is done; the
    small write of the Stalled condition goes through and says why."""
    h = LoopHarness(monkeypatch)
    invalid = KubeError("patching the status of UpgradePlan ns/p: 422 Unprocessable Entity: UpgradePlan.upgrade.uwm.io "
                        "\"p\" is invalid: status.steps: Too many: 10001: must have at most 10000 items", False, 422)

    def refuse_big(patch: dict[str, Any]) -> BaseException | None:
        return invalid if patch.get("steps") else None  # any step written: too many

    h.kube.patch_failures = [refuse_big] * 100
    flag = await h.run(5)
    stalled = h.kube.condition("Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "StatusWriteRefused"
    assert "status.steps: Too many" in stalled["message"]
    assert h.effects == []
    assert flag.waits == [1.0, 2.0, 4.0, 8.0, 16.0]


async def test_a_write_by_someone_else_is_read_back_before_any_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    """The status write before the first effect finds the plan changed (another operator, a forced
    takeover): 409. The loop re-reads the plan and decides again from it; the effect runs once, after a
    write at the current version."""
    h = LoopHarness(monkeypatch)
    armed = {"done": False}

    async def other_writer_before_the_effect() -> None:
        if not armed["done"]:  # the turn that starts the plan writes once, right before its effects
            armed["done"] = True
            h.kube.before_patch = lambda kube: kube.write_as_someone_else(message="written by another operator")

    h.observe_hook = other_writer_before_the_effect
    await h.run(30, until=lambda: len(h.effects) >= 1)
    log = h.kube.log
    conflict = log.index("patch-conflict")
    assert log[conflict + 1].startswith("get@"), log  # re-read at once
    assert log.index("effect:DisableReplication") > conflict + 1
    assert sorted(h.effects) == ["DisableReplication", "TakeOutOfRotation"]  # the prelude, once
    assert h.effects_preceded_by_a_write(), log


async def test_an_effect_that_never_returns_ends_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    h.runtime.limits = reconciler.replace(h.runtime.limits, step_seconds=0.5)

    async def hang(effect: Effect) -> None:
        await asyncio.Event().wait()

    h.execute_hook = hang
    started = asyncio.get_running_loop().time()
    await h.run(30, until=lambda: "did not finish within" in str(h.kube.status.get("message")))
    assert asyncio.get_running_loop().time() - started < 5
    steps = {s["name"]: s for s in h.kube.status["steps"]}
    assert steps["DisableReplication"]["state"] == "Running"  # transient: asked again, within its timeout
    assert "did not finish within 0 s" in steps["DisableReplication"]["message"]


async def test_an_observation_that_never_returns_ends_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    monkeypatch.setattr(reconciler, "OBSERVE_SECONDS", 0.2)

    async def hang() -> None:
        await asyncio.Event().wait()

    h.observe_hook = hang
    await h.run(3)
    assert h.kube.status["phase"] == "Planning"
    assert "observing the estate took longer than 0 s" in h.kube.status["message"], h.kube.status["message"]
    assert h.kube.condition("Stalled")["reason"] == "NotStalled"  # a gap the core waits on, not an error


async def test_a_binary_secret_value_is_named_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    h.kube.secret_error = UnicodeDecodeError("utf-8", b"\x89PNG", 0, 1, "invalid start byte")
    await h.run(3)
    assert h.kube.status["phase"] == "Planning"
    assert "Secret ns/agent key 'token' is not UTF-8 text" in h.kube.status["message"], h.kube.status["message"]
    assert h.kube.condition("Stalled")["reason"] == "NotStalled"


class Losing:
    """Leadership that holds until `lose()`; then the loop must stop before its next write or effect."""

    def __init__(self) -> None:
        self.held = True

    def leading(self, namespace: str) -> bool:
        return self.held

    async def wait_leading(self, namespace: str, stopped: Any) -> bool:
        return self.held and not stopped.is_set()

    async def close(self) -> None:
        return None


async def test_leadership_lost_during_an_effect_stops_the_loop_before_the_next_write(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    leadership = Losing()
    h.runtime.leadership = leadership

    async def lose(effect: Effect) -> None:
        leadership.held = False

    h.execute_hook = lose
    await h.run(30)
    assert sorted(h.effects) == ["DisableReplication", "TakeOutOfRotation"]  # the prelude's, at once
    assert h.kube.log[-1].startswith("effect:"), h.kube.log  # not even the after-effect write
    assert h.runtime.loops == set()


async def test_a_step_started_by_a_pod_with_another_clock_is_timed_on_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drain after TakeOutOfRotation waits (requests still active). Its startedAt is rewritten 3 hours
    back (another pod's clock, far behind ours): the step's 600 s timeout counts from when this process
    saw it running, so it does not fail at once."""
    h = LoopHarness(monkeypatch)
    # the drain is to be seen on the API server while the loop turns (its record written at once, not
    # left for the next write: test_engine_deferred_records.py)
    monkeypatch.setattr(status_record, "DEFER_SECONDS", 0.0)
    rewritten: dict[str, Any] = {"done": False}

    def draining() -> bool:
        return "draining" in str(h.kube.status.get("message"))

    async def skew() -> None:
        if draining() and not rewritten["done"]:
            rewritten["done"] = True
            long_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
            rewritten["at"] = long_ago
            steps = [dict(s, startedAt=long_ago) if s["name"] == "TakeOutOfRotation" else s
                     for s in h.kube.status["steps"]]
            h.kube.write_as_someone_else(steps=steps)
            h.estate.servers["ms-1"].active_requests = 2  # something to write next turn: it meets the 409

    h.observe_hook = skew
    await h.run(40)
    assert rewritten["done"]
    status = h.kube.status
    step = next(s for s in status["steps"] if s["name"] == "TakeOutOfRotation")
    assert step["startedAt"] == rewritten["at"]  # the skewed time stays on record; it just does not count
    assert (step["state"], status["phase"]) == ("Running", "Running"), (step, status.get("message"))


@pytest.mark.parametrize("found", [{"observedGeneration": 0}, None, {}],
                         ids=["crd-default", "no-status", "empty"])
async def test_a_new_plan_s_status_as_the_api_server_holds_it_takes_the_first_patch(
        monkeypatch: pytest.MonkeyPatch, found: dict[str, Any] | None) -> None:
    """The CRD defaults a new plan's status to {observedGeneration: 0}: the first JSON patch is made
    against that (a `replace` of a field it lacks is a 422), not against the operator's idea of an empty
    status; nor does a plan without any status, or an empty one, refuse it."""
    h = LoopHarness(monkeypatch)
    if found is None:
        h.kube.plan.pop("status")
    else:
        h.kube.plan["status"] = found
    await h.run(10, until=lambda: len(h.effects) >= 2)
    assert "patch-invalid" not in h.kube.log, h.kube.log
    assert sorted(h.effects) == ["DisableReplication", "TakeOutOfRotation"]
    assert h.kube.status["phase"] == "Running" and h.kube.status["observedGeneration"] == 1


async def test_a_plan_that_is_over_sleeps_while_its_servers_change_instead_of_spinning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan with nothing to do is Succeeded at once; its servers' watchers keep saying something changed.
    The loop must sleep (and let kopf handle the plan's deletion), not turn again and again without ever
    yielding the event loop (seen: a deleted finished plan never went away, the operator at 100% CPU)."""
    real_sleep = reconciler.Plan.sleep
    h = LoopHarness(monkeypatch, targetVersion="2021.1")  # the estate runs it already
    monkeypatch.setattr(reconciler.Plan, "sleep", real_sleep)
    turns = {"n": 0}
    watching: list[frozenset[str]] = []  # the long polls open after each turn of the plan over
    turn = reconciler.Plan.step

    class Silent:  # an agent whose long poll never answers
        async def state(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.Event().wait()

    async def step(plan: reconciler.Plan) -> Any:
        turns["n"] += 1
        plan.watch.follow(Silent(), parse_spec(h.body["spec"]).servers())  # type: ignore[arg-type]
        plan.watch.changed.set()  # what a long poll answering does
        if turns["n"] >= 200:
            flag.left = 0  # spinning: stop it, the assertions below say so
        result = await turn(plan)
        if plan.status.phase.value == "Succeeded":
            watching.append(plan.watch.watched)
        return result

    monkeypatch.setattr(reconciler.Plan, "step", step)
    ticks = {"n": 0}

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks["n"] += 1

    flag = Turns(10**9, until=lambda: ticks["n"] >= 30)
    running = asyncio.create_task(ticker())
    try:
        await asyncio.wait_for(reconciler.drive(h.runtime, h.kube.plan, flag, logging.getLogger("test")), 30)
    finally:
        running.cancel()
    assert h.kube.plan["status"]["phase"] == "Succeeded"
    assert ticks["n"] >= 30 and turns["n"] < 20, (ticks, turns)
    # the turn that ended it followed its servers; every turn of the plan over since stopped their long polls
    assert len(watching) > 1 and not any(watching[1:]), watching
