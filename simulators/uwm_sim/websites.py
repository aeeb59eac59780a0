"""The IIS websites of the hosts clients reach: which website is a host's default website, which carry a
host header; and the license a Deployment Agent was deployed with.

Why: the guide's most common cut-over after a clean install is to "remove the host header and make either
the Management Server or the Personalization Server the default website", so clients keep the URL they
already use (`http://<host>`). A host (the machine clients reach by that name) has at most one default
website, the one whose binding carries no host header: a request to `http://<host>` reaches it. A new
server installed beside the old one on that host gets a website with a host header (its own URL) until it
takes the default binding over; a second website without a host header on one host is refused
(`two-default-websites`). The guide's website-root rule holds here too: a Personalization Server needs
the root of its website, so it never becomes the default website of a host whose default website's root
another application uses (`website-root-in-use`).

Plain data only; `clients.py` resolves clients through it and `client_views.py` changes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

RULE_TWO_DEFAULTS = "two-default-websites"
RULE_NOT_ON_HOST = "not-on-host"
MAX_LICENSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class HostWebsites:
    """One host's UWM websites: its default website (a server name) and the host headers of the others."""

    default: str | None = None
    host_headers: Mapping[str, str] = field(default_factory=dict)  # server name -> host header

    def has(self, name: str) -> bool:
        return name == self.default or name in self.host_headers

    def to_json(self) -> dict[str, Any]:
        return {"defaultWebsite": self.default, "hostHeaders": dict(sorted(self.host_headers.items()))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostWebsites:
        return cls(data.get("defaultWebsite"), dict(data.get("hostHeaders") or {}))


def host_name(url: Any) -> str:
    """The host a URL names, lower case (`http://mgmt.corp:80/x` -> `mgmt.corp`); empty when none."""
    if not isinstance(url, str):
        return ""
    try:
        return (urlsplit(url.strip()).hostname or "").lower()
    except ValueError:
        return ""


def host_of_server(websites: Mapping[str, HostWebsites], name: str) -> str | None:
    """The host whose websites include `name`'s (None: its website is on no host clients reach by name)."""
    return next((h for h, site in sorted(websites.items()) if site.has(name)), None)


def fingerprint(license_text: str) -> str:
    """What identifies a license without saying it: `sha256:` and the first 16 hex digits of its SHA-256."""
    return "sha256:" + hashlib.sha256(license_text.encode("utf-8")).hexdigest()[:16]


def license_record(license_text: Any, now: float) -> dict[str, Any]:
    """The record kept of a deployed license (never its content); ValueError naming what is wrong."""
    if not isinstance(license_text, str) or not license_text.strip():
        raise ValueError("license: the license text is required (a non-empty string)")
    size = len(license_text.encode("utf-8"))
    if size > MAX_LICENSE_BYTES:
        raise ValueError(f"license: {size} bytes, more than {MAX_LICENSE_BYTES}")
    return {"fingerprint": fingerprint(license_text), "bytes": size, "deployedAt": now}
