"""Every action says what it is by its class: an Effect (with its step), a Record, Waiting or Final."""

from __future__ import annotations

import dataclasses

from core_builders import key

from uwm_upgrade.core import actions
from uwm_upgrade.core.actions import Action, Effect, Final, Record, Waiting, requeue_after
from uwm_upgrade.core.enums import Reason, StepName
from uwm_upgrade.core.observations import Where


def concrete(base: type[Action]) -> set[type[Action]]:
    found: set[type[Action]] = set()
    for cls in base.__subclasses__():
        found |= concrete(cls)
        if dataclasses.is_dataclass(cls) and cls is not Effect and cls.__name__ != "ClientEffect":
            found.add(cls)
    return found


def test_every_action_is_an_effect_or_a_record() -> None:
    classes = concrete(Action)
    assert len(classes) > 20
    for cls in classes:
        assert issubclass(cls, Effect) != issubclass(cls, Record), cls
        fields = {f.name for f in dataclasses.fields(cls)}
        assert ("step" in fields) or not issubclass(cls, Effect), cls
        assert ("seconds" in fields) == issubclass(cls, Waiting), cls
        assert not (issubclass(cls, Waiting) and issubclass(cls, Final)), cls
    exported = {v for v in vars(actions).values() if isinstance(v, type) and issubclass(v, Action)}
    assert classes <= exported


def test_the_next_turn_follows_the_class() -> None:
    assert requeue_after(actions.Block(("other",), "x", 7.0)) == 7.0
    assert requeue_after(actions.FinishRollback("x")) is None and requeue_after(actions.Idle("x")) is None
    assert requeue_after(actions.BringOnline(key(StepName.BRING_ONLINE), "ms-1-new", "http://x")) == 0.0
    assert requeue_after(actions.BeginRollback(Reason.TIMEOUT, Where(), "x", ())) == 0.0
