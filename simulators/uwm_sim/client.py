"""`AgentClient`: a small async client of one simulated server (agent API, portal, status page).

Why: the simulators' own tests, scripted manual upgrades and benchmarks all speak the same HTTP; a
typed client keeps them short and makes the contract's paths live in one place on the client side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

STATUS_PATHS = {"Management": "/ManagementServer/deployment/status.aspx",
                "Personalization": "/PersonalizationServer/status.aspx"}
PORTAL = "/ServerConfigurationPortal"


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def rule(self) -> str | None:
        return self.body.get("rule") if isinstance(self.body, dict) else None

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None


class AgentClient:
    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                      headers: dict[str, str] | None = None, form: dict[str, Any] | None = None) -> Reply:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        hdrs = dict(headers or {})
        if auth and self._token:
            hdrs["Authorization"] = f"Bearer {self._token}"
        kwargs: dict[str, Any] = {"headers": hdrs}
        if form is not None:
            kwargs["data"] = form
        elif body is not None:
            kwargs["json"] = body
        async with self._session.request(method, self.base_url + path, **kwargs) as resp:
            text = await resp.text()
            parsed: Any = None
            if resp.content_type == "application/json":
                parsed = json.loads(text) if text else None
            return Reply(resp.status, parsed, text)

    async def state(self, wait_for_change: int | None = None, since: str | None = None) -> Reply:
        """The state; with `wait_for_change`, once its `stateVersion` is no longer `since` (or after that
        many seconds)."""
        if wait_for_change is None:
            return await self.request("GET", "/agent/v1/state")
        query = f"?waitForChange={wait_for_change}" + (f"&since={since}" if since else "")
        return await self.request("GET", "/agent/v1/state" + query)

    async def install(self, version: str) -> Reply:
        return await self.request("POST", "/agent/v1/install", {"version": version})

    async def replication(self, enabled: bool) -> Reply:
        return await self.request("POST", "/agent/v1/replication", {"enabled": enabled})

    async def rotation(self, in_rotation: bool) -> Reply:
        return await self.request("POST", "/agent/v1/rotation", {"inRotation": in_rotation})

    async def fault(self, kind: str, count: int = 1, delay_ms: int = 0) -> Reply:
        return await self.request("POST", "/agent/v1/faults", {"kind": kind, "count": count, "delayMs": delay_ms})

    async def clear_faults(self) -> Reply:
        return await self.request("DELETE", "/agent/v1/faults")

    async def clients(self) -> Reply:
        return await self.request("GET", "/agent/v1/clients")

    async def clients_action(self, action: str, **fields: Any) -> Reply:
        return await self.request("POST", "/agent/v1/clients", {"action": action, **fields})

    async def service(self, online: bool, force: bool = False) -> Reply:
        return await self.request("POST", "/agent/v1/service", {"online": online, "force": force})

    async def journal(self, since: int = 0, server: str | None = None) -> list[dict[str, Any]]:
        query = f"?since={since}" + (f"&server={server}" if server else "")
        reply = await self.request("GET", "/agent/v1/journal" + query)
        if reply.status != 200:
            raise RuntimeError(f"journal: HTTP {reply.status}: {reply.text}")
        return [json.loads(line) for line in reply.text.splitlines() if line.strip()]

    async def portal(self) -> Reply:
        return await self.request("GET", f"{PORTAL}/DatabaseUpdates", auth=False,
                                  headers={"Accept": "application/json"})

    async def update_selected(self, databases: list[str]) -> Reply:
        return await self.request("POST", f"{PORTAL}/DatabaseUpdates/UpdateSelected", {"databases": databases},
                                  auth=False, headers={"Accept": "application/json"})

    async def update_all(self) -> Reply:
        return await self.request("POST", f"{PORTAL}/DatabaseUpdates/UpdateAll", auth=False,
                                  headers={"Accept": "application/json"})

    async def status_page(self, kind: str) -> Reply:
        return await self.request("GET", STATUS_PATHS[kind], auth=False)
