"""HTTP client for the UWM servers: the upgrade-agent API, the Configuration Portal and the status pages.

One aiohttp session per process (created on first use, closed at shutdown) with connect and total
timeouts, so a hung server costs a bounded wait and never blocks other plans. Answers are parsed into
typed models at this boundary; failures become `ServerError`s that say whether a retry can help
(`transient`) and never carry the agent token.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Literal, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.observations import NOT_SENT, printable
from .server_policy import AddressRefusedError, PolicyResolver, PolicyRule, ServerPolicy
from .tls import TlsMaterial, ssl_context

MAX_ANSWER_BYTES = 1 << 20  # an answer larger than this is refused, never read whole
MAX_ERROR_CHARS = 200
RULE_ID = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
VERSION = re.compile(r"^[0-9A-Za-z]{1,64}$")
STATUS_PATHS = {
    "Management": "/ManagementServer/deployment/status.aspx",
    "Personalization": "/PersonalizationServer/status.aspx",
}
TRANSIENT_RULES = {"busy", "schema-locked"}


class ServerError(RuntimeError):
    """A server call failed. ``rule`` is the guide rule a 409 refusal names; ``transient`` says retry;
    ``policy`` the server-policy rule that refused the call before it was made."""

    def __init__(self, server: str, message: str, transient: bool, rule: str | None = None,
                 status: int | None = None, policy: PolicyRule | None = None) -> None:
        super().__init__(f"server {server}: {message}")
        self.server = server
        self.detail = message
        self.transient = transient
        self.rule = rule
        self.status = status
        self.policy = policy


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
    # What the state says, as a digest (None: an agent that cannot be long-polled): a long poll asks for
    # the state once it is no longer this (docs/contracts.md section 2a).
    state_version: str | None = Field(None, alias="stateVersion", pattern=VERSION.pattern)


def answered_state(server: str, data: Any) -> AgentState | None:
    """The `state` an agent's answer to a change carries (docs/contracts.md section 2: its state once the
    change is made), if it is one, of that server: None when absent or not a state (the change itself went
    through; whoever needs the state asks for it)."""
    state = data.get("state") if isinstance(data, dict) else None
    if not isinstance(state, dict):
        return None
    try:
        found = AgentState.model_validate(state)
    except ValidationError:
        return None
    return found if found.name == server else None


class ServerRef(_Wire):
    server: str | None = None
    url: str | None = None
    online: bool = False


class LicenseInfo(_Wire):
    fingerprint: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{16,64}$")


class AgentRef(_Wire):
    server: str | None = None
    url: str | None = None
    license: LicenseInfo | None = None


class BindingInfo(_Wire):
    host: str | None = None
    host_header: str | None = Field(None, alias="hostHeader")


class HostWebsitesInfo(_Wire):
    default_website_url: str | None = Field(None, alias="defaultWebsiteUrl")


class PolicyInfo(_Wire):
    urls: list[str | None] = Field(default_factory=list)


class ClientServerInfo(_Wire):
    kind: str | None = None
    url: str | None = None
    online: bool = False
    virtual_hosts: list[str] = Field(default_factory=list, alias="virtualHosts")
    website: BindingInfo | None = None


class ClientsInfo(_Wire):
    """The estate's client configuration (`GET /agent/v1/clients`, docs/contracts.md section 2b)."""

    failover_servers: list[ServerRef] = Field(default_factory=list, alias="failoverServers")
    deployment_agent: AgentRef | None = Field(None, alias="deploymentAgent")
    policy: PolicyInfo = Field(default_factory=PolicyInfo)
    dns_records: dict[str, ServerRef] = Field(default_factory=dict, alias="dnsRecords")
    websites: dict[str, HostWebsitesInfo] = Field(default_factory=dict)
    servers: dict[str, ClientServerInfo] = Field(default_factory=dict)
    cut_off: list[str] = Field(default_factory=list, alias="cutOff")


class PortalUpdate(_Wire):
    database: str
    from_version: str | None = Field(None, alias="from")
    to_version: str | None = Field(None, alias="to")


class PortalStatus(_Wire):
    updates_required: list[PortalUpdate] = Field(default_factory=list, alias="updatesRequired")
    status: str = "Idle"
    by: str | None = None  # the server that ran the last migration
    error: str | None = None  # why it failed


PORTAL = "/ServerConfigurationPortal/DatabaseUpdates"
PAGE_BYTES = 65536  # a status page is read up to this size; the rest is ignored
PAGE_TESTS = 32  # at most this many tests are read from it
PAGE_FIELD = 128  # characters kept of any value read from it


class StatusPage(_Wire):
    """A status page as read: its code, its result line, and the details the guide says to check (the
    server's name, its version, the tests and whether each passed), bounded and printable."""

    ok: bool  # it answered 200 ("Connection successful"); the details are judged by the caller
    http_status: int
    summary: str
    version: str | None = None
    server: str | None = None
    tests: tuple[tuple[str, bool], ...] | None = None  # None: the page lists no tests


class ServerClient:
    """Calls to the servers; ``token`` is sent as a bearer token and never logged or raised.

    Every call is first checked against the operator's server policy (`server_policy.py`): a refused
    server is never connected to, and the addresses a host name resolves to are checked again when the
    connection is made. Redirects are not followed (a redirect could lead the token elsewhere).
    """

    def __init__(self, token: str, policy: ServerPolicy | None = None, tls: TlsMaterial | None = None,
                 total_timeout: float = 15.0, connect_timeout: float = 5.0, connections: int = 100) -> None:
        problem = token_problem(token)
        if problem:
            raise ValueError(f"the agent token {problem}")
        self._token = token
        self._policy = policy or ServerPolicy()
        self._ssl = ssl_context(tls)
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout)
        self._connect_timeout = connect_timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return "ServerClient(token=***)"

    async def session(self) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is None or self._session.closed:
                # a long poll per server stays open beside the calls: as many connections as they need
                connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=8, ssl=self._ssl,
                                                 resolver=PolicyResolver(self._policy))
                self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
            return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _fetch(self, server: str, method: str, url: str, body: dict[str, Any] | None = None,
                     auth: bool = True, accept_json: bool = True, within: float | None = None,
                     query: str = "") -> tuple[int, bytes]:
        """One request within the policy (judged on `url`; `query` is the operator's own, appended after):
        the status and at most `MAX_ANSWER_BYTES` of the answer."""
        refusal = self._policy.check_url(url, carries_token=auth)
        if refusal is not None:
            raise ServerError(server, str(refusal), transient=False, policy=refusal.rule)
        headers = {"Accept": "application/json"} if accept_json else {}
        if auth:
            headers["Authorization"] = f"Bearer {self._token}"
        sess = await self.session()
        limit = aiohttp.ClientTimeout(total=within, connect=self._connect_timeout) if within else self._timeout
        try:
            async with sess.request(method, f"{url}?{query}" if query else url, json=body, headers=headers,
                                    allow_redirects=False, timeout=limit) as resp:
                return resp.status, await _read_bounded(resp)
        except aiohttp.ClientConnectorError as exc:
            refused = exc.os_error if isinstance(exc.os_error, AddressRefusedError) else None
            if refused is not None:
                raise ServerError(server, str(refused.refusal), transient=False, policy=refused.refusal.rule) from None
            if isinstance(exc, aiohttp.ClientConnectorCertificateError):
                raise ServerError(server, f"{method} {_path(url)}: the server's TLS certificate is not trusted"
                                  " (spec.tls.caBundleSecretRef names the CA bundle)", transient=False) from None
            raise ServerError(server, f"{method} {_path(url)} did not answer ({type(exc).__name__})",
                              transient=True) from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:  # ValueError: aiohttp's bad-header check
            raise ServerError(server, f"{method} {_path(url)} did not answer ({type(exc).__name__})",
                              transient=True) from None

    async def _call(self, server: str, method: str, url: str, body: dict[str, Any] | None = None,
                    auth: bool = True, within: float | None = None, query: str = "") -> tuple[int, Any]:
        """A JSON call. Errors keep only the HTTP status, the contract's `rule` and a short printable
        `error` of a JSON object answer: nothing else a server says reaches a message."""
        status, raw = await self._fetch(server, method, url, body, auth, within=within, query=query)
        where = f"{method} {_path(url)}"
        data = _json(raw)
        error, rule = _error_fields(data)
        if error:  # a server that echoes the token back does not get it into a message
            error = error.replace(self._token, "***")
        if status == 401:
            raise ServerError(server, "the agent rejected the token (401): check agentSecretRef",
                              transient=False, status=status)
        if status == 409:
            raise ServerError(server, f"refused ({rule or 'conflict'}): {error or 'refused'}",
                              transient=rule in TRANSIENT_RULES, rule=rule, status=status)
        if 300 <= status < 400:
            raise ServerError(server, f"{where} answered {status}, a redirect, which the operator does not follow",
                              transient=False, status=status)
        if status >= 400:
            detail = f": {error}" if error else ""
            raise ServerError(server, f"{where} answered {status}{detail}", transient=status >= 500, status=status)
        if len(raw) > MAX_ANSWER_BYTES:
            raise ServerError(server, f"{where} answered {status} with more than {MAX_ANSWER_BYTES} bytes",
                              transient=True, status=status)
        if data is _NOT_JSON and raw.strip():
            raise ServerError(server, f"{where} answered {status} with something that is not JSON",
                              transient=True, status=status)
        return status, None if data is _NOT_JSON else data

    async def _model(self, server: str, url: str, model: type[WireModel], what: str, auth: bool = True,
                     within: float | None = None, query: str = "") -> WireModel:
        _, data = await self._call(server, "GET", url, auth=auth, within=within, query=query)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ServerError(server, f"unexpected {what} answer: {_first_error(exc)}", transient=True) from None

    async def state(self, server: str, base_url: str, *, wait: int | None = None,
                    since: str | None = None) -> AgentState:
        """The agent's state; with `wait`, once its `stateVersion` is no longer `since` (or after `wait`
        seconds: a long poll, answered at once by an agent that does not know it)."""
        if wait is None:
            return await self._model(server, _join(base_url, "/agent/v1/state"), AgentState, "state")
        if since is not None and not VERSION.match(since):
            raise ServerError(server, "a state version must be letters and digits", transient=False)
        query = f"waitForChange={int(wait)}" + (f"&since={since}" if since else "")
        return await self._model(server, _join(base_url, "/agent/v1/state"), AgentState, "state",
                                 within=wait + (self._timeout.total or 15.0), query=query)

    async def install(self, server: str, base_url: str, version: str) -> AgentState | None:
        """Ask for ``version`` (202 accepted, 200 already there); the state the agent answered with."""
        _, data = await self._call(server, "POST", _join(base_url, "/agent/v1/install"), {"version": version})
        return answered_state(server, data)

    async def set_replication(self, server: str, base_url: str, enabled: bool) -> AgentState | None:
        """Replication on or off; the state the agent answered with."""
        _, data = await self._call(server, "POST", _join(base_url, "/agent/v1/replication"), {"enabled": enabled})
        return answered_state(server, data)

    async def set_rotation(self, server: str, base_url: str, in_rotation: bool) -> AgentState | None:
        """In or out of rotation; the state the agent answered with."""
        _, data = await self._call(server, "POST", _join(base_url, "/agent/v1/rotation"), {"inRotation": in_rotation})
        return answered_state(server, data)

    async def clients(self, server: str, base_url: str) -> ClientsInfo:
        return await self._model(server, _join(base_url, "/agent/v1/clients"), ClientsInfo, "clients")

    async def change_clients(self, server: str, base_url: str, action: str, **fields: Any) -> None:
        """One change of the estate's client configuration (`POST /agent/v1/clients`)."""
        await self._call(server, "POST", _join(base_url, "/agent/v1/clients"), {"action": action, **fields})

    async def set_online(self, server: str, base_url: str, online: bool) -> None:
        await self._call(server, "POST", _join(base_url, "/agent/v1/service"), {"online": online})

    async def portal_status(self, server: str, base_url: str) -> PortalStatus:
        return await self._model(server, _join(base_url, PORTAL), PortalStatus, "portal", auth=False)

    async def portal_close(self, server: str, base_url: str) -> None:
        """CLOSE: what the guide does once the status says Upgrade Successful (back to the Summary page)."""
        await self._call(server, "POST", _join(base_url, f"{PORTAL}/Close"), auth=False)

    async def portal_update_selected(self, server: str, base_url: str, databases: list[str]) -> None:
        """UPDATE SELECTED, after reading the portal: a Failed result is never closed nor migrated over
        (its evidence stays for a human), a migration under way is not asked twice, and a lingering
        Upgrade Successful is CLOSEd first, as the guide says to do after it (CLOSE only then)."""
        try:
            portal = await self.portal_status(server, base_url)
        except ServerError as exc:  # nothing was sent: asking again later is asking for the first time
            raise ServerError(server, f"{exc}; the update was not sent", exc.transient, NOT_SENT, exc.status) from None
        if portal.status == "Failed":
            error = printable(portal.error or "no error given", 200)
            raise ServerError(server, f"the portal reports a failed schema upgrade ({error}): it is never migrated"
                              " over; restore the database from a verified backup first", transient=False,
                              rule="migration-failed")
        if portal.status == "Upgrading":
            raise ServerError(server, "the portal is upgrading a database already; the update was not sent",
                              transient=True, rule=NOT_SENT)
        if portal.status == "Upgrade Successful":
            await self.portal_close(server, base_url)
        await self._call(server, "POST", _join(base_url, f"{PORTAL}/UpdateSelected"), {"databases": databases},
                         auth=False)

    async def status_page(self, server: str, base_url: str, kind: str) -> StatusPage:
        """The guide's test: the status page confirms the connection (200) once the server has settled;
        its details (name, version) and tests are read too, for the caller to check. Nothing of the page but
        those bounded, printable values is kept."""
        url = _join(base_url, STATUS_PATHS[kind])
        try:
            status, raw = await self._fetch(server, "GET", url, auth=False, accept_json=False)
        except ServerError as exc:
            return StatusPage(ok=False, http_status=0, summary=exc.detail)
        text = raw[:PAGE_BYTES].decode("utf-8", errors="replace")
        return StatusPage(ok=status == 200, http_status=status, summary=_summary(text),
                          version=_detail(text, "Version"), server=_detail(text, "Server"), tests=_tests(text))


WireModel = TypeVar("WireModel", AgentState, ClientsInfo, PortalStatus)
_NOT_JSON = object()


def token_problem(token: str) -> str | None:
    """Why `token` cannot be an HTTP bearer token (None: it can). Never says what the token is."""
    if not token:
        return "is empty"
    if token != token.strip():
        return "starts or ends with white space (a line break from `kubectl create secret --from-file`?)"
    if any(not (" " <= ch <= "~") for ch in token):
        return "has characters an HTTP header cannot carry (a line break, a control character or non-ASCII)"
    return None


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    """The answer's body, but never more than one byte past `MAX_ANSWER_BYTES` (then it is refused)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ANSWER_BYTES:
        chunk = await resp.content.read(MAX_ANSWER_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if len(raw) <= MAX_ANSWER_BYTES else _NOT_JSON
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _NOT_JSON


def _error_fields(data: Any) -> tuple[str | None, str | None]:
    """The `error` (printable, bounded) and `rule` (a rule id, else nothing) of a JSON object answer."""
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    rule = data.get("rule")
    text = printable(error, MAX_ERROR_CHARS) if isinstance(error, str) else None
    return text or None, rule if isinstance(rule, str) and RULE_ID.match(rule) else None


def _first_error(exc: ValidationError) -> str:
    """Where and what, without the value the server sent (pydantic's `input`)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the answer"
    return printable(f"{where}: {first['msg']}", MAX_ERROR_CHARS)


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + path


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1]


def _summary(html: str) -> str:
    """A one-line gist of a status page for messages: its result line, else its title or first text."""
    m = re.search(r'<p id="result"[^>]*>(.*?)</p>', html, re.I | re.S) or re.search(r"<title>(.*?)</title>",
                                                                                      html, re.I | re.S)
    return printable(m.group(1) if m else html, 160)


def _detail(html: str, label: str) -> str | None:
    """The value of a `<th>label</th><td>value</td>` row of a status page (None: no such row, or empty)."""
    m = re.search(rf"<th>\s*{re.escape(label)}\s*</th>\s*<td>(.*?)</td>", html, re.I | re.S)
    value = printable(m.group(1), PAGE_FIELD) if m else ""
    return value or None


def _tests(html: str) -> tuple[tuple[str, bool], ...] | None:
    """The page's tests, `<li class="pass|fail">NAME: Pass|Fail</li>` in `<ul id="tests">`: (name, passed);
    an item that says neither Pass nor Fail counts as failed. None when the page lists none."""
    block = re.search(r'<ul id="tests"[^>]*>(.*?)</ul>', html, re.I | re.S)
    if block is None:
        return None
    found = []
    for m in re.finditer(r'<li(?: class="([^"]*)")?[^>]*>(.*?)</li>', block.group(1), re.I | re.S):
        text = printable(m.group(2), PAGE_FIELD)
        name, _, verdict = text.rpartition(":")
        passed = verdict.strip().lower() == "pass" and (m.group(1) or "pass").lower() == "pass"
        found.append((name.strip() or text, passed))
        if len(found) == PAGE_TESTS:
            break
    return tuple(found) or None
