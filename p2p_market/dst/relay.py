"""The core of a node without a role (a relay) observes its settlement at its tick,
not after every message.

Why: folding the settlement after every stored message is most of a simulation's
cost, and on a relay nothing depends on it. A relay forwards what its core ACCEPTs
and serves its holdings to syncing peers; admission never reads what `_observe`
computes (the announcements told to a shell), and every derived view (`view`,
`state_hash`, the end-of-run checks) folds from the stored messages on demand. So a
relay behaves exactly as before, message for message; the one difference is that
its own announcements, and so the reorgs it counts, are taken every
`relay_tick_ms` instead of after every message: a winner that changes and changes
back between two ticks is not counted on a relay. Nodes with a role (provers,
requesters) act on the effects and observe after every message, as the real node.

A subclass, not a patch of the core: it overrides the one private step (`_observe`)
and runs it from `tick` only; tests/dst/test_dst.py checks that a relay still ends
with exactly the state of a full node.

With `Scenario.relay_observe` off, a relay skips even that (`QuietRelay`): its
announcements only ever fed statistics (the reorgs it counts, and what the finality
watch records from it, dst/finality.py), and taking them folds the
settlement every tick, which is most of a relay's cost in a big run. It then folds
only when something needs the settlement: admission of the few messages whose
verdict reads it (a cancel, a commit to an awarded ask), the checks and views at the
end, and setting finished asks aside (retention.py), which it does every
`QUIET_ARCHIVE_MS` instead of every tick (a finished ask stays in the fold a few
seconds longer; nothing it decides changes). Its state is the same, message for
message (tests/dst/test_relay_stats.py); it counts no reorgs and tells the
finality watch nothing.
"""

from __future__ import annotations

from p2p_market.core.effects import Effect
from p2p_market.core.state import MarketState
from p2p_market.dst.planted import ArrivalOrderState


class ObserveOnTick(MarketState):
    _on_tick = False

    def _observe(self, now: int) -> list[Effect]:
        if not self._on_tick:
            return []
        return super()._observe(now)

    def tick(self, now: int) -> list[Effect]:
        self._on_tick = True
        try:
            return super().tick(now)
        finally:
            self._on_tick = False


class ArrivalOrderRelay(ObserveOnTick, ArrivalOrderState):
    """A relay with the planted "no-tiebreak" bug."""


QUIET_ARCHIVE_MS = 10_000
"""How often a QuietRelay sets finished asks aside: often enough to keep its fold
small, rarely enough that the folds it runs for it take in many messages at once."""


class QuietRelay(MarketState):
    """A relay that takes no announcements at all (see the module's docstring)."""

    _next_archive = 0

    def _observe(self, now: int) -> list[Effect]:
        return []

    def _archive_finished(self, now: int) -> None:
        if now >= self._next_archive:
            self._next_archive = now + QUIET_ARCHIVE_MS
            super()._archive_finished(now)


class ArrivalOrderQuietRelay(QuietRelay, ArrivalOrderState):
    """A quiet relay with the planted "no-tiebreak" bug."""
