"""The closed sets of names stay closed and alive: every `Reason` is one the operator can give."""

from __future__ import annotations

import re
from pathlib import Path

from uwm_upgrade.core.enums import Reason

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "uwm_upgrade"


def test_every_reason_is_given_somewhere() -> None:
    """A member nobody uses is a promise the status never keeps (and a name someone will grep for in vain)."""
    source = "\n".join(p.read_text() for p in OPERATOR.rglob("*.py") if p.name != "enums.py")
    used = set(re.findall(r"\bReason\.([A-Z_]+)\b", source))
    assert sorted(m.name for m in Reason if m.name not in used) == []
