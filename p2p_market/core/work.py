"""Work declared, bounded and priced: an ask's `size` and a bid's `max_size`.

Theory of operation. Proving work varies within one market (a pow ask may name a
higher difficulty in its inputs; a zkVM program runs for as many cycles as its
inputs make it), so a requester could otherwise make a prover do far more work than
it bid for. An ask therefore declares its size in the market's units of work; a bid
prices one unit and names the largest size it takes (`max_size`), and its
`proof_time` is its promise for any ask it takes. For an ask of size s a bid costs
s x price, and the ask's `max_price` caps that total. Scaling every bid's price by
the same s keeps their order, so ranking compares per-unit prices unchanged
(ranking.py) and only the price cap is divided: s x price <= max_price exactly when
price <= max_price // s (integers).

Where the stored messages alone fix the size, every node checks the declaration and
a wrong one is provable misbehaviour (REJECT `misdeclared_size`): a circuit market's
proofs all cost the same (size 1), and a pow ask's inline public inputs name its
difficulty (one unit is the market's difficulty; each bit above it doubles the
work). Where they cannot (confidential or directly delivered inputs, `external`
markets) the winner checks the size once it has the inputs and, if the ask
understated it, signs an InvalidInputs attestation saying so: the ask ends without
a proof and the prover is not blamed (protocols/market-v1.md §5.3, §14).
"""

from __future__ import annotations

from typing import Final

from p2p_market.core.limits import MAX_SIZE
from p2p_market.core.messages import Ask, Bid, Market, sha256
from p2p_market.core.statements import effective_difficulty

FIXED_WORK_SYSTEMS: Final = frozenset({"groth16", "plonk"})
"""Proof systems whose every proof costs the same: their asks are of size 1."""


def pow_size(market_difficulty: int, difficulty: int) -> int:
    """Units of work (each 2**market_difficulty expected hashes) a pow proof at
    `difficulty` takes; at least 1. Capped at MAX_SIZE + 1 so that an ask needing
    more than any declaration can say is still told apart."""
    return min(1 << max(0, difficulty - market_difficulty), MAX_SIZE + 1)


def inputs_size(market: Market, inputs: bytes) -> int | None:
    """The size proving `inputs` takes in this market, when the protocol can say (None
    otherwise, or when the inputs are invalid: that is InvalidInputs' business)."""
    if market.proof_system in FIXED_WORK_SYSTEMS:
        return 1
    if market.proof_system != "pow":
        return None
    try:
        difficulty = effective_difficulty(market.difficulty, inputs)
    except ValueError:
        return None
    return pow_size(market.difficulty, difficulty)


def required_size(market: Market, ask: Ask) -> int | None:
    """The size the stored ask itself shows it needs, None when it cannot show it
    (inputs confidential or delivered directly, or a system whose work the protocol
    does not know)."""
    if market.proof_system in FIXED_WORK_SYSTEMS:
        return 1
    if ask.confidential or sha256(ask.inputs) != ask.inputs_hash:
        return None  # the inputs are not in the message
    return inputs_size(market, ask.inputs)


def misdeclared(market: Market, ask: Ask) -> str | None:
    """Why the ask's declared size is provably wrong, None if it is not."""
    need = required_size(market, ask)
    if need is None or need == ask.size:
        return None
    return f"declares size {ask.size}, its inputs need {need}"


def unit_caps(ask: Ask) -> tuple[int, int]:
    """The (per-unit price, proof_time) a bid may have to be within the ask's caps."""
    return ask.max_price // ask.size, ask.max_proof_time


def takes(bid: Bid, ask: Ask) -> bool:
    """Whether the bid takes asks of this size at all."""
    return ask.size <= bid.max_size


def within(bid_price: int, bid_proof_time: int, ask: Ask) -> bool:
    """Whether a bid's terms (price per unit, proof_time) are within the ask's caps
    at its size."""
    max_price, max_proof_time = unit_caps(ask)
    return bid_price <= max_price and bid_proof_time <= max_proof_time
