"""Where the operator may send requests: the operator-wide server policy.

Why it exists: a plan names its servers' URLs, and the operator sends the plan's agent token there from
inside the cluster. Without a policy anyone allowed to create a plan could point the operator at any
address (a listener of their own, the cloud metadata service, another team's internal API) and read what
comes back in the plan's status. The policy is the operator's, not the plan's: `uwm-upgrade run
--allow-server-host PATTERN --allow-server-cidr CIDR [--allow-insecure-http]` (the chart's
`serverPolicy` values).

The rules, each a `PolicyRule` named in the refusal:
- a server URL is `http(s)://host[:port][/path]`: no user-info, query or fragment (a query would turn the
  fixed agent and status-page paths the operator appends into parameters of some other service);
- `https` for every call that carries the agent token, unless `--allow-insecure-http` (the test bed and
  the demo run plain-http simulators);
- with host patterns and/or CIDRs configured, the host must match a pattern (shell-style, `*.corp.example`,
  case-insensitive) or every address it resolves to must lie in a CIDR. Resolved addresses are checked
  when the connection is made (`PolicyResolver`), so a name cannot be re-pointed after the check;
- link-local, unspecified and multicast addresses (169.254.169.254, the metadata service, among them) are
  refused unless a configured CIDR contains them, whatever else is configured.
With no pattern and no CIDR every other host is allowed, and the operator logs a warning at start.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
HOST_PATTERN = re.compile(r"^[a-z0-9*?.\[\]-]{1,253}$")
NEVER_IMPLICITLY = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"),
                    ipaddress.ip_network("0.0.0.0/32"), ipaddress.ip_network("::/128"),
                    ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("ff00::/8"),
                    ipaddress.ip_network("255.255.255.255/32"))


class PolicyRule(StrEnum):
    """Why a server was refused (named in the plan's status)."""

    URL_SHAPE = "url-shape"
    HTTPS_REQUIRED = "https-required"
    HOST_NOT_ALLOWED = "host-not-allowed"
    ADDRESS_NOT_ALLOWED = "address-not-allowed"


class PolicyError(ValueError):
    """A policy flag's value is unusable; the message names the flag and the value."""


@dataclass(frozen=True)
class Refusal:
    """A server the policy does not allow: the rule and a sentence for the plan's status."""

    rule: PolicyRule
    message: str

    def __str__(self) -> str:
        return f"refused by the operator's server policy ({self.rule}): {self.message}"


class AddressRefusedError(OSError):
    """Raised by `PolicyResolver` instead of returning a refused address (aiohttp wraps it, and the
    server client unwraps it into its own refusal)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


@dataclass(frozen=True)
class ServerPolicy:
    """The servers the operator may call. The default (nothing configured) allows any host but the
    never-implicit addresses, and requires https for token-bearing calls."""

    host_patterns: tuple[str, ...] = ()
    cidrs: tuple[Network, ...] = ()
    allow_insecure_http: bool = False

    @classmethod
    def parse(cls, hosts: list[str] | tuple[str, ...] = (), cidrs: list[str] | tuple[str, ...] = (),
              allow_insecure_http: bool = False) -> ServerPolicy:
        patterns = []
        for raw in hosts:
            pattern = raw.strip().lower().rstrip(".")
            if not HOST_PATTERN.match(pattern):
                raise PolicyError(f"--allow-server-host {raw!r} is not a host name pattern (letters, digits, '.',"
                                  " '-', and the wildcards '*', '?', '[...]')")
            patterns.append(pattern)
        networks: list[Network] = []
        for raw in cidrs:
            try:
                networks.append(ipaddress.ip_network(raw.strip(), strict=False))
            except ValueError:
                raise PolicyError(f"--allow-server-cidr {raw!r} is not an address range like 10.20.0.0/16"
                                  " or fd00::/8") from None
        return cls(tuple(patterns), tuple(networks), allow_insecure_http)

    @property
    def restricted(self) -> bool:
        """Whether hosts are restricted at all (else: any host, and a warning at start)."""
        return bool(self.host_patterns or self.cidrs)

    def describe(self) -> str:
        hosts = ", ".join(self.host_patterns) or "-"
        nets = ", ".join(str(n) for n in self.cidrs) or "-"
        http = "allowed" if self.allow_insecure_http else "refused for token-bearing calls"
        scope = f"hosts {hosts}; CIDRs {nets}" if self.restricted else "any host (no --allow-server-host or " \
            "--allow-server-cidr given)"
        return f"server policy: {scope}; plain http {http}"

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (policies live as long as the process)
    def check_url(self, url: str, carries_token: bool) -> Refusal | None:
        """Refuse `url` before any connection when its shape, scheme or host says so. A host name that
        no pattern matches, while CIDRs are configured, is judged by its addresses at connect time. The
        judgement depends on the URL and the policy alone, so it is made once per URL (a wide plan
        long-polls hundreds of servers, each poll a call)."""
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises on a port that is no number
        except ValueError:
            return Refusal(PolicyRule.URL_SHAPE, f"{_safe(url)} is not a valid URL")
        host = (parts.hostname or "").rstrip(".")
        if parts.scheme not in ("http", "https") or not host:
            return Refusal(PolicyRule.URL_SHAPE, f"{_safe(url)} is not an http(s) URL with a host")
        if parts.username is not None or parts.password is not None:
            return Refusal(PolicyRule.URL_SHAPE, "a server URL must not carry user information (user:password@)")
        if parts.query or parts.fragment or "?" in url or "#" in url:
            return Refusal(PolicyRule.URL_SHAPE, f"{_safe(url)} has a query or fragment; a server URL is "
                           "scheme://host[:port][/path]")
        if carries_token and parts.scheme == "http" and not self.allow_insecure_http:
            return Refusal(PolicyRule.HTTPS_REQUIRED, f"{_safe(url)} is plain http and the call carries the agent"
                           " token: use https (the operator runs without --allow-insecure-http)")
        literal = _address(host)
        if literal is not None:
            return self.check_address(host, literal)
        if self.host_patterns and self._matches(host):
            return None
        if self.restricted and not self.cidrs:
            return Refusal(PolicyRule.HOST_NOT_ALLOWED, f"host {host} matches no --allow-server-host pattern"
                           f" ({', '.join(self.host_patterns)})")
        return None  # no restriction, or CIDRs: the addresses decide when connecting

    def check_address(self, host: str, address: Address) -> Refusal | None:
        """Whether a connection to `address` (what `host` resolved to, or its literal) is allowed."""
        address = _unmapped(address)
        if any(address in net for net in self.cidrs if net.version == address.version):
            return None
        if any(address in net for net in NEVER_IMPLICITLY if net.version == address.version):
            where = f"{host} is" if host.strip("[]") == str(address) else f"{host} is {address},"
            return Refusal(PolicyRule.ADDRESS_NOT_ALLOWED, f"{where} a link-local, unspecified or"
                           " multicast address (the cloud metadata service lives there); allow it explicitly"
                           " with --allow-server-cidr if it really is a UWM server")
        if not self.restricted or (self.host_patterns and self._matches(host)):
            return None
        allowed = ", ".join([*self.host_patterns, *(str(n) for n in self.cidrs)])
        where = host if host.strip("[]") == str(address) else f"{host} ({address})"
        return Refusal(PolicyRule.ADDRESS_NOT_ALLOWED if self.cidrs else PolicyRule.HOST_NOT_ALLOWED,
                       f"{where} is outside the allowed hosts and CIDRs ({allowed})")

    def _matches(self, host: str) -> bool:
        name = host.lower()
        return any(fnmatchcase(name, pattern) for pattern in self.host_patterns)


class PolicyResolver(AbstractResolver):
    """aiohttp's resolver, with every resolved address checked against the policy: a name allowed by
    the URL check cannot lead the connection to an address the policy refuses."""

    def __init__(self, policy: ServerPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            address = _address(entry["host"])
            refusal = (Refusal(PolicyRule.ADDRESS_NOT_ALLOWED, f"{host} resolved to an unreadable address")
                       if address is None else self._policy.check_address(host, address))
            if refusal is not None:
                raise AddressRefusedError(refusal)
        return found

    async def close(self) -> None:
        await self._inner.close()


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _safe(url: str) -> str:
    """A URL for a message: user-info masked, at most 200 printable characters."""
    text = re.sub(r"(?<=://)[^/@\s]*@", "***@", url)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 200 else text[:197] + "..."
