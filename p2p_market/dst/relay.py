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
