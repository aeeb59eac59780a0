"""Label selectors for `uwm-upgrade run --selector`: equality-based, as `kubectl -l` understands them.

kopf's own label filters are fixed when handlers are decorated; the operator's selector is chosen on the
command line, so handlers filter with `matches()` instead. Set-based selectors (`in`, `notin`) are not
supported and are refused with a clear error rather than misread.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_TERM = re.compile(rf"^(?P<neg>!)?(?P<key>{_KEY})(\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE}))?$")


class SelectorError(ValueError):
    """The selector cannot be parsed; the message quotes the offending term."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "exists", "!exists"
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def parse(text: str) -> Selector:
    reqs: list[Requirement] = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        m = _TERM.match(raw)
        if not m:
            raise SelectorError(f"--selector: cannot parse {raw!r} (use key=value, key!=value, key or !key)")
        key, op, value = m["key"], m["op"], m["value"] or ""
        if m["neg"]:
            if op:
                raise SelectorError(f"--selector: {raw!r} mixes '!' with an operator")
            reqs.append(Requirement(key, "!exists"))
        elif op is None:
            reqs.append(Requirement(key, "exists"))
        else:
            reqs.append(Requirement(key, "!=" if op == "!=" else "=", value))
    return Selector(tuple(reqs))
