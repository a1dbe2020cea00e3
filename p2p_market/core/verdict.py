"""Verdicts on an incoming envelope, in the go-libp2p-pubsub sense.

ACCEPT: store, apply and forward. IGNORE: drop without blame (duplicate, stale, not
yet applicable, possibly our own clock, a kind only a later version knows). REJECT:
provable misbehaviour by the signer or a malformed message; the forwarding peer may
be penalised. Only ACCEPT is ever forwarded. Expected failures are values, never
exceptions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"


class Reason(enum.Enum):
    OK = "ok"
    # Cheapest first: size, decode, canonical form.
    OVERSIZED = "oversized"
    UNDECODABLE = "undecodable"
    NOT_CANONICAL = "not_canonical"
    UNKNOWN_KIND = "unknown_kind"
    """IGNORE, not REJECT: a later protocol version's kind, perhaps (never blamed)."""
    BAD_FIELDS = "bad_fields"
    # Signature.
    BAD_SIGNATURE = "bad_signature"
    # Seen cache.
    DUPLICATE = "duplicate"
    # Meaning.
    WRONG_MARKET = "wrong_market"
    EXPIRED = "expired"
    STALE = "stale"
    EXPIRY_TOO_FAR = "expiry_too_far"
    FROM_FUTURE = "from_future"
    EQUIVOCATION = "equivocation"
    INVALID_PROOF = "invalid_proof"
    """ACCEPT with a reason: a proof its market's pure verifier rejects
    (core/statements.py), kept, forwarded and synced as evidence against its signer."""
    NOT_ASK_OWNER = "not_ask_owner"
    NOT_BID_OWNER = "not_bid_owner"
    COMMIT_MISMATCH = "commit_mismatch"
    COMMIT_OVER_CAPS = "commit_over_caps"
    COMMIT_OVER_SIZE = "commit_over_size"
    """A commit to an ask larger than its bid's `max_size` (core/work.py)."""
    MISDECLARED_SIZE = "misdeclared_size"
    """An ask whose declared size its own inputs or market contradict (core/work.py)."""
    BID_NOT_LIVE = "bid_not_live"
    ORPHAN = "orphan"
    CANCEL_AFTER_ASSIGNMENT = "cancel_after_assignment"
    BAD_AWARD = "bad_award"
    AFTER_AWARD = "after_award"
    # Shell only (the core never returns these): a signer or peer over its rate limit;
    # a message the node would keep but could not write to its log, so refused, the
    # state untouched (disk full; any other write failure, an I/O error say).
    RATE_LIMITED = "rate_limited"
    GRAYLISTED = "graylisted"
    """A forwarding peer whose recent penalties (net/scores.py) put it on the graylist:
    its frames are dropped before any check."""
    STORAGE_FULL = "storage_full"
    STORAGE_FAILED = "storage_failed"


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    reason: Reason
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.status is Status.ACCEPT

    def __str__(self) -> str:
        tail = f" ({self.detail})" if self.detail else ""
        return f"{self.status.value}:{self.reason.value}{tail}"


ACCEPTED = Verdict(Status.ACCEPT, Reason.OK)


def reject(reason: Reason, detail: str = "") -> Verdict:
    return Verdict(Status.REJECT, reason, detail)


def ignore(reason: Reason, detail: str = "") -> Verdict:
    return Verdict(Status.IGNORE, reason, detail)
