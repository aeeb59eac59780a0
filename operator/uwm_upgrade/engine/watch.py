"""Each server's state as its agent last said it, kept fresh by one long poll per server.

Why: asking every server for its state before every decision costs a request per server per turn and
still learns of a change only at the next turn. Instead one long poll per server (`GET /agent/v1/state?
waitForChange=...&since=VERSION`, docs/contracts.md section 2a) stays open and is answered the moment that
server's state changes; the plan's loop wakes on it (`changed`) and decides from the states as their
agents last said them, which is what asking them again would give.

A state is used only while it is current: its watcher's poll is open (no error since the answer) and no
effect of this plan touched that server since (`invalidate`; the poll open then is dropped and sent
again, from what the plan then knows), unless the agent's answer to that effect says the state it left
(`answers.adoptable`).
Otherwise the turn asks the agent itself (`observe.py`) and hands the answer back (`remember`). An agent
that answers without a `stateVersion` cannot be long-polled: its watcher asks it every `POLL_SECONDS`
instead, and the loop never waits longer than that for a change (`live` is False).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from ..adapters.servers import AgentState, ServerClient
from ..core.models import Server

WAIT_SECONDS = 30  # how long one long poll stays open before it is asked again
RETRY_FIRST, RETRY_MAX = 0.25, 5.0  # after an error, the wait before asking again (doubling)
POLL_SECONDS = 1.0  # an agent that cannot be long-polled is asked this often
log = logging.getLogger("uwm_upgrade.watch")


class EstateWatch:
    """The long polls of one plan's servers, and the states they last brought."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()  # set whenever a watched state changed (or its watcher failed)
        self._states: dict[str, AgentState] = {}
        self._epoch: dict[str, int] = {}  # bumped by `invalidate`: answers to older polls are dropped
        self._polled: set[str] = set()  # agents that cannot be long-polled
        self._tasks: dict[str, tuple[str, ServerClient, asyncio.Task[None]]] = {}
        self._pokes: dict[str, asyncio.Event] = {}  # set by `invalidate`: the open poll is sent again

    def follow(self, client: ServerClient, servers: Sequence[Server]) -> None:
        """Watch exactly these servers (through `client`): start what is missing, stop what is gone."""
        wanted = {s.name: s for s in servers}
        for name, (url, watched_by, task) in list(self._tasks.items()):
            server = wanted.get(name)
            if server is None or server.url != url or watched_by is not client:
                task.cancel()
                del self._tasks[name]
                self._states.pop(name, None)
        for name, server in wanted.items():
            if name not in self._tasks:
                task = asyncio.get_running_loop().create_task(self._watch(client, server),
                                                              name=f"watch {server.name}")
                self._tasks[name] = (server.url, client, task)

    def current(self, name: str) -> AgentState | None:
        """The server's state as its agent last said it, if that is still its state (else None: ask it)."""
        return self._states.get(name)

    def remember(self, name: str, state: AgentState) -> None:
        """A state the turn asked for itself (after an invalidation, or before the first poll answered), or
        the state an agent answered this plan's change with (`answers.adoptable`): the poll then waits
        for a change from it rather than asking again."""
        if name in self._tasks:
            self._states[name] = state

    def invalidate(self, names: Iterable[str]) -> None:
        """These servers were just asked to change: their states are no longer known."""
        for name in names:
            self._states.pop(name, None)
            self._epoch[name] = self._epoch.get(name, 0) + 1
            poke = self._pokes.get(name)
            if poke is not None:
                poke.set()

    @property
    def watched(self) -> frozenset[str]:
        """The servers whose long polls are open."""
        return frozenset(self._tasks)

    @property
    def live(self) -> bool:
        """Every watched agent can be long-polled: a change of any of them wakes the loop at once."""
        return not self._polled

    async def close(self) -> None:
        tasks = [task for _, _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _poll(self, client: ServerClient, server: Server, since: str | None) -> AgentState | None:
        """One long poll; None when the plan changed the server meanwhile (`invalidate`): the poll is
        dropped at once, not left open until it runs out, since what it waits for a change from may no
        longer be what the plan knows (an effect's answer older than what this poll already brought)."""
        poke = self._pokes.setdefault(server.name, asyncio.Event())
        poke.clear()
        asking = asyncio.ensure_future(client.state(server.name, server.url, wait=WAIT_SECONDS, since=since))
        poked = asyncio.ensure_future(poke.wait())
        try:
            await asyncio.wait({asking, poked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poked.cancel()
            if not asking.done():
                asking.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asking
        return asking.result() if asking.done() and not asking.cancelled() else None

    async def _watch(self, client: ServerClient, server: Server) -> None:
        name, since, delay = server.name, None, RETRY_FIRST
        while True:
            epoch = self._epoch.get(name, 0)
            try:
                state = await self._poll(client, server, since)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a server down or answering garbage: the turn asks it and says why
                log.debug("watching %s: %s", name, exc)
                if self._states.pop(name, None) is not None:
                    self.changed.set()
                since = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            if state is None or self._epoch.get(name, 0) != epoch:  # asked before this plan changed it
                known = self._states.get(name)  # what its agent answered the change with, if kept
                since = known.state_version if known is not None else None
                continue
            if state.state_version is None:
                self._polled.add(name)
                if self._states.get(name) != state:
                    self._states[name] = state
                    self.changed.set()
                await asyncio.sleep(POLL_SECONDS)
                continue
            self._polled.discard(name)
            if state.state_version != since or name not in self._states:
                self._states[name] = state
                self.changed.set()
            since = state.state_version
