"""An effect's look before it asks (a schema upgrade's backup verified again) runs beside the status write
that precedes the effect, not after it: the write and the look each take a round trip, and the request
waits for both. The effect still waits for its look, and a write that fails stops the look too."""

from __future__ import annotations

import asyncio

import pytest
from engine_fakes import LoopHarness

from uwm_upgrade.adapters.kube import KubeError
from uwm_upgrade.core.actions import Effect, TakeOutOfRotation


def _looking(h: LoopHarness, started: list[str], release: asyncio.Event | None = None) -> None:
    async def look(effect: Effect) -> None:
        started.append(type(effect).__name__)
        h.kube.log.append(f"check:{type(effect).__name__}")
        if release is not None:
            await release.wait()

    h.precheck = lambda effect: look(effect) if isinstance(effect, TakeOutOfRotation) else None


async def test_an_effect_s_look_runs_beside_the_write_before_it_and_the_effect_waits_for_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    started: list[str] = []
    _looking(h, started)
    await h.run(10, until=lambda: len(h.effects) >= 2)
    log = h.kube.log
    looked = log.index("check:TakeOutOfRotation")
    assert log[looked + 1].startswith("patch@"), log  # started before the write that precedes the effect ended
    assert log.index("effect:TakeOutOfRotation") > looked + 1, log
    assert h.effects_preceded_by_a_write(), log


async def test_a_write_that_fails_stops_the_look_and_asks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    started: list[str] = []
    never = asyncio.Event()  # the look would wait for ever: the failed write must end it
    _looking(h, started, never)
    h.kube.patch_failures = [KubeError("patching the status: 503 Service Unavailable", True, 503)]
    pending_before = len(asyncio.all_tasks())
    await h.run(1)
    assert started == ["TakeOutOfRotation"] and h.effects == [], h.kube.log
    assert len(asyncio.all_tasks()) <= pending_before, "a look outlived the write that failed"
