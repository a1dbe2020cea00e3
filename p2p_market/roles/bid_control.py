"""What an operator may change about a running prover's bid, checked, and how it is
remembered across a restart (the role store's `settings` table).

Protocol v1 (protocols/market-v1.md §5.2) has no message that withdraws a bid:
capacity is 1..1024, and Cancel is for asks. A prover's *current* bid is its bid
with the highest `seq`, and a bid is matched only while it is live. So pausing
(and withdrawing) signs a new bid that supersedes the old one and takes no ask
(`withdrawal_fields`): the highest price and proof time a bid may carry, which no
ask's caps admit unless they are themselves the largest possible, so no node ranks
it ahead of anyone, and this node's core suggests no commit for it. It is signed
for the ordinary bid ttl; once it lapses the prover simply has no live bid. It
must be signed, not just left to lapse: while the old bid is live every node
counts it among the better bids, other provers wait stages for it, and the core
of this node would go on suggesting commits the paused role does not make.

Stored settings and the config: the role starts from the config's terms; an
update through the API is stored with the config terms it was made on
(`StoredBid.base`). At the next start, if the config's terms are still those, the
update applies; if the operator has edited the config since, the config wins
(it is the newer word) and the stored update is dropped. A pause survives either way.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from p2p_market.core import limits as L

BidState = Literal["active", "paused", "withdrawn"]
BID_STATES: Final[tuple[BidState, ...]] = ("active", "paused", "withdrawn")
TERMS: Final = ("price", "proof_time", "capacity", "max_size", "bid_ttl_ms")
"""The bid's terms an operator may change while the prover runs."""
SETTING_NAME: Final = "prover_bid"


@dataclass(frozen=True, slots=True, kw_only=True)
class BidTerms:
    """The terms the role signs into its bid (ProverSettings without the market)."""

    price: int
    proof_time: int
    capacity: int
    max_size: int
    bid_ttl_ms: int


def terms_of(settings: Any) -> BidTerms:
    """The terms of a ProverSettings (or anything with those fields)."""
    return BidTerms(**{k: getattr(settings, k) for k in TERMS})


def updated(terms: BidTerms, changes: dict[str, int], max_lifetime_ms: int) -> BidTerms:
    """`terms` with `changes` applied, checked as `prover_plan` checks a config:
    ValueError with one line naming the bad field."""
    unknown = sorted(set(changes) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown bid setting {unknown[0]!r}: one of {', '.join(TERMS)}")
    new = dataclasses.replace(terms, **changes)
    if not 0 <= new.price <= L.MAX_UINT:
        raise ValueError(f"price must be a non-negative integer, not {new.price}")
    if not 1 <= new.proof_time <= L.MAX_UINT:
        raise ValueError(f"proof time must be at least 1 ms, not {new.proof_time}")
    if not 1 <= new.capacity <= L.MAX_CAPACITY:
        raise ValueError(f"capacity must be between 1 and {L.MAX_CAPACITY}, not {new.capacity}")
    if not 1 <= new.max_size <= L.MAX_SIZE:
        raise ValueError(f"max size must be between 1 and {L.MAX_SIZE}, not {new.max_size}")
    if not 1_000 <= new.bid_ttl_ms <= max_lifetime_ms:
        raise ValueError(
            f"bid ttl must be 1000..{max_lifetime_ms} ms (the market's max lifetime),"
            f" not {new.bid_ttl_ms}"
        )
    return new


def withdrawal_fields(market: bytes, ttl_ms: int) -> dict[str, Any]:
    """The fields of the bid that supersedes this prover's bid and takes no ask (the
    module docstring says why a bid)."""
    return {
        "market": market.hex(),
        "price": L.MAX_UINT,
        "proof_time": L.MAX_UINT,
        "capacity": 1,
        "max_size": 1,
        "ttl_ms": ttl_ms,
    }


@dataclass(frozen=True, slots=True)
class StoredBid:
    """The row kept in the role store: the terms in force, the config's terms they
    were made from, and whether the bid is paused."""

    terms: BidTerms
    base: BidTerms
    state: BidState

    def dumps(self) -> str:
        return json.dumps(
            {
                "terms": dataclasses.asdict(self.terms),
                "base": dataclasses.asdict(self.base),
                "state": self.state,
            },
            sort_keys=True,
        )

    @staticmethod
    def loads(text: str) -> StoredBid | None:
        """The stored row, or None if it does not read as one (then it is ignored)."""
        try:
            row = json.loads(text)
            state = row["state"]
            if state not in BID_STATES:
                return None
            return StoredBid(BidTerms(**row["terms"]), BidTerms(**row["base"]), state)
        except (ValueError, TypeError, KeyError):
            return None


def at_start(config: BidTerms, stored: StoredBid | None) -> tuple[BidTerms, BidState, str]:
    """The terms and state a starting role uses, and a line for the log ("" if
    nothing was stored): the module docstring's rule."""
    if stored is None:
        return config, "active", ""
    if stored.base != config:
        return (
            config,
            stored.state,
            "the config's bid terms changed since the last update through the API:"
            " the config's apply",
        )
    return stored.terms, stored.state, "bid terms as last updated through the API"
