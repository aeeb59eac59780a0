"""Deleting a plan mid-run: the calls that put rotation and replication back (what to put back is the
core's `core/teardown.py`), and the signal that the teardown must wait and be retried."""

from __future__ import annotations

from ..adapters.servers import ServerClient, ServerError
from ..core.models import UpgradePlanSpec, UpgradePlanStatus
from ..core.observations import Observations
from ..core.teardown import TeardownResult, restorations


async def restore(client_calls: ServerClient, spec: UpgradePlanSpec, status: UpgradePlanStatus,
                  seen: Observations) -> TeardownResult:
    result = TeardownResult()
    rotation, replication, notes = restorations(spec, status, seen)
    result.refused.extend(notes)
    for names, what, put_back, done in ((rotation, "rotation", client_calls.set_rotation, "{} back in rotation"),
                                        (replication, "replication", client_calls.set_replication,
                                         "replication on {}")):
        for name in names:
            try:
                await put_back(name, spec.server(name).url, True)
                result.restored.append(done.format(name))
            except ServerError as exc:
                result.refused.append(f"{name} {what}: {exc}")
    return result


class MustWaitError(Exception):
    """The teardown must wait (a server is still installing or migrating); the handler retries."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay
