"""Thin kopf handlers: each translates one kopf event into one call of the engine, nothing more."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

from .adapters.kube import GROUP, PLURAL, VERSION, Kube, load_config
from .engine import deletion, overlap, reconciler
from .engine.leader import Leadership, LeaseLeadership, LeaseSettings, Standalone
from .engine.runtime import LOOP_LIMITS, Runtime
from .engine.teardown import MustWaitError
from .settings import settings_of


def selected(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> bool:
    """The `when=` filter of the daemon and the delete handler: the plans `--selector` picks.

    kopf calls a `when=` filter with the same keyword arguments as the handler it guards, `memo` among
    them: in kopf 1.45's source, `_core/intents/registries.py` `_matches_filter_callback` returns
    `handler.when(**cause.kwargs)`, and every cause carries `memo` (as designed in kopf issue #98:
    filters are called through the handlers' invocation protocol). Per plan that memo is a shallow copy
    of the one given to `kopf.run()` (`_core/reactor/inventory.py`: `copy.copy(memobase)`), so it holds
    the same Settings. tests/unit/test_settings.py runs kopf's own matching to hold this.
    """
    return settings_of(memo).selector.matches(labels)


class UnstoredDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base (what a plan's spec was when last handled), computed and never stored.

    kopf keeps it to tell create, update and resume handlers what changed; this operator has none (a
    daemon loops on each plan and reads its spec every turn), so the answer is never asked. Stored, as
    kopf's annotation storage does, it was a copy of the whole spec in every plan's annotations (29 KB
    for 200 servers, written once more at creation), which the API server decodes, validates and writes
    again with every status write, and which kopf parsed back on every watch event. Without it, kopf
    finds every event of a plan unchanged from the last handled one (`fetch` gives what `build` gives)
    and handles only what it must: the finalizer, the daemon, a deletion. `build` also copies only what
    the essence keeps: kopf's own deep-copies the whole body, status and managedFields included, per event.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if extra_fields:  # a handler asked for more than the spec and the metadata kopf keeps: kopf's own way
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        kept: dict[str, Any] = {k: v for k, v in body.items() if k not in ("status", "metadata")}
        kept["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return super().build(body=cast(kopf.Body, kept))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self.build(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's own settings (``settings``: persistence, posting, watching) and the engine's `Runtime`, both
    from the operator's Settings in the memo."""
    ours = settings_of(memo)
    settings.persistence.finalizer = "upgrade.uwm.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="upgrade.uwm.io")
    settings.persistence.diffbase_storage = UnstoredDiffBase()
    settings.posting.level = 30  # kopf's own events: warnings and errors only; the engine posts step events
    settings.watching.server_timeout = 300
    settings.scanning.disabled = not ours.scans_namespaces
    load_config()
    kube = Kube()
    leadership: Leadership = Standalone() if ours.standalone else LeaseLeadership(
        kube, LeaseSettings(name=ours.lease_name, seconds=ours.lease_seconds))
    memo.runtime = Runtime(kube, limits=ours.limits(LOOP_LIMITS), policy=ours.server_policy, leadership=leadership,
                           scope=ours.scope)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.close()


# On deletion or shutdown the loop is asked to stop (`stopped`) and given 30 s to finish the action in
# flight and return (`cancellation_backoff`); only then is it cancelled. Without the backoff kopf cancels
# it at once, in the middle of an effect (a request may still land after the teardown looked).
@kopf.index(GROUP, VERSION, PLURAL)
def upgradeplans(body: kopf.Body, namespace: str | None, name: str | None, **_: Any) -> dict[Any, Any]:
    """Every plan this operator watches (selected or not), as the overlap check reads it: kept current by
    kopf's watch, so no plan lists all the others each turn."""
    return {(namespace, name): overlap.indexed(body)}


@kopf.daemon(GROUP, VERSION, PLURAL, when=selected, cancellation_backoff=30.0, cancellation_timeout=30.0)
async def drive(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: Any, **kwargs: Any) -> None:
    memo.runtime.plans = kwargs.get("upgradeplans")  # the index above, as kopf hands it to every handler
    await reconciler.drive(memo.runtime, body, stopped, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL, when=selected)
async def deleted(body: kopf.Body, memo: kopf.Memo, logger: Any, retry: int, **_: Any) -> None:
    try:
        await deletion.on_delete(memo.runtime, body, logger, retry)
    except MustWaitError as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
