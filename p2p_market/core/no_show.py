"""No-shows: bids that would have won an attempt and did not commit to it.

Why: the staged fallback (protocols/market-v1.md §16) makes a prover wait for the
bids that rank better than its own to commit first. A bid that never commits (a
prover that went away, or a phantom published to hold honest provers back) would
delay every ask it ranks well for. Once an attempt has settled, the signed messages
show which bids ranked better than one of its winners and were eligible for it all
window long, yet committed nothing: such a bid is a **no-show**, and the matcher
ranks it after every bid that is not, until its prover signs a new bid.

This is local policy (§16), not a validity rule: it decides only when the local
prover commits, never who wins. It is a function of the stored messages (the ask,
the attempt's commits, each prover's bid history and slot intervals), so nodes that
hold the same messages name the same no-shows. A prover is excused when its slots
were all busy during the window, when it already holds a slot of the ask or was
excluded from it, and when its bid was signed after the window opened.
"""

from __future__ import annotations

from p2p_market.core.book import BidBook, StoredBid
from p2p_market.core.messages import Ask, Prefer
from p2p_market.core.ranking import rank_key
from p2p_market.core.settlement import AskRun, Attempt, Intervals, overlapping
from p2p_market.core.work import takes


def find_no_shows(
    *,
    book: BidBook,
    ask_id: bytes,
    ask: Ask,
    attempt: Attempt,
    run: AskRun | None,
    occupancy: dict[bytes, Intervals],
    skew_ms: int,
) -> list[StoredBid]:
    """The current bids that are no-shows of this settled attempt (module doc)."""
    if not attempt.winners:
        return []
    prefer_cost = ask.prefer == Prefer.COST.value
    committed = {prover for _, prover, _ in attempt.candidates}
    winner_keys = [key for key, prover, _ in attempt.candidates if prover in attempt.winners]
    if not winner_keys:
        return []  # awarded commits that were not valid candidates here: no ranking
    worst = max(winner_keys)
    start, end = attempt.window_start, attempt.window_end
    excused = set() if run is None else run.excluded | set(run.slots)
    found: list[StoredBid] = []
    for primary, secondary, stored in book._walk(ask):
        if (primary, secondary) > worst[:2]:
            break
        prover, bid = stored.prover, stored.bid
        if prover in committed or prover in excused:
            continue
        if (ask.allow and prover not in ask.allow) or (ask.deny and prover in ask.deny):
            continue
        if not takes(bid, ask):
            continue  # the ask is larger than its bid takes
        if bid.timestamp > start or bid.expires_at < end:
            continue  # not its offer for the whole window
        if rank_key(prefer_cost, bid.price, bid.proof_time, ask_id, prover) >= worst:
            continue
        busy = sum(
            1
            for o in overlapping(occupancy, prover, start - skew_ms, end)
            if o.start < end and o.end + skew_ms > start
        )
        if busy >= bid.capacity:
            continue
        found.append(stored)
    return found
