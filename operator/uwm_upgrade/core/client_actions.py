"""The effects of strategy CleanInstall on the estate's client configuration and on servers' service.

Part of the `Action` union (`actions.py`); each names its step, and `agent`/`agent_url`, the server
whose upgrade agent is asked (the estate's client configuration is answered by every server's agent,
docs/contracts.md section 2b). Like every effect, none ends its step by itself: the step succeeds when a
later observation shows the change (`CompleteStep`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .models import StepKey


@dataclass(frozen=True)
class AddFailoverServer:
    """The new Management Server's URL into the Failover Server List (before it comes online)."""

    step: StepKey
    agent: str
    agent_url: str
    url: str
    effect: ClassVar[bool] = True

    @property
    def message(self) -> str:
        return f"add {self.agent} ({self.url}) to the Failover Server List"


@dataclass(frozen=True)
class RemoveFailoverServer:
    """The old Management Server's URL out of the Failover Server List (before it goes offline)."""

    step: StepKey
    agent: str
    agent_url: str
    url: str
    effect: ClassVar[bool] = True

    @property
    def message(self) -> str:
        return f"remove {self.agent} ({self.url}) from the Failover Server List"


@dataclass(frozen=True)
class AddVirtualHost:
    """The virtual host name clients use, on the new Personalization Server (before DNS points at it)."""

    step: StepKey
    agent: str
    agent_url: str
    host: str
    effect: ClassVar[bool] = True

    @property
    def message(self) -> str:
        return f"add virtual host {self.host} to {self.agent}"


@dataclass(frozen=True)
class BringOnline:
    step: StepKey
    agent: str
    agent_url: str
    effect: ClassVar[bool] = True

    @property
    def message(self) -> str:
        return f"bring {self.agent} ({self.agent_url}) online"


@dataclass(frozen=True)
class TakeOffline:
    """Decommission the old server: it stops serving clients (none points at it any more)."""

    step: StepKey
    agent: str
    agent_url: str
    effect: ClassVar[bool] = True

    @property
    def message(self) -> str:
        return f"take {self.agent} ({self.agent_url}) offline"


@dataclass(frozen=True)
class RedeployDeploymentAgent:
    """Deploy the Deployment Agent again with the new Management Server's URL."""

    step: StepKey
    agent: str
    agent_url: str
    previous: str | None
    url: str
    effect: ClassVar[bool] = True

    @property
    def message(self) -> str:
        return f"redeploy the Deployment Agent: {self.previous or 'none'} -> {self.url}"


@dataclass(frozen=True)
class DeployPolicy:
    """Deploy an Environment Manager policy whose Personalization Server URLs are the new servers'."""

    step: StepKey
    agent: str
    agent_url: str
    previous: tuple[str, ...]
    urls: tuple[str, ...]
    effect: ClassVar[bool] = True

    @property
    def message(self) -> str:
        return f"deploy the Environment Manager policy: [{', '.join(self.previous)}] -> [{', '.join(self.urls)}]"


@dataclass(frozen=True)
class SwitchDnsRecord:
    """Point the DNS record of a virtual host name at the new Personalization Server."""

    step: StepKey
    agent: str
    agent_url: str
    host: str
    previous: str | None
    url: str
    effect: ClassVar[bool] = True

    @property
    def message(self) -> str:
        return f"switch DNS record {self.host}: {self.previous or 'none'} -> {self.url}"


ClientEffect = (AddFailoverServer | RemoveFailoverServer | AddVirtualHost | BringOnline | TakeOffline
                | RedeployDeploymentAgent | DeployPolicy | SwitchDnsRecord)
CLIENT_EFFECT_TYPES = (AddFailoverServer, RemoveFailoverServer, AddVirtualHost, BringOnline, TakeOffline,
                       RedeployDeploymentAgent, DeployPolicy, SwitchDnsRecord)
