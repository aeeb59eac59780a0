"""decide() when the estate cannot be observed at all: the reason (a Secret that cannot be read) is said."""

from __future__ import annotations

from core_builders import T0, make_spec, one

from uwm_upgrade.core.actions import Wait
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import Reason
from uwm_upgrade.core.models import UpgradePlanStatus
from uwm_upgrade.core.observations import ObservationGap, Observations, Where


def test_a_secret_that_cannot_be_read_is_named_in_the_wait() -> None:
    spec = make_spec()
    why = "Secret ns/uwm-databases has no key 'pers-db' (it has: mgmt-db)"
    action = one(decide(spec, UpgradePlanStatus(), Observations(gaps=(ObservationGap(Where(), why),)), T0))
    assert isinstance(action, Wait) and action.reason is Reason.OBSERVATION_UNAVAILABLE
    assert action.message.startswith("cannot observe ms-1, ") and action.message.endswith(f": {why}")
