"""The engine's side of a clean install's license and default websites: the license read only from a labelled
Secret and sent only with the Deployment Agent (the core sees its fingerprint), the clients' default
websites and deployed license read from the agent's answer, and the two client changes carried out."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pydantic import ValidationError
from test_plan_secrets import LABELLED, SPEC, credentials, runtime

from uwm_upgrade.adapters.servers import ClientsInfo
from uwm_upgrade.core.actions import MakeDefaultWebsite, RedeployDeploymentAgent
from uwm_upgrade.core.enums import StepName
from uwm_upgrade.core.models import StepKey, parse_spec
from uwm_upgrade.core.observations import TransientError
from uwm_upgrade.engine.credentials import PlanLicenses, license_fingerprint, read_licenses
from uwm_upgrade.engine.execute import execute
from uwm_upgrade.engine.observe import Estate, clients_observation

LICENSE = "<License customer='Example Corp'>AAAA-BBBB</License>\n"
CLEAN = {
    "targetVersion": "2023.1", "strategy": "CleanInstall", "managementCutover": "DefaultWebsite",
    "managementServers": [{"name": "ms-1", "url": "https://ms-1:7751", "database": "mgmt-db", "replacement": {
        "url": "https://ms-1-new:7751", "defaultWebsiteHost": "mgmt.corp", "license": {"name": "uwm-license"}}}],
}
AGENT, DBS = (LABELLED, {"token": b"agent-token"}), (LABELLED, {"mgmt": b"DRIVER=x;SERVER=db;PWD=p"})


def test_the_fingerprint_is_sha256_of_the_text_cut_to_16_hex_digits() -> None:
    assert license_fingerprint(LICENSE) == "sha256:" + hashlib.sha256(LICENSE.encode()).hexdigest()[:16]
    assert license_fingerprint(LICENSE) != license_fingerprint(LICENSE.strip())  # the content as it is, whole


async def licenses(secrets: dict[str, Any]) -> PlanLicenses:
    spec = parse_spec({**SPEC, **CLEAN})
    return await read_licenses(runtime({"agent": AGENT, "dbs": DBS, **secrets}).secret, "ns", spec)


async def test_the_license_comes_from_a_labelled_secret_whole_and_is_never_shown() -> None:
    read = await licenses({"uwm-license": (LABELLED, {"license": LICENSE.encode()})})
    assert (read.texts, read.problems) == ({"ms-1-new": LICENSE}, {})  # by the new server, line break kept
    assert "AAAA" not in repr(read) and "read=['ms-1-new']" in repr(read)
    unlabelled = await licenses({"uwm-license": ({}, {"license": LICENSE.encode()})})
    assert unlabelled.texts == {} and unlabelled.problems["ms-1-new"].startswith(
        "Secret ns/uwm-license key 'license' (spec.managementServers[0].replacement.license): Secret"
        " ns/uwm-license is not labelled")
    empty = await licenses({"uwm-license": (LABELLED, {"license": b" \n"})})
    assert empty.problems["ms-1-new"].endswith("a license must be text of 1 to 65536 bytes, it has 2")
    gone = await licenses({})
    assert "Secret ns/uwm-license does not exist" in gone.problems["ms-1-new"]
    # the other credentials do not depend on it: observing the estate and a teardown go on without it
    assert (await credentials({"agent": AGENT, "dbs": DBS}, **CLEAN)).token == "agent-token"


def test_the_clients_default_websites_and_license_are_read_from_the_agents_answer() -> None:
    answer: dict[str, Any] = {
        "deploymentAgent": {"server": None, "host": "mgmt.corp", "url": "http://mgmt.corp",
                            "license": {"fingerprint": "sha256:0123456789abcdef"}},
        "websites": {"mgmt.corp": {"defaultWebsite": "ms-1", "defaultWebsiteUrl": "https://ms-1:7751",
                                   "hostHeaders": {"ms-1-new": "ms-1-new.corp"}}},
        "servers": {"ms-1": {"url": "https://ms-1:7751", "online": True,
                             "website": {"host": "mgmt.corp", "hostHeader": None}},
                    "ms-1-new": {"url": "https://MS-1-new:7751/", "online": False,
                                 "website": {"host": "mgmt.corp", "hostHeader": "ms-1-new.corp"}}},
    }
    c = clients_observation(ClientsInfo.model_validate(answer))
    assert (c.agent, c.agent_license) == ("http://mgmt.corp", "sha256:0123456789abcdef")
    assert c.default_websites == {"mgmt.corp": "https://ms-1:7751"}
    assert c.website_hosts == {"https://ms-1:7751": "mgmt.corp", "https://ms-1-new:7751": "mgmt.corp"}
    assert "default websites mgmt.corp -> https://ms-1:7751, license sha256:0123456789abcdef" in c.describe()
    with pytest.raises(ValidationError):  # whatever else a server says there is never echoed
        ClientsInfo.model_validate({**answer, "deploymentAgent": {"license": {"fingerprint": "<script>x</script>"}}})


class Agents:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []

    async def change_clients(self, server: str, base_url: str, action: str, **fields: Any) -> None:
        self.calls.append((server, base_url, action, fields))


async def test_the_default_website_moves_and_the_license_is_sent_only_as_decided() -> None:
    spec = parse_spec({**SPEC, **CLEAN})
    agents = Agents()
    estate = Estate(agents, {}, licenses={"ms-1-new": LICENSE})  # type: ignore[arg-type]
    assert "AAAA" not in repr(estate)
    move = StepKey(StepName.MAKE_DEFAULT_WEBSITE, 1, "ms-1-new")
    await execute(estate, spec, MakeDefaultWebsite(move, "ms-1-new", "https://ms-1-new:7751", "mgmt.corp",
                                                   "https://ms-1:7751", "https://ms-1-new:7751"))
    step = StepKey(StepName.REDEPLOY_DEPLOYMENT_AGENT, 1, database="mgmt-db")
    await execute(estate, spec, RedeployDeploymentAgent(step, "ms-1-new", "https://ms-1-new:7751",
                                                        "http://mgmt.corp", "http://mgmt.corp",
                                                        license_fingerprint(LICENSE)))
    await execute(estate, spec, RedeployDeploymentAgent(step, "ms-1-new", "https://ms-1-new:7751", None,
                                                        "http://mgmt.corp"))
    assert agents.calls == [
        ("ms-1-new", "https://ms-1-new:7751", "make-default-website",
         {"host": "mgmt.corp", "url": "https://ms-1-new:7751"}),
        ("ms-1-new", "https://ms-1-new:7751", "redeploy-deployment-agent",
         {"url": "http://mgmt.corp", "license": LICENSE}),
        ("ms-1-new", "https://ms-1-new:7751", "redeploy-deployment-agent", {"url": "http://mgmt.corp"})]
    stale = RedeployDeploymentAgent(step, "ms-1-new", "https://ms-1-new:7751", None, "http://mgmt.corp",
                                    "sha256:ffffffffffffffff")
    with pytest.raises(TransientError) as info:  # the Secret changed since the decision: decide again
        await execute(estate, spec, stale)
    assert "AAAA" not in str(info.value) and "sha256:ffffffffffffffff" in str(info.value)
    assert len(agents.calls) == 3
