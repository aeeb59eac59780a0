"""kopf's diff base is computed, never stored (`handlers.UnstoredDiffBase`): no copy of the spec in a plan's
annotations, and kopf still tells a deletion from the events it need not handle."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import diffs
from kopf._core.intents import causes

from uwm_upgrade.handlers import UnstoredDiffBase

FINALIZER = "upgrade.uwm.io/finalizer"


def plan(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "upgrade.uwm.io/v1alpha1", "kind": "UpgradePlan",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7", "generation": 1,
                     "labels": {"team": "vdi"}, "finalizers": [FINALIZER],
                     "annotations": {"upgrade.uwm.io/kopf-managed": "yes", "upgrade.uwm.io/approve": "abc",
                                     "note": "kept"},
                     "managedFields": [{"manager": "uwm-upgrade-operator", "fieldsV1": {"f:status": {}}}],
                     **metadata},
        "spec": {"targetVersion": "2025.1", "personalizationServers": [{"name": "ps-1"}]},
        "status": {"phase": "Running", "steps": [{"name": "Preflight"}]},
    }


def cause(raw: dict[str, Any], event: str = "MODIFIED", initial: bool = False) -> causes.ChangingCause:
    storage = UnstoredDiffBase()
    body = kopf.Body(raw)
    old, new = storage.fetch(body=body), storage.build(body=body, extra_fields=frozenset())
    return causes.detect_changing_cause(
        finalizer=FINALIZER, raw_event={"type": event, "object": raw}, body=body, old=old, new=new,
        diff=diffs.diff(old, new), initial=initial, resource=None, indices=None, logger=None, patch=kopf.Patch(),
        memo=None)


def test_the_essence_is_the_spec_and_the_labels_and_annotations_kopf_keeps() -> None:
    raw = plan()
    essence = UnstoredDiffBase().build(body=kopf.Body(raw))
    assert dict(essence) == {"spec": raw["spec"], "metadata": {"labels": {"team": "vdi"},
                                                               "annotations": {"note": "kept"}}}
    assert essence["spec"] is not raw["spec"]  # a copy: later changes of the body do not change it
    assert essence == kopf.AnnotationsDiffBaseStorage(prefix="upgrade.uwm.io").build(body=kopf.Body(raw))


def test_nothing_is_stored_so_no_event_writes_the_spec_into_the_annotations() -> None:
    body, patch = kopf.Body(plan()), kopf.Patch()
    storage = UnstoredDiffBase()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch
    assert storage.fetch(body=body) == storage.build(body=body)


def test_kopf_handles_only_what_it_must() -> None:
    """An event of a plan seen before is nothing to handle; the first of a process resumes (no handler
    for it: nothing runs, nothing is written); a deletion is one; the finalizer gone, it is free."""
    assert cause(plan()).reason is causes.Reason.NOOP
    assert cause(plan(), initial=True).reason is causes.Reason.RESUME
    deleting = plan(deletionTimestamp="2026-01-01T00:00:00Z")
    assert cause(deleting).reason is causes.Reason.DELETE
    freed = copy.deepcopy(deleting)
    freed["metadata"]["finalizers"] = []
    assert cause(freed).reason is causes.Reason.FREE
    assert cause(plan(), event="DELETED").reason is causes.Reason.GONE


def test_the_operator_configures_it_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    from uwm_upgrade import handlers
    from uwm_upgrade.settings import Settings

    monkeypatch.setattr(handlers, "load_config", lambda: None)  # the boundary: no cluster here
    settings, memo = kopf.OperatorSettings(), kopf.Memo(settings=Settings(standalone=True))
    asyncio.run(handlers.startup(settings=settings, memo=memo))
    assert isinstance(settings.persistence.diffbase_storage, UnstoredDiffBase)
    memo.runtime.kube.close()
