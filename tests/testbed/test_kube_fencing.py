"""The Kubernetes adapter against the real API server: fenced status writes and the Lease election.

What the engine's fencing rests on is checked here on kube-apiserver itself, not assumed: a merge patch
of the status that carries a resourceVersion is refused with 409 once anyone else wrote the plan, an
empty one too (the check before an effect that changed nothing), and a Lease is taken by one candidate
only, kept while renewed, and taken over only after its duration has passed on the standby's clock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from uwm_upgrade.adapters.kube import ConflictError, TimedApiClient
from uwm_upgrade.adapters.kube import Kube as KubeAdapter
from uwm_upgrade.engine.leader import Elector, LeaseSettings

from conftest import REPO, Kube

PLAN = REPO / "examples" / "upgradeplan.yaml"


@pytest.fixture
async def adapter(kube: Kube) -> AsyncIterator[KubeAdapter]:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=configuration)
    found = KubeAdapter(TimedApiClient(configuration))
    yield found
    found.close()


def _plan(kube: Kube, namespace: str) -> dict[str, Any]:
    doc = next(d for d in yaml.safe_load_all(PLAN.read_text()) if d and d["kind"] == "UpgradePlan")
    doc["metadata"]["namespace"] = namespace
    res = kube.kubectl_run("apply", "-f", "-", input=yaml.safe_dump(doc))
    assert res.returncode == 0, res.stderr
    return doc


async def test_a_status_write_at_an_old_resource_version_is_refused(kube: Kube, namespace: str,
                                                                     adapter: KubeAdapter) -> None:
    name = _plan(kube, namespace)["metadata"]["name"]
    first = await adapter.get_plan(namespace, name)
    version = first["metadata"]["resourceVersion"]
    written = await adapter.patch_status(namespace, name, {"message": "one"}, version)
    newer = written["metadata"]["resourceVersion"]
    assert newer != version
    with pytest.raises(ConflictError) as refused:  # someone (here: ourselves) wrote since `version`
        await adapter.patch_status(namespace, name, {"message": "stale"}, version)
    assert refused.value.status == 409
    with pytest.raises(ConflictError):  # the empty fence patch before an effect is checked too
        await adapter.patch_status(namespace, name, {}, version)
    fence = await adapter.patch_status(namespace, name, {}, newer)  # the current version: fine, no new version
    assert fence["metadata"]["resourceVersion"] == newer
    assert (await adapter.get_plan(namespace, name))["status"]["message"] == "one"


async def test_a_json_patch_of_the_status_is_fenced_and_sends_only_what_changed(kube: Kube, namespace: str,
                                                                                 adapter: KubeAdapter) -> None:
    """The loop's writes: one list item replaced, one appended, at the version last seen, else 409."""
    name = _plan(kube, namespace)["metadata"]["name"]
    version = (await adapter.get_plan(namespace, name))["metadata"]["resourceVersion"]
    steps = [{"name": "Preflight", "hop": 0, "state": "Succeeded"}, {"name": "Plan", "hop": 0, "state": "Pending"}]
    first = await adapter.patch_status_ops(namespace, name, [
        {"op": "add", "path": "/status", "value": {"phase": "Planning", "steps": steps}}], version)
    newer = first["metadata"]["resourceVersion"]
    ops = [{"op": "replace", "path": "/status/steps/1", "value": {**steps[1], "state": "Succeeded"}},
           {"op": "add", "path": "/status/steps/-", "value": {"name": "RecordBaseline", "hop": 0, "state": "Pending"}}]
    with pytest.raises(ConflictError) as refused:  # written since `version`
        await adapter.patch_status_ops(namespace, name, ops, version)
    assert refused.value.status == 409
    with pytest.raises(ConflictError):  # the empty fence before an effect
        await adapter.patch_status_ops(namespace, name, [], version)
    done = await adapter.patch_status_ops(namespace, name, ops, newer)
    assert [(s["name"], s["state"]) for s in done["status"]["steps"]] == [
        ("Preflight", "Succeeded"), ("Plan", "Succeeded"), ("RecordBaseline", "Pending")]
    fence = await adapter.patch_status_ops(namespace, name, [], done["metadata"]["resourceVersion"])
    assert fence["metadata"]["resourceVersion"] == done["metadata"]["resourceVersion"]


async def test_an_invalid_status_write_names_the_field(kube: Kube, namespace: str, adapter: KubeAdapter) -> None:
    """422 carries the API server's sentence, which names the field (the loop puts it in Stalled)."""
    from uwm_upgrade.adapters.kube import KubeError

    name = _plan(kube, namespace)["metadata"]["name"]
    with pytest.raises(KubeError) as refused:
        await adapter.patch_status(namespace, name, {"phase": "Exploded"})
    assert refused.value.status == 422 and not refused.value.transient
    assert "status.phase" in str(refused.value), str(refused.value)


async def test_one_candidate_holds_the_lease_and_a_standby_takes_over_only_after_it_expires(
        kube: Kube, namespace: str, adapter: KubeAdapter) -> None:
    seconds = 3.0
    lease = f"lease-{uuid.uuid4().hex[:6]}"
    a = Elector(adapter, namespace, LeaseSettings(lease, seconds, "a"))
    b = Elector(adapter, namespace, LeaseSettings(lease, seconds, "b"))
    assert await a.attempt() and a.leading()
    assert not await b.attempt() and not b.leading()
    # a renews: b never gets it, however long
    deadline = time.monotonic() + 2 * seconds
    while time.monotonic() < deadline:
        assert await a.attempt()
        renewed = time.monotonic()
        assert not await b.attempt()
        await asyncio.sleep(seconds / 3)
    # a stops renewing (a SIGKILL): it stops counting itself leader 2/3 of a lease after its last renewal;
    # b takes over a whole lease after it last saw the Lease change, never before
    taken = None
    while time.monotonic() - renewed < 3 * seconds:
        if await b.attempt():
            taken = time.monotonic() - renewed
            break
        if time.monotonic() - renewed > seconds * 2 / 3 + 0.1:
            assert not a.leading(), "the old leader still counts itself leader past 2/3 of its lease"
        await asyncio.sleep(0.2)
    assert taken is not None, "the standby never took over"
    assert seconds <= taken <= seconds + 1.5, taken
    assert not a.leading()
    assert not await a.attempt(), "the old leader took the Lease back from the new one"
    await b.release()
    assert await a.attempt(), "a released Lease is free at once"
