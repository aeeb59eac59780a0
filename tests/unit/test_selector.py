"""`--selector` parsing and matching, table-driven."""

from __future__ import annotations

import pytest

from uwm_upgrade.engine.selector import SelectorError, parse


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("", {}, True),
    ("team=vdi", {"team": "vdi"}, True),
    ("team==vdi", {"team": "vdi"}, True),
    ("team=vdi", {"team": "ops"}, False),
    ("team=vdi", {}, False),
    ("env!=prod", {"env": "test"}, True),
    ("env!=prod", {}, True),
    ("env!=prod", {"env": "prod"}, False),
    ("upgrade.uwm.io/managed", {"upgrade.uwm.io/managed": ""}, True),
    ("!paused", {"paused": "x"}, False),
    ("!paused", {}, True),
    ("team=vdi, env!=prod", {"team": "vdi", "env": "dev"}, True),
    ("team=vdi,env!=prod", {"team": "vdi", "env": "prod"}, False),
])
def test_matches(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse(selector).matches(labels) is expected


@pytest.mark.parametrize("bad", ["env in (a,b)", "=x", "!a=b", "a=b=c", "a b"])
def test_bad_selectors_name_the_term(bad: str) -> None:
    with pytest.raises(SelectorError, match="--selector"):
        parse(bad)
