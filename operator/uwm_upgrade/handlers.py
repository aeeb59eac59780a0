"""Thin kopf handlers: each translates one kopf event into one call of the engine, nothing more."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import kopf

from .adapters.kube import GROUP, PLURAL, VERSION, Kube, load_config
from .engine import deletion, reconciler
from .engine.selector import parse
from .engine.teardown import MustWaitError

SELECTOR = parse(os.environ.get("UWM_UPGRADE_SELECTOR", ""))


def selected(labels: kopf.Labels, **_: Any) -> bool:
    return SELECTOR.matches(labels)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = "upgrade.uwm.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="upgrade.uwm.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="upgrade.uwm.io")
    settings.posting.level = 30  # kopf's own events: warnings and errors only; the engine posts step events
    settings.watching.server_timeout = 300
    settings.scanning.disabled = os.environ.get("UWM_UPGRADE_SCANNING", "on") == "off"
    load_config()
    runtime = reconciler.Runtime(Kube())
    if os.environ.get("UWM_UPGRADE_INSTALL_TIMEOUT"):
        runtime.limits = replace(runtime.limits, install_seconds=float(os.environ["UWM_UPGRADE_INSTALL_TIMEOUT"]))
    memo.runtime = runtime


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.close()


# On deletion or shutdown the loop is asked to stop (`stopped`) and given 30 s to finish the action in
# flight and return (`cancellation_backoff`); only then is it cancelled. Without the backoff kopf cancels
# it at once, in the middle of an effect (a request may still land after the teardown looked).
@kopf.daemon(GROUP, VERSION, PLURAL, when=selected, cancellation_backoff=30.0, cancellation_timeout=30.0)
async def drive(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await reconciler.drive(memo.runtime, body, stopped, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL, when=selected)
async def deleted(body: kopf.Body, memo: kopf.Memo, logger: Any, retry: int, **_: Any) -> None:
    try:
        await deletion.on_delete(memo.runtime, body, logger, retry)
    except MustWaitError as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
