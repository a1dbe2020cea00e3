"""Planted bugs: deliberately broken nodes, to prove the end-of-run checks catch
what they claim to catch. Nothing here is imported by the core and the core is not
patched: the sim builds this subclass instead of `MarketState`.

"no-tiebreak": a node names as an ask's winners the provers whose commits *arrived
first* at this node (first come, first served), instead of the core's ranking with
its H(ask || prover) tiebreak. It is the classic bug of a leaderless matcher: each
node is internally consistent (its invariants hold), yet nodes disagree on who won,
because arrival order is local knowledge. It touches only `view()` (what a node
reports and the checks compare), so it keeps working whatever the core's internals.
"""

from __future__ import annotations

from dataclasses import replace

from p2p_market.core.effects import Effect
from p2p_market.core.envelope import Envelope
from p2p_market.core.messages import Commit, Market
from p2p_market.core.state import AskView, MarketState
from p2p_market.core.verdict import Verdict

LATE = 2**62


class ArrivalOrderState(MarketState):
    def __init__(self, market: Market, *, local_prover: bytes | None = None) -> None:
        super().__init__(market, local_prover=local_prover)
        self._arrival: dict[bytes, int] = {}

    def apply_checked(self, env: Envelope, now: int) -> tuple[Verdict, list[Effect]]:
        self._arrival.setdefault(env.id, len(self._arrival))
        return super().apply_checked(env, now)

    def view(self, ask_id: bytes) -> AskView:
        v = super().view(ask_id)
        if not v.winners:
            return v
        commits = [e for e in self.events.get(ask_id, {}).values() if isinstance(e.message, Commit)]
        commits.sort(key=lambda e: (self._arrival.get(e.id, LATE), e.id))
        first: list[bytes] = []
        for env in commits:  # THE BUG: arrival order instead of the ranking rule
            if env.signer not in first:
                first.append(env.signer)
        return replace(v, winners=tuple(first[: len(v.winners)]))
