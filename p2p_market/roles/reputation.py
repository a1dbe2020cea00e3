"""A requester's own memory of the provers it dealt with, and the consequence it may
draw: naming the worst of them in the `deny` list of its next asks.

Why local and not in the settlement: whether a prover timed out or delivered an
invalid proof is the requester's word (its signed receipt), and a requester can be
wrong or lie. So it changes only what this requester signs next. Matching stays a
function of the signed messages: the consequence travels in the ask's own `deny`
list, which every node reads alike. And nobody can be framed by it: a requester's
receipts about a prover affect that requester's asks and no one else's (another
requester never reads them), while the market-wide exclusion of a prover needs its
own conflicting signatures (objective evidence, protocols/SECURITY.md).

Rule: a prover is denied while its failures (`timed_out` and `invalid` receipts this
requester signed) within the last `memory_ms` number at least `deny_after` and
outnumber its accepted proofs in that time. Old outcomes are forgotten, so a prover
denied once is offered work again after `memory_ms`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from p2p_market.core.limits import MAX_LIST_ITEMS
from p2p_market.core.messages import Outcome

DEFAULT_DENY_AFTER = 2
DEFAULT_MEMORY_MS = 3_600_000


@dataclass
class _Record:
    outcomes: deque[tuple[int, str]] = field(default_factory=deque)
    """(when, outcome value) of each receipt, oldest first."""


class Reputation:
    def __init__(
        self, *, deny_after: int = DEFAULT_DENY_AFTER, memory_ms: int = DEFAULT_MEMORY_MS
    ) -> None:
        if deny_after < 1 or memory_ms < 1:
            raise ValueError("deny_after and memory_ms must be positive")
        self.deny_after = deny_after
        self.memory_ms = memory_ms
        self._records: dict[bytes, _Record] = {}

    def record(self, prover: bytes, outcome: Outcome, now: int) -> None:
        """A receipt this requester signed about `prover`."""
        self._records.setdefault(prover, _Record()).outcomes.append((now, outcome.value))
        self._forget(now)

    def _forget(self, now: int) -> None:
        line = now - self.memory_ms
        for prover in list(self._records):
            outcomes = self._records[prover].outcomes
            while outcomes and outcomes[0][0] < line:
                outcomes.popleft()
            if not outcomes:
                del self._records[prover]

    def counts(self, prover: bytes, now: int) -> dict[str, int]:
        self._forget(now)
        out = {o.value: 0 for o in Outcome}
        record = self._records.get(prover)
        for _, outcome in record.outcomes if record else ():
            out[outcome] += 1
        return out

    def denied(self, now: int) -> tuple[bytes, ...]:
        """The provers to name in `deny`, worst first, at most the ask's limit."""
        self._forget(now)
        scored = []
        for prover in self._records:
            c = self.counts(prover, now)
            failures = c[Outcome.TIMED_OUT.value] + c[Outcome.INVALID.value]
            if failures >= self.deny_after and failures > c[Outcome.ACCEPTED.value]:
                scored.append((-failures, prover))
        return tuple(p for _, p in sorted(scored)[:MAX_LIST_ITEMS])

    def apply(self, fields: dict[str, Any], now: int) -> dict[str, Any]:
        """Ask fields with the denied provers added to `deny` (kept within the
        limit; an `allow` list is the caller's explicit choice and is left alone)."""
        if fields.get("allow"):
            return fields
        denied = [p.hex() for p in self.denied(now)]
        if not denied:
            return fields
        deny = list(dict.fromkeys([*fields.get("deny", []), *denied]))[:MAX_LIST_ITEMS]
        return {**fields, "deny": deny}

    def snapshot(self, now: int) -> dict[str, dict[str, Any]]:
        """Per prover (hex): its outcomes in memory and whether it is denied."""
        denied = set(self.denied(now))
        return {
            prover.hex(): {**self.counts(prover, now), "denied": prover in denied}
            for prover in sorted(self._records)
        }
