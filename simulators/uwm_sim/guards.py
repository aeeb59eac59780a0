"""Guards of the simulator's own surface: what an unauthenticated or malicious client cannot do.

Why: the simulators are the referee of the operator, so their journal must be trustworthy and they
must not fall over on hostile input. Rejected (401) agent calls are journalled at a bounded rate (one
`auth` entry per server per second at most, each with the count of rejections it stands for); JSON
bodies nested deeper than a real request ever is are refused with a 400; and only the load-balancer
front can mark a request as load-balancer traffic (its header carries a signature made with the
fleet's token), so nobody can forge `traffic-out-of-rotation` entries.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

MAX_JSON_DEPTH = 32
AUTH_JOURNAL_INTERVAL = 1.0
LB_SIGNATURE_HEADER = "X-Uwm-Lb-Signature"


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when `value` nests lists and objects deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def lb_signature(token: str, pool: str) -> str:
    """What the load-balancer front of `pool` sends along with its `X-Uwm-Lb` header."""
    return hmac.new(token.encode(), f"uwm-sim-lb:{pool}".encode(), hashlib.sha256).hexdigest()


def lb_signed(token: str, pool: str, signature: str) -> bool:
    return hmac.compare_digest(lb_signature(token, pool).encode(), signature.encode())


@dataclass
class AuthJournal:
    """Rate limit of the `auth` journal entries of one server.

    The interval counts from the moment an entry was written (the journal's own timestamp), not from
    when it was decided: a write that waits for the database must not let the next entry follow it
    sooner. `reject(now)` says what to do with one more rejected call: journal it now (count 1), or
    count it and, when no flush is scheduled yet, schedule one. A flush waits `flush_wait(now)` until
    it is due, takes the count (`take()`), writes it, and every write ends with `written(now)`.
    """

    interval: float = AUTH_JOURNAL_INTERVAL
    next_at: float = 0.0
    pending: int = 0
    flush_scheduled: bool = False
    writing: bool = False

    def reject(self, now: float) -> tuple[bool, float | None]:
        """(journal this one now, delay after which to schedule a flush or None)."""
        if now >= self.next_at and self.pending == 0 and not self.writing:
            self.writing = True
            return True, None
        self.pending += 1
        if self.flush_scheduled:
            return False, None
        self.flush_scheduled = True
        return False, self.flush_wait(now)

    def flush_wait(self, now: float) -> float:
        """How long a scheduled flush still waits (0: due now); while an entry is being written, the
        interval, since it only starts once that write is done."""
        return self.interval if self.writing else max(0.0, self.next_at - now)

    def take(self) -> int:
        """The count a due flush journals (0: nothing to write)."""
        count, self.pending, self.flush_scheduled = self.pending, 0, False
        self.writing = count > 0
        return count

    def written(self, now: float) -> None:
        """An entry's write ended (done or failed) at `now`: the next one waits a whole interval."""
        self.writing = False
        self.next_at = now + self.interval
