"""HTTP client for the UWM servers: the upgrade-agent API, the Configuration Portal and the status pages.

One aiohttp session per process (created on first use, closed at shutdown) with connect and total
timeouts, so a hung server costs a bounded wait and never blocks other plans. Answers are parsed into
typed models at this boundary; failures become `ServerError`s that say whether a retry can help
(`transient`) and never carry the agent token.
"""

from __future__ import annotations

import asyncio
import re
from html import unescape
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

STATUS_PATHS = {
    "Management": "/ManagementServer/deployment/status.aspx",
    "Personalization": "/PersonalizationServer/status.aspx",
}
TRANSIENT_RULES = {"busy", "schema-locked"}


class ServerError(RuntimeError):
    """A server call failed. ``rule`` is the guide rule a 409 refusal names; ``transient`` says retry."""

    def __init__(self, server: str, message: str, transient: bool, rule: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(f"server {server}: {message}")
        self.server = server
        self.transient = transient
        self.rule = rule
        self.status = status


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class InstallInfo(_Wire):
    target_version: str | None = Field(None, alias="targetVersion")
    started_at: str | None = Field(None, alias="startedAt")
    finished_at: str | None = Field(None, alias="finishedAt")
    error: str | None = None


class DatabaseInfo(_Wire):
    name: str
    schema_version: str | None = Field(None, alias="schemaVersion")
    lock_holder: str | None = Field(None, alias="lockHolder")
    updates_required: bool = Field(False, alias="updatesRequired")


class ReplicationInfo(_Wire):
    role: Literal["None", "Master", "Subscriber"] = "None"
    enabled: bool = False
    caught_up: bool = Field(True, alias="caughtUp")


class RotationInfo(_Wire):
    load_balanced: bool = Field(False, alias="loadBalanced")
    in_rotation: bool = Field(False, alias="inRotation")
    active_requests: int = Field(0, alias="activeRequests")


class ServiceInfo(_Wire):
    online: bool = True
    virtual_hosts: list[str] = Field(default_factory=list, alias="virtualHosts")


class WebsiteInfo(_Wire):
    name: str | None = None
    default: bool = False
    other_apps_in_root: list[str] = Field(default_factory=list, alias="otherAppsInRoot")


class AgentState(_Wire):
    """The agent's `GET /agent/v1/state` answer (docs/contracts.md, section 2)."""

    name: str
    kind: Literal["Management", "Personalization"]
    version: str
    phase: str
    settled: bool = False
    install: InstallInfo = Field(default_factory=InstallInfo)
    database: DatabaseInfo
    replication: ReplicationInfo = Field(default_factory=ReplicationInfo)
    rotation: RotationInfo = Field(default_factory=RotationInfo)
    faults: list[Any] = Field(default_factory=list)
    service: ServiceInfo = Field(default_factory=ServiceInfo)
    website: WebsiteInfo = Field(default_factory=WebsiteInfo)


class ServerRef(_Wire):
    server: str | None = None
    url: str | None = None
    online: bool = False


class AgentRef(_Wire):
    server: str | None = None
    url: str | None = None


class PolicyInfo(_Wire):
    urls: list[str | None] = Field(default_factory=list)


class ClientServerInfo(_Wire):
    kind: str | None = None
    url: str | None = None
    online: bool = False
    virtual_hosts: list[str] = Field(default_factory=list, alias="virtualHosts")


class ClientsInfo(_Wire):
    """The estate's client configuration (`GET /agent/v1/clients`, docs/contracts.md section 2b)."""

    failover_servers: list[ServerRef] = Field(default_factory=list, alias="failoverServers")
    deployment_agent: AgentRef | None = Field(None, alias="deploymentAgent")
    policy: PolicyInfo = Field(default_factory=PolicyInfo)
    dns_records: dict[str, ServerRef] = Field(default_factory=dict, alias="dnsRecords")
    servers: dict[str, ClientServerInfo] = Field(default_factory=dict)
    cut_off: list[str] = Field(default_factory=list, alias="cutOff")


class PortalUpdate(_Wire):
    database: str
    from_version: str | None = Field(None, alias="from")
    to_version: str | None = Field(None, alias="to")


class PortalStatus(_Wire):
    updates_required: list[PortalUpdate] = Field(default_factory=list, alias="updatesRequired")
    status: str = "Idle"


class StatusPage(_Wire):
    ok: bool
    http_status: int
    summary: str
    version: str | None = None


class ServerClient:
    """Calls to the servers; ``token`` is sent as a bearer token and never logged or raised."""

    def __init__(self, token: str, total_timeout: float = 15.0, connect_timeout: float = 5.0) -> None:
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return "ServerClient(token=***)"

    async def session(self) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(timeout=self._timeout,
                                                      connector=aiohttp.TCPConnector(limit=100, limit_per_host=8))
            return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, server: str, method: str, url: str, body: dict[str, Any] | None = None,
                    auth: bool = True) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._token}"
        sess = await self.session()
        try:
            async with sess.request(method, url, json=body, headers=headers) as resp:
                status = resp.status
                try:
                    data: Any = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    data = {"error": (await resp.text())[:200]}
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ServerError(server, f"{method} {_path(url)} did not answer ({type(exc).__name__})",
                              transient=True) from None
        if status == 401:
            raise ServerError(server, "the agent rejected the token (401): check agentSecretRef",
                              transient=False, status=status)
        if status == 409:
            rule = str(data.get("rule", "")) if isinstance(data, dict) else ""
            reason = str(data.get("error", "refused")) if isinstance(data, dict) else "refused"
            raise ServerError(server, f"refused ({rule or 'conflict'}): {reason}", transient=rule in TRANSIENT_RULES,
                              rule=rule or None, status=status)
        if status >= 500:
            raise ServerError(server, f"{method} {_path(url)} answered {status}", transient=True, status=status)
        if status >= 400:
            detail = data.get("error", "") if isinstance(data, dict) else ""
            raise ServerError(server, f"{method} {_path(url)} answered {status}: {detail}", transient=False,
                              status=status)
        return status, data

    async def state(self, server: str, base_url: str) -> AgentState:
        _, data = await self._call(server, "GET", _join(base_url, "/agent/v1/state"))
        try:
            return AgentState.model_validate(data)
        except ValidationError as exc:
            raise ServerError(server, f"unexpected state answer: {exc.errors()[0]['msg']}", transient=True) from None

    async def install(self, server: str, base_url: str, version: str) -> bool:
        """Ask for ``version``; True when accepted (202), False when already there (200)."""
        status, _ = await self._call(server, "POST", _join(base_url, "/agent/v1/install"), {"version": version})
        return status == 202

    async def set_replication(self, server: str, base_url: str, enabled: bool) -> None:
        await self._call(server, "POST", _join(base_url, "/agent/v1/replication"), {"enabled": enabled})

    async def set_rotation(self, server: str, base_url: str, in_rotation: bool) -> None:
        await self._call(server, "POST", _join(base_url, "/agent/v1/rotation"), {"inRotation": in_rotation})

    async def clients(self, server: str, base_url: str) -> ClientsInfo:
        _, data = await self._call(server, "GET", _join(base_url, "/agent/v1/clients"))
        try:
            return ClientsInfo.model_validate(data)
        except ValidationError as exc:
            raise ServerError(server, f"unexpected clients answer: {exc.errors()[0]['msg']}", transient=True) from None

    async def change_clients(self, server: str, base_url: str, action: str, **fields: Any) -> None:
        """One change of the estate's client configuration (`POST /agent/v1/clients`)."""
        await self._call(server, "POST", _join(base_url, "/agent/v1/clients"), {"action": action, **fields})

    async def set_online(self, server: str, base_url: str, online: bool) -> None:
        await self._call(server, "POST", _join(base_url, "/agent/v1/service"), {"online": online})

    async def portal_status(self, server: str, base_url: str) -> PortalStatus:
        _, data = await self._call(server, "GET", _join(base_url, "/ServerConfigurationPortal/DatabaseUpdates"),
                                   auth=False)
        return PortalStatus.model_validate(data)

    async def portal_update_selected(self, server: str, base_url: str, databases: list[str]) -> None:
        """CLOSE whatever the portal still shows (a stale result), then UPDATE SELECTED."""
        await self._call(server, "POST", _join(base_url, "/ServerConfigurationPortal/DatabaseUpdates/Close"),
                         auth=False)
        url = _join(base_url, "/ServerConfigurationPortal/DatabaseUpdates/UpdateSelected")
        await self._call(server, "POST", url, {"databases": databases}, auth=False)

    async def status_page(self, server: str, base_url: str, kind: str) -> StatusPage:
        """The guide's test: the status page confirms the connection (200) once the server has settled."""
        sess = await self.session()
        url = _join(base_url, STATUS_PATHS[kind])
        try:
            async with sess.get(url) as resp:
                text = await resp.text()
                return StatusPage(ok=resp.status == 200, http_status=resp.status, summary=_summary(text),
                                  version=_detail(text, "Version"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            return StatusPage(ok=False, http_status=0, summary=f"no answer ({type(exc).__name__})")


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + path


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1]


def _summary(html: str) -> str:
    """A one-line gist of a status page for messages: its result line, else its title or first text."""
    m = re.search(r'<p id="result"[^>]*>(.*?)</p>', html, re.I | re.S) or re.search(r"<title>(.*?)</title>",
                                                                                      html, re.I | re.S)
    text = m.group(1) if m else re.sub(r"<[^>]+>", " ", html)
    return unescape(" ".join(text.split()))[:160]


def _detail(html: str, label: str) -> str | None:
    """The value of a `<th>label</th><td>value</td>` row of a status page."""
    m = re.search(rf"<th>\s*{re.escape(label)}\s*</th>\s*<td>(.*?)</td>", html, re.I | re.S)
    return unescape(m.group(1).strip()) if m else None
