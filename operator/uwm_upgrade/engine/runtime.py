"""Process-wide state of the engine: the Kubernetes adapter, the leadership, the HTTP clients, the Secrets
read (cached briefly), and per plan its estate, its step timers and when its deletion was first seen.

The handlers' startup builds one `Runtime` from the operator's Settings and hands it to every loop and
delete handler through kopf's memo.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from dataclasses import dataclass, field

from ..adapters.database import Database
from ..adapters.kube import Kube, KubeError
from ..adapters.server_policy import ServerPolicy
from ..adapters.servers import ServerClient
from ..core.context import Limits
from ..core.models import UpgradePlanSpec
from ..core.observations import redact
from .credentials import PlanCredentials, read_credentials, read_licenses
from .leader import Leadership, Standalone
from .observe import Estate
from .overlap import PlanIndex, Resolver, Scope
from .timers import StepTimers
from .watch import EstateWatch

# The loop's own pace, not the operator's settings: look again within a second while a plan works, every
# 5 s while it waits; the step timeouts are the core's defaults unless the settings say otherwise.
LOOP_LIMITS = Limits(poll_seconds=1.0, idle_seconds=5.0)


@dataclass
class Runtime:
    """Process-wide state: the Kubernetes adapter, the leadership, one HTTP client per agent token and TLS
    material, the loop's limits and the server policy (the handlers' startup builds it from the Settings,
    limits by `Settings.limits(LOOP_LIMITS)`). Its repr shows neither the cached Secret values nor the
    clients (keyed by a digest of what they hold)."""

    kube: Kube
    limits: Limits = LOOP_LIMITS
    policy: ServerPolicy = field(default_factory=ServerPolicy)
    leadership: Leadership = field(default_factory=Standalone)
    scope: Scope = field(default_factory=Scope)  # which namespaces' plans this operator watches
    resolver: Resolver = field(default_factory=Resolver)
    clients: dict[str, ServerClient] = field(default_factory=dict, repr=False)
    estates: dict[str, Estate] = field(default_factory=dict, repr=False)
    loops: set[str] = field(default_factory=set)  # uids of the plans whose loop runs in this process
    timers: dict[str, StepTimers] = field(default_factory=dict, repr=False)  # per plan uid
    watches: dict[str, EstateWatch] = field(default_factory=dict, repr=False)  # per plan uid: its long polls
    plans: PlanIndex | None = None  # every plan this operator watches (kopf's index), for the overlap check
    teardowns: dict[str, float] = field(default_factory=dict)  # plan uid -> when this process saw it deleted

    secrets: dict[tuple[str, str, str], tuple[float, str]] = field(default_factory=dict, repr=False)
    secret_ttl: float = 15.0

    async def secret(self, namespace: str, name: str, key: str) -> str:
        """A Secret's value, re-read at most every `secret_ttl` seconds (a rotated Secret is picked up)."""
        now = asyncio.get_running_loop().time()
        cached = self.secrets.get((namespace, name, key))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            value = await self.kube.secret_value(namespace, name, key)
        except UnicodeDecodeError:
            raise KubeError(f"Secret {namespace}/{name} key {key!r} is not UTF-8 text", transient=False) from None
        self.secrets[(namespace, name, key)] = (now + self.secret_ttl, value)
        return value

    def scrub(self, text: str) -> str:
        """`text` without any Secret value this process has read (whole or trimmed), then the core's redaction."""
        for _, value in self.secrets.values():
            for form in {value, value.strip()}:
                if len(form) >= 4:
                    text = text.replace(form, "***")
        return redact(text)

    def client(self, credentials: PlanCredentials) -> ServerClient:
        key = credentials.client_key()
        if key not in self.clients:
            # one long poll per watched server stays open beside the calls: room for many estates
            self.clients[key] = ServerClient(credentials.token, self.policy, credentials.tls, connections=4096)
        return self.clients[key]

    async def close(self) -> None:
        await self.leadership.close()
        for c in self.clients.values():
            await c.close()
        self.kube.close()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def time_zone(spec: UpgradePlanSpec) -> dt.tzinfo | None:
    """spec.maintenanceWindow's time zone from the time zone database (the system's, else the `tzdata`
    package's); None without a window or for a zone the database does not know."""
    if spec.maintenance_window is None:
        return None
    try:
        return zoneinfo.ZoneInfo(spec.maintenance_window.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


async def estate_for(runtime: Runtime, uid: str, namespace: str, spec: UpgradePlanSpec) -> Estate:
    """Reach the plan's estate with the credentials of its (labelled) Secrets; health streaks are kept per
    plan. Raises `KubeError` naming the Secret that cannot be used."""
    return (await reach(runtime, uid, namespace, spec))[0]


async def reach(runtime: Runtime, uid: str, namespace: str, spec: UpgradePlanSpec) -> tuple[Estate, PlanCredentials]:
    """`estate_for`, and the credentials it was reached with (the loop hashes their database targets)."""
    credentials = await read_credentials(runtime.secret, namespace, spec)
    dbs = {name: Database(name, cs) for name, cs in credentials.connection_strings.items()}
    old = runtime.estates.get(uid)
    licenses = await read_licenses(runtime.secret, namespace, spec)
    estate = Estate(runtime.client(credentials), dbs, old.health if old else {}, licenses.texts, licenses.problems,
                    portals=old.portals if old else {})
    runtime.estates[uid] = estate
    return estate, credentials
