"""What the core asks its shell to do, or tells it happened. The shell (network
node, simulator, tests) performs them; the core never does I/O itself."""

from __future__ import annotations

from dataclasses import dataclass

from p2p_market.core.lifecycle import AskState, SlotState


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitToAsk:
    """The local prover should sign and publish this commit now."""

    ask: bytes
    round: bytes
    attempt: int
    bid: bytes
    price: int
    proof_time: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptSettled:
    """A commit window closed more than the skew tolerance ago (the award lag, for
    the local requester's asks), or an award decided it sooner. Its winners are
    final if the requester's award decided them (`final`); otherwise they are the
    ranking's, tentative until the award, and a late message may change them (a
    Reorg follows). The ask's requester answers this with its Award of `commits`."""

    ask: bytes
    round: bytes
    attempt: int
    winners: tuple[bytes, ...]
    commits: tuple[bytes, ...] = ()
    """The winners' commit ids, aligned with `winners`."""
    window_end: int = 0
    final: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Assigned:
    """A prover won a slot: it should prove by `deadline`; the requester sends inputs."""

    ask: bytes
    prover: bytes
    deadline: int
    price: int
    proof_time: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Reorg:
    ask: bytes
    round: bytes
    attempt: int
    before: tuple[bytes, ...]
    after: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadlinePassed:
    """A winner's deadline passed without a proof: the requester may time it out."""

    ask: bytes
    prover: bytes
    deadline: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProofDelivered:
    ask: bytes
    prover: bytes
    proof_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotJudged:
    """The requester's receipt decided a winner's slot: ACCEPTED (the prover earns
    `price`, its own price per unit times the ask's size, pay-as-bid: market-v1.md
    §11), INVALID or TIMED_OUT. Told once per slot and outcome (an `accepted`
    receipt may follow a failure: payment only adds, §10)."""

    ask: bytes
    prover: bytes
    outcome: SlotState
    price: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AskStateChanged:
    ask: bytes
    before: AskState | None
    after: AskState


@dataclass(frozen=True, slots=True, kw_only=True)
class EquivocationSeen:
    """Two validly signed messages with the same signer and key: both kept as evidence,
    the first in signed order (timestamp, then id) is the one that counts."""

    signer: bytes
    kept: bytes
    dropped: bytes


Effect = (
    CommitToAsk
    | AttemptSettled
    | Assigned
    | Reorg
    | DeadlinePassed
    | ProofDelivered
    | SlotJudged
    | AskStateChanged
    | EquivocationSeen
)
