"""Events posted beside the loop (`engine/announce.py`): in order, never holding the loop, bounded."""

from __future__ import annotations

import asyncio
from typing import Any

from uwm_upgrade.engine import announce
from uwm_upgrade.engine.announce import Announcer

BODY = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}}


class SlowSink:
    """An API server whose Event posts wait until released."""

    def __init__(self) -> None:
        self.posted: list[str] = []
        self.release = asyncio.Event()
        self.fail_first = False

    async def event(self, plan: dict[str, Any], type_: str, reason: str, note: str) -> None:
        await self.release.wait()
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("the API server said no")
        self.posted.append(reason)


async def test_posting_never_waits_and_the_events_go_out_in_order() -> None:
    sink = SlowSink()
    events = Announcer(sink, BODY)
    for reason in ("StepSucceeded", "StepSkipped", "Running"):
        events.post("Normal", reason, "note")  # returns at once although the API server is slow
    assert sink.posted == []
    sink.release.set()
    await events.close()
    assert sink.posted == ["StepSucceeded", "StepSkipped", "Running"]


async def test_a_failed_post_is_dropped_and_the_next_ones_still_go_out() -> None:
    sink = SlowSink()
    sink.fail_first = True
    sink.release.set()
    events = Announcer(sink, BODY)
    events.post("Normal", "Lost", "note")
    events.post("Normal", "Kept", "note")
    await events.close()
    assert sink.posted == ["Kept"]


async def test_past_the_queue_s_length_the_oldest_waiting_are_dropped(monkeypatch: Any) -> None:
    monkeypatch.setattr(announce, "MAX_WAITING", 3)
    sink = SlowSink()
    events = Announcer(sink, BODY)
    events.post("Normal", "first", "note")
    await asyncio.sleep(0)  # the poster takes the first and waits on the API server
    for n in range(5):
        events.post("Normal", f"e{n}", "note")
    sink.release.set()
    await events.close()
    assert sink.posted == ["first", "e2", "e3", "e4"]


async def test_close_gives_what_is_waiting_a_deadline() -> None:
    sink = SlowSink()  # never released: the API server does not answer
    events = Announcer(sink, BODY)
    events.post("Normal", "Stuck", "note")
    started = asyncio.get_running_loop().time()
    await events.close(seconds=0.1)
    assert asyncio.get_running_loop().time() - started < 2
    assert sink.posted == []
