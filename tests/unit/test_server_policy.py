"""The operator's server policy: which URLs and addresses a plan's servers may have, and the flags that say so."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from uwm_upgrade import cli
from uwm_upgrade.adapters.server_policy import (
    AddressRefusedError,
    PolicyError,
    PolicyResolver,
    PolicyRule,
    ServerPolicy,
)
from uwm_upgrade.settings import SettingsError

OPEN = ServerPolicy()
OPEN_HTTP = ServerPolicy(allow_insecure_http=True)
CORP = ServerPolicy.parse(["*.uwm.corp.example", "ms-legacy"], ["10.20.0.0/16"])


def rule(policy: ServerPolicy, url: str, token: bool = True) -> PolicyRule | None:
    refusal = policy.check_url(url, carries_token=token)
    return None if refusal is None else refusal.rule


@pytest.mark.parametrize(("policy", "url", "token", "expected"), [
    (OPEN, "https://ms-1.anywhere:7751", True, None),
    (OPEN, "http://ms-1.anywhere:7751", True, PolicyRule.HTTPS_REQUIRED),
    (OPEN, "http://ms-1.anywhere:7751", False, None),  # a status page carries no token
    (OPEN_HTTP, "http://127.0.0.1:7751", True, None),
    (OPEN, "https://uwm:pw@ms-1:7751", True, PolicyRule.URL_SHAPE),
    (OPEN, "https://metadata/latest/api/token?x=/agent/v1/state", True, PolicyRule.URL_SHAPE),
    (OPEN, "https://ms-1:7751/#frag", True, PolicyRule.URL_SHAPE),
    (OPEN, "https://ms-1:notaport", True, PolicyRule.URL_SHAPE),
    (OPEN, "ftp://ms-1", True, PolicyRule.URL_SHAPE),
    (OPEN, "https://169.254.169.254/latest", True, PolicyRule.ADDRESS_NOT_ALLOWED),  # cloud metadata
    (OPEN, "https://[fe80::1]:7751", True, PolicyRule.ADDRESS_NOT_ALLOWED),
    (OPEN, "https://[::ffff:169.254.169.254]:7751", True, PolicyRule.ADDRESS_NOT_ALLOWED),
    (OPEN, "https://0.0.0.0:7751", True, PolicyRule.ADDRESS_NOT_ALLOWED),
    (CORP, "https://ms-1.uwm.corp.example:7751", True, None),
    (CORP, "https://MS-1.UWM.Corp.Example.:7751", True, None),
    (CORP, "https://ms-legacy:7751", True, None),
    (CORP, "https://10.20.3.4:7751", True, None),
    (CORP, "https://10.21.3.4:7751", True, PolicyRule.ADDRESS_NOT_ALLOWED),
    (CORP, "https://attacker.example:7751", True, None),  # a name: its addresses decide, at connect time
    (ServerPolicy.parse(["*.uwm.corp.example"]), "https://attacker.example", True, PolicyRule.HOST_NOT_ALLOWED),
    (ServerPolicy.parse(["*.uwm.corp.example"]), "https://uwm.corp.example.attacker.example", True,
     PolicyRule.HOST_NOT_ALLOWED),
    (ServerPolicy.parse(["*.uwm.corp.example"]), "https://10.20.3.4", True, PolicyRule.HOST_NOT_ALLOWED),
    (ServerPolicy.parse([], ["169.254.0.0/16"]), "https://169.254.10.10", True, None),  # allowed explicitly
])
def test_urls(policy: ServerPolicy, url: str, token: bool, expected: PolicyRule | None) -> None:
    assert rule(policy, url, token) is expected


def test_a_refusal_names_the_address_once() -> None:
    refusal = CORP.check_url("https://10.21.3.4:7751", carries_token=True)
    assert refusal is not None and refusal.message.startswith("10.21.3.4 is outside the allowed hosts and CIDRs")
    refusal = OPEN.check_url("https://169.254.169.254/latest", carries_token=True)
    assert refusal is not None and refusal.message.startswith("169.254.169.254 is a link-local")
    assert str(CORP.check_address("ms-9.example", ipaddress.ip_address("192.168.1.1"))).endswith(
        "ms-9.example (192.168.1.1) is outside the allowed hosts and CIDRs"
        " (*.uwm.corp.example, ms-legacy, 10.20.0.0/16)")


def test_a_refusal_names_the_rule_and_what_to_do() -> None:
    refusal = OPEN.check_url("http://ms-1.corp:7751", carries_token=True)
    assert refusal is not None
    assert str(refusal).startswith("refused by the operator's server policy (https-required): ")
    assert "--allow-insecure-http" in str(refusal)
    assert "pw" not in str(OPEN.check_url("https://uwm:pw@ms-1:7751", carries_token=True))


@pytest.mark.parametrize(("host", "address", "allowed"), [
    ("attacker.example", "10.20.9.9", True),
    ("attacker.example", "192.168.1.1", False),
    ("ms-1.uwm.corp.example", "192.168.1.1", True),  # the name is allowed by a pattern
    ("ms-1.uwm.corp.example", "169.254.169.254", False),  # but never to the metadata service
])
def test_addresses_at_connect_time(host: str, address: str, allowed: bool) -> None:
    assert (CORP.check_address(host, ipaddress.ip_address(address)) is None) is allowed


class FixedResolver(PolicyResolver):
    """The policy resolver over a fixed answer (what a DNS server under an attacker's control would say)."""

    def __init__(self, policy: ServerPolicy, address: str) -> None:
        class Inner:
            async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                              ) -> list[dict[str, object]]:
                return [{"hostname": host, "host": address, "port": port, "family": family, "proto": 0, "flags": 0}]

            async def close(self) -> None:
                return None

        super().__init__(policy, Inner())  # type: ignore[arg-type]


async def test_the_resolver_refuses_a_name_that_resolves_outside_the_policy() -> None:
    with pytest.raises(AddressRefusedError) as info:
        await FixedResolver(CORP, "169.254.169.254").resolve("innocent.example", 443)
    assert info.value.refusal.rule is PolicyRule.ADDRESS_NOT_ALLOWED
    found = await FixedResolver(CORP, "10.20.1.1").resolve("innocent.example", 443)
    assert found[0]["host"] == "10.20.1.1"


def settings(*flags: str) -> ServerPolicy:
    return cli.settings_from_args(cli.build_parser().parse_args(["run", *flags])).server_policy


def test_the_flags_build_the_policy() -> None:
    assert settings() == ServerPolicy() and not settings().restricted
    got = settings("--allow-server-host", "*.UWM.corp.example", "--allow-server-cidr", "10.20.0.0/16",
                   "--allow-server-cidr", "fd00::/8", "--allow-insecure-http")
    assert got == ServerPolicy(("*.uwm.corp.example",), (ipaddress.ip_network("10.20.0.0/16"),
                                                         ipaddress.ip_network("fd00::/8")), True)
    assert got.restricted and "10.20.0.0/16" in got.describe()


@pytest.mark.parametrize(("flags", "named"), [
    (("--allow-server-cidr", "10.20.0.0/33"), "--allow-server-cidr '10.20.0.0/33'"),
    (("--allow-server-host", "ms 1;rm"), "--allow-server-host 'ms 1;rm'"),
])
def test_bad_flags_are_refused_naming_the_flag(flags: tuple[str, ...], named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace("[", r"\[").replace(".", r"\.")):
        settings(*flags)
    with pytest.raises(PolicyError):
        ServerPolicy.parse(*([[flags[1]], []] if "host" in flags[0] else [[], [flags[1]]]))
