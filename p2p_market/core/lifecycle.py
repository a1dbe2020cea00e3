"""The ask lifecycle: every state an ask can be in and every move between them.

Theory of operation
-------------------
An ask's state is a fold over the signed messages about it, taken in the order of
their signed timestamps (ties by message id), plus the passage of time. Nothing
local (arrival order, peer scores) enters, so two nodes holding the same messages
agree at the same `now`.

The settlement fold (fold.py, by the rules of rules.py) turns each message or timer into one `Event`
below, after checking the guards it needs (for instance "this receipt fails the
last slot in progress after expiry" is FAIL_IDLE). This module then decides the
next state from the table alone. A pair missing from the table means the event
has no effect in that state: the message stays recorded, with the reason, and
changes nothing.

Slots. An ask with `replicas = k` needs k distinct provers. Round 0 (named by the
ask's id) seeks k winners; every failed winner (invalid proof, timed out, or a
disputed invalid-inputs claim) opens a new round of one slot, named by the id of
the receipt that failed it, excluding every prover that already failed or holds a
slot of this ask. Inside a round, commit windows ("attempts") follow each other
until the round's slots are filled or the ask expires.

States
  OPEN            seeking provers for at least one slot
  ASSIGNED        every slot has a winner at work (or the ask expired with work in progress)
  PROVEN          k accepted proofs                                    (terminal)
  CANCELLED       the requester withdrew it before any assignment     (terminal)
  EXPIRED         expiry passed with fewer than k accepted proofs and nothing in progress
                                                                       (terminal)
  INVALID_INPUTS  a winner attested that the inputs fail the market's check; the
                  requester may dispute (a receipt `invalid` for that prover reopens)
A timed-out or invalid slot is not a state of the ask: it is FAIL_REOPEN, which
sends the ask back to OPEN with a new round ("TIMED_OUT -> next round").
"""

from __future__ import annotations

import enum
from typing import Final


class AskState(enum.Enum):
    OPEN = "open"
    ASSIGNED = "assigned"
    PROVEN = "proven"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    INVALID_INPUTS = "invalid_inputs"


class Event(enum.Enum):
    SLOTS_FILLED = "slots_filled"  # a window settled; no slot is sought any more
    SLOTS_SHORT = "slots_short"  # a window settled; some slot is still sought
    CANCEL = "cancel"  # the owner cancels and nothing was ever assigned
    CANCEL_LATE = "cancel_late"  # the owner cancels after an assignment: refused
    EXPIRE_IDLE = "expire_idle"  # expiry passes, nothing in progress
    EXPIRE_BUSY = "expire_busy"  # expiry passes, some winner still at work
    PROOF = "proof"  # a winner delivers (notice or inline) before its deadline
    ACCEPT_MORE = "accept_more"  # accepted; more slots still outstanding
    ACCEPT_LAST = "accept_last"  # accepted; that makes k accepted proofs
    ACCEPT_IDLE = "accept_idle"  # accepted after expiry; fewer than k, nothing left in progress
    FAIL_REOPEN = "fail_reopen"  # a winner failed before expiry: a new round opens
    FAIL_BUSY = "fail_busy"  # a winner failed after expiry; others still at work
    FAIL_IDLE = "fail_idle"  # a winner failed after expiry; nothing left in progress
    ATTEST_INVALID = "attest_invalid"  # a winner attests the inputs are invalid


S, E = AskState, Event

TRANSITIONS: Final[dict[AskState, dict[Event, AskState]]] = {
    S.OPEN: {
        E.SLOTS_FILLED: S.ASSIGNED,
        E.SLOTS_SHORT: S.OPEN,
        E.CANCEL: S.CANCELLED,
        E.EXPIRE_IDLE: S.EXPIRED,
        E.EXPIRE_BUSY: S.ASSIGNED,
        E.PROOF: S.OPEN,
        E.ACCEPT_MORE: S.OPEN,
        E.ACCEPT_LAST: S.PROVEN,  # a timed-out winner's on-time proof, accepted after all
        E.FAIL_REOPEN: S.OPEN,
        E.ATTEST_INVALID: S.INVALID_INPUTS,
    },
    S.ASSIGNED: {
        E.PROOF: S.ASSIGNED,
        E.ACCEPT_MORE: S.ASSIGNED,
        E.ACCEPT_LAST: S.PROVEN,
        E.ACCEPT_IDLE: S.EXPIRED,
        E.FAIL_REOPEN: S.OPEN,
        E.FAIL_BUSY: S.ASSIGNED,
        E.FAIL_IDLE: S.EXPIRED,
        E.EXPIRE_BUSY: S.ASSIGNED,
        E.ATTEST_INVALID: S.INVALID_INPUTS,
    },
    S.INVALID_INPUTS: {
        E.PROOF: S.INVALID_INPUTS,
        E.ACCEPT_MORE: S.INVALID_INPUTS,
        E.ACCEPT_LAST: S.PROVEN,
        E.ACCEPT_IDLE: S.EXPIRED,
        E.FAIL_REOPEN: S.OPEN,
        E.FAIL_BUSY: S.INVALID_INPUTS,
        E.FAIL_IDLE: S.EXPIRED,
        E.EXPIRE_BUSY: S.INVALID_INPUTS,
        E.EXPIRE_IDLE: S.EXPIRED,
    },
    S.PROVEN: {},
    S.CANCELLED: {},
    S.EXPIRED: {},
}

TERMINAL: Final = frozenset(s for s, moves in TRANSITIONS.items() if not moves)
SEEKING: Final = frozenset({S.OPEN})


def next_state(state: AskState, event: Event) -> AskState | None:
    """The state after `event`, or None when the event has no effect in `state`."""
    return TRANSITIONS[state].get(event)


class SlotState(enum.Enum):
    """One winner's assignment on an ask."""

    ASSIGNED = "assigned"  # at work until its deadline
    DELIVERED = "delivered"  # proof notice seen, awaiting the requester's receipt
    ACCEPTED = "accepted"  # the requester accepted the proof: the prover earns its price
    INVALID = "invalid"  # the requester found the proof invalid
    TIMED_OUT = "timed_out"  # the deadline passed without a proof
    ATTESTED = "attested"  # the prover attested invalid inputs

    @property
    def in_progress(self) -> bool:
        return self in (SlotState.ASSIGNED, SlotState.DELIVERED, SlotState.ATTESTED)
