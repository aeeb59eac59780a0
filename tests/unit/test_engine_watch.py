"""The long polls that keep a plan's view of its servers current (`engine/watch.py`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from uwm_upgrade.adapters.servers import AgentState, ServerError
from uwm_upgrade.core.enums import ReplicationRole, ServerKind
from uwm_upgrade.core.models import Server
from uwm_upgrade.engine import watch as watch_module
from uwm_upgrade.engine.watch import EstateWatch

MS1 = Server("ms-1", ServerKind.MANAGEMENT, "http://ms-1:7751", "mgmt-db", True, ReplicationRole.NONE)
DEADLINE = 5.0


def state(version: str, state_version: str | None) -> AgentState:
    raw: dict[str, Any] = {
        "name": "ms-1", "kind": "Management", "version": version, "phase": "Running", "settled": True,
        "install": {"targetVersion": version, "error": None},
        "database": {"name": "mgmt-db", "schemaVersion": version},
        "replication": {"role": "None", "enabled": False, "caughtUp": True},
        "rotation": {"loadBalanced": True, "inRotation": True, "activeRequests": 0}}
    if state_version is not None:
        raw["stateVersion"] = state_version
    return AgentState.model_validate(raw)


class Agent:
    """A long-pollable agent: each poll waits until the test hands it an answer (or an error)."""

    def __init__(self) -> None:
        self.polls: list[tuple[int | None, str | None]] = []
        self.answers: asyncio.Queue[AgentState | Exception] = asyncio.Queue()

    async def state(self, server: str, base_url: str, *, wait: int | None = None,
                    since: str | None = None) -> AgentState:
        self.polls.append((wait, since))
        answer = await self.answers.get()
        if isinstance(answer, Exception):
            raise answer
        return answer


async def until(condition: Any) -> None:
    """Poll `condition` until it holds, within the deadline."""
    async def wait() -> None:
        while not condition():  # noqa: ASYNC110 (a condition over several objects, polled with a deadline)
            await asyncio.sleep(0.005)
    await asyncio.wait_for(wait(), DEADLINE)


async def test_a_change_wakes_the_loop_and_the_next_poll_asks_for_a_newer_state() -> None:
    agent, watch = Agent(), EstateWatch()
    watch.follow(agent, [MS1])  # type: ignore[arg-type]  # the fake has what is used
    try:
        await until(lambda: len(agent.polls) == 1)
        assert watch.current("ms-1") is None and agent.polls[0] == (watch_module.WAIT_SECONDS, None)
        agent.answers.put_nowait(state("2023.1", "v1"))
        await until(watch.changed.is_set)
        assert watch.current("ms-1") == state("2023.1", "v1") and watch.live
        await until(lambda: len(agent.polls) == 2)
        assert agent.polls[1] == (watch_module.WAIT_SECONDS, "v1")
        watch.changed.clear()
        agent.answers.put_nowait(state("2023.1", "v1"))  # the wait ran out, nothing changed: no wake-up
        await until(lambda: len(agent.polls) == 3)
        assert not watch.changed.is_set()
        agent.answers.put_nowait(state("2024.1", "v2"))
        await until(watch.changed.is_set)
        current = watch.current("ms-1")
        assert current is not None and current.version == "2024.1"
    finally:
        await watch.close()


@contextlib.asynccontextmanager
async def known_at_v1() -> AsyncIterator[tuple[Agent, EstateWatch]]:
    """A watch of ms-1 whose first poll brought its state "v1", with the next poll open."""
    agent, watch = Agent(), EstateWatch()
    watch.follow(agent, [MS1])  # type: ignore[arg-type]
    try:
        await until(lambda: len(agent.polls) == 1)
        agent.answers.put_nowait(state("2023.1", "v1"))
        await until(lambda: watch.current("ms-1") is not None and len(agent.polls) == 2)
        yield agent, watch
    finally:
        await watch.close()


async def test_an_answer_to_a_poll_sent_before_an_effect_is_not_taken_for_the_state_after_it() -> None:
    async with known_at_v1() as (agent, watch):
        watch.invalidate(["ms-1"])  # the plan just asked ms-1 to install
        assert watch.current("ms-1") is None
        agent.answers.put_nowait(state("2023.1", "v1late"))  # sent before the install: dropped
        await until(lambda: len(agent.polls) == 3)
        assert watch.current("ms-1") is None and agent.polls[2] == (watch_module.WAIT_SECONDS, None)
        watch.remember("ms-1", state("2023.1", "v3"))  # what the turn asked itself
        assert watch.current("ms-1") == state("2023.1", "v3")


async def test_after_an_effect_the_state_its_agent_answered_with_is_current_and_polled_from() -> None:
    """The agent answered the plan's change with its state (`answers.adoptable` took it): the turn does not
    ask again, and the poll that was open before is dropped and sent again from that state, so the agent
    waits for the next change instead of answering at once what the plan already has."""
    async with known_at_v1() as (agent, watch):
        watch.invalidate(["ms-1"])
        watch.remember("ms-1", state("2023.1", "v2"))  # its answer to the change
        assert watch.current("ms-1") == state("2023.1", "v2")
        agent.answers.put_nowait(state("2023.1", "v1late"))  # the poll sent before the change: dropped
        await until(lambda: len(agent.polls) == 3)
        assert agent.polls[2] == (watch_module.WAIT_SECONDS, "v2")
        assert watch.current("ms-1") == state("2023.1", "v2")


async def test_a_failing_watcher_forgets_the_state_and_wakes_the_loop() -> None:
    agent, watch = Agent(), EstateWatch()
    watch.follow(agent, [MS1])  # type: ignore[arg-type]
    try:
        await until(lambda: len(agent.polls) == 1)
        agent.answers.put_nowait(state("2023.1", "v1"))
        await until(lambda: watch.current("ms-1") is not None)
        watch.changed.clear()
        agent.answers.put_nowait(ServerError("ms-1", "connection refused", transient=True))
        await until(watch.changed.is_set)
        assert watch.current("ms-1") is None  # the turn asks the agent itself, and says why it cannot
    finally:
        await watch.close()


async def test_an_agent_that_cannot_be_long_polled_is_polled_and_the_watch_is_not_live(monkeypatch: Any) -> None:
    monkeypatch.setattr(watch_module, "POLL_SECONDS", 0.01)
    agent, watch = Agent(), EstateWatch()
    watch.follow(agent, [MS1])  # type: ignore[arg-type]
    try:
        await until(lambda: len(agent.polls) == 1)
        agent.answers.put_nowait(state("2023.1", None))  # no stateVersion: answered at once, as a plain GET
        await until(lambda: watch.current("ms-1") is not None)
        assert not watch.live  # the loop never sleeps longer than the poll interval
        await until(lambda: len(agent.polls) == 2)
        assert agent.polls[1] == (watch_module.WAIT_SECONDS, None)
    finally:
        await watch.close()


async def test_follow_stops_the_watchers_of_servers_gone_from_the_spec() -> None:
    agent, watch = Agent(), EstateWatch()
    watch.follow(agent, [MS1])  # type: ignore[arg-type]
    await until(lambda: len(agent.polls) == 1)
    agent.answers.put_nowait(state("2023.1", "v1"))
    await until(lambda: watch.current("ms-1") is not None)
    watch.follow(agent, [])  # type: ignore[arg-type]
    assert watch.current("ms-1") is None
    watch.remember("ms-1", state("2023.1", "v1"))  # not watched: not kept either
    assert watch.current("ms-1") is None
    await watch.close()


class LiveAgent:
    """An agent with a state of its own: a poll answers at once when the state differs from `since`, else
    when it changes, or after `wait` seconds."""

    def __init__(self, first: AgentState) -> None:
        self.now, self.polls = first, 0
        self.event = asyncio.Event()

    def change(self, new: AgentState) -> None:
        self.now = new
        self.event.set()
        self.event = asyncio.Event()

    async def state(self, server: str, base_url: str, *, wait: int | None = None,
                    since: str | None = None) -> AgentState:
        self.polls += 1
        if self.now.state_version == since:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), wait)
        return self.now


async def test_an_answer_to_an_effect_older_than_what_the_poll_already_brought_does_not_stall_the_watch() -> None:
    """Seen in a plan of 200 servers: replication was enabled on ps-2 early in an effect that took two
    seconds for all of them; ps-2 caught up meanwhile and its poll brought that. Then the effect ended and
    its answer (enabled, not caught up: older) was adopted, while the open poll waited for a change from
    the newer state: the plan waited for ps-2 to catch up until that poll ran out, 30 s later. The poll
    open when the plan adopts a state is sent again from it, so the agent answers at once if it moved on."""
    agent, watch = LiveAgent(state("2023.1", "v1")), EstateWatch()
    watch.follow(agent, [MS1])  # type: ignore[arg-type]  # the fake has what is used
    try:
        await until(lambda: watch.current("ms-1") == state("2023.1", "v1"))
        answered = state("2024.1", "v2")  # what the agent answered the change with
        agent.change(answered)
        await until(lambda: watch.current("ms-1") == answered)
        agent.change(state("2024.1", "v3"))  # and then it moved on (it caught up), before the effect ended
        await until(lambda: watch.current("ms-1") == state("2024.1", "v3"))
        await asyncio.sleep(0.05)  # the poll from v3 is open
        watch.invalidate(["ms-1"])  # the effect ended: its answer is adopted (`answers.adoptable`)
        watch.remember("ms-1", answered)
        watch.changed.clear()
        await until(lambda: watch.current("ms-1") == state("2024.1", "v3"))
        assert watch.changed.is_set()
    finally:
        await watch.close()
