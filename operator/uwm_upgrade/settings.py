"""The operator's settings: one frozen object, built by `uwm-upgrade run` from its flags.

It reaches the handlers through kopf's memo (`kopf.run(memo=kopf.Memo(settings=...))`), and the engine
through the `Runtime` the startup handler builds from it, instead of environment variables that the
command line wrote and the handlers read when they were imported: the settings are then exactly those
of this run, visible in one place, and a test can hand any of them to the handlers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .adapters.server_policy import ServerPolicy
from .core.context import Limits
from .engine.leader import DEFAULT_LEASE_NAME
from .engine.overlap import Scope
from .engine.selector import Selector

GLOB_CHARACTERS = "*?[!"
LEASE_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SettingsError(ValueError):
    """A setting is out of range or unreadable; the message names the flag."""


class LogFormat(StrEnum):
    """`--log-format`: kopf's plain text, its verbose text, or one JSON object per line."""

    PLAIN = "plain"
    FULL = "full"
    JSON = "json"


@dataclass(frozen=True)
class Settings:
    """What `uwm-upgrade run` was asked to do. Defaults are the flags' defaults."""

    namespaces: tuple[str, ...] = ()
    """`-n/--namespace`: the namespaces to watch (glob patterns allowed); empty: the whole cluster."""

    all_namespaces: bool = False
    """`-A/--all-namespaces`: watch the whole cluster (exclusive with `namespaces`)."""

    selector: Selector = field(default_factory=Selector)
    """`-l/--selector`, parsed: only plans whose labels match are handled; empty: every plan."""

    log_format: LogFormat = LogFormat.PLAIN
    """`--log-format`: how the operator's log lines are written."""

    verbose: bool = False
    """`-v/--verbose`: kopf's debug logging."""

    liveness_port: int = 8080
    """`--liveness-port`: kopf's `/healthz` on this port, on every address; 0: none."""

    metrics_port: int = 9090
    """`--metrics-port`: Prometheus `/metrics` on this port, on every address; 0: none."""

    standalone: bool = False
    """`--standalone`: no leader election; this process acts on every plan it sees (one replica only)."""

    lease_name: str = DEFAULT_LEASE_NAME
    """`--lease-name`: the coordination.k8s.io Lease, one in each namespace of plans, that replicas elect
    their leader by (every operator watching the same plans must use the same name)."""

    lease_seconds: float = 15.0
    """`--lease-seconds`: how long a leader's Lease lasts unrenewed; a standby takes over within about this
    long after the leader stops, and a leader that cannot renew stops acting after two thirds of it."""

    install_timeout: float | None = None
    """`--install-timeout` in seconds: a server's install step fails after this long; None: the engine's
    default (`Limits.install_seconds`)."""

    server_policy: ServerPolicy = field(default_factory=ServerPolicy)
    """`--allow-server-host`, `--allow-server-cidr`, `--allow-insecure-http`: where plans' servers may be
    (adapters/server_policy.py); nothing given: any host (a warning at start), https for the token."""
    replication_timeout: float | None = None
    """`--replication-timeout` in seconds: the subscribers' catch-up step (VerifyReplication) fails after this
    long; None: the engine's default (`Limits.replication_seconds`)."""

    def __post_init__(self) -> None:
        if self.namespaces and self.all_namespaces:
            raise SettingsError("--namespace and --all-namespaces exclude each other")
        for flag, port in (("--liveness-port", self.liveness_port), ("--metrics-port", self.metrics_port)):
            if not 0 <= port <= 65535:
                raise SettingsError(f"{flag} must be a port number (0..65535, 0 disables), not {port}")
        if not 3 <= self.lease_seconds <= 300:
            raise SettingsError(f"--lease-seconds must be between 3 and 300, not {self.lease_seconds}")
        if not LEASE_NAME.match(self.lease_name):
            raise SettingsError(f"--lease-name must be a DNS-1123 name (lower-case letters, digits, '-', '.'; at most "
                                f"253), not {self.lease_name!r}")
        for flag, seconds in (("--install-timeout", self.install_timeout),
                              ("--replication-timeout", self.replication_timeout)):
            if seconds is not None and not seconds > 0:
                raise SettingsError(f"{flag} must be a positive number of seconds, not {seconds}")

    @property
    def cluster_wide(self) -> bool:
        """Watch every namespace: with `-A`, or when no namespace is given."""
        return self.all_namespaces or not self.namespaces

    @property
    def scans_namespaces(self) -> bool:
        """Whether kopf must list namespaces: only to match glob patterns or to watch the whole cluster.
        Exact names need no such permission (the chart grants none)."""
        return self.cluster_wide or any(ch in ns for ns in self.namespaces for ch in GLOB_CHARACTERS)

    @property
    def scope(self) -> Scope:
        """Which plans the overlap check may list: the whole cluster's, or those of the exact namespaces."""
        exact = tuple(ns for ns in self.namespaces if not any(ch in ns for ch in GLOB_CHARACTERS))
        return Scope(cluster_wide=self.cluster_wide, namespaces=exact)

    def limits(self, base: Limits) -> Limits:
        """The engine's limits `base`, with this run's timeouts."""
        limits = base if self.install_timeout is None else replace(base, install_seconds=self.install_timeout)
        if self.replication_timeout is not None:
            limits = replace(limits, replication_seconds=self.replication_timeout)
        return limits


def settings_of(memo: Any) -> Settings:
    """The settings in kopf's memo (the operator's own, or a per-plan copy of it, which shares them)."""
    found = getattr(memo, "settings", None)
    if not isinstance(found, Settings):
        raise SettingsError("kopf's memo carries no uwm_upgrade Settings: start the operator with "
                            "`uwm-upgrade run`, which passes them as kopf.run(memo=...), not with `kopf run`")
    return found
