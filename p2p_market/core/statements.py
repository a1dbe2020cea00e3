"""Proof statements every node can check for itself, and so may act on in the fold.

A proof that fails its market's verifier is objective evidence against the prover
who signed it (penalties.py) only if every node reaches the same verdict from the
stored messages alone: the verifier must be a pure function of the market, the
ask's public inputs and the proof, cheap enough to run on every inline proof, and
part of the protocol (protocols/market-v1.md §7). `pow` is such a system (one
hash). Systems whose verifier is an outside program (`external`, and the zk-SNARK
systems, which need snarkjs) are not: a node that cannot run it would fold apart,
so their invalid proofs stay the requester's word (roles/reputation.py).

The pow statement itself lives here, not in proving/pow.py, so that the back-end
that makes proofs and the fold that judges them cannot disagree.
"""

from __future__ import annotations

import hashlib
from typing import Final

from p2p_market.core.messages import Ask, Market, Proof, sha256

POW_DOMAIN: Final = b"p2p-market/pow/v1\x00"
NONCE_BYTES: Final = 8
NONCE_SPACE: Final = 1 << (8 * NONCE_BYTES)
MAX_POW_INPUT_BYTES: Final = 1024 * 1024
MAX_INPUT_DIFFICULTY: Final = 40
"""The highest difficulty a `difficulty=N` line in the inputs may ask for."""
MAX_DIFFICULTY: Final = 64
_LINE_KEY: Final = b"difficulty="


def input_difficulty(inputs: bytes) -> int | None:
    """The difficulty named by the inputs' first line, None if the first line does
    not start with ``difficulty=``; ValueError if it does but is malformed or out of
    0..MAX_INPUT_DIFFICULTY."""
    first = inputs.split(b"\n", 1)[0]
    if not first.startswith(_LINE_KEY):
        return None
    digits = first[len(_LINE_KEY) :]
    canonical = digits.isdigit() and (digits == b"0" or digits[:1] != b"0")
    if not canonical or len(digits) > 2 or int(digits) > MAX_INPUT_DIFFICULTY:
        shown = digits[:16].decode("ascii", "replace")
        raise ValueError(f"bad difficulty line {shown!r}: want 0..{MAX_INPUT_DIFFICULTY}")
    return int(digits)


def effective_difficulty(market_difficulty: int, inputs: bytes) -> int:
    """The difficulty a proof for `inputs` must meet; ValueError if the inputs are
    invalid (too large or a malformed difficulty line)."""
    if len(inputs) > MAX_POW_INPUT_BYTES:
        raise ValueError(f"inputs of {len(inputs)} bytes exceed {MAX_POW_INPUT_BYTES}")
    if not 0 <= market_difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty {market_difficulty} outside 0..{MAX_DIFFICULTY}")
    named = input_difficulty(inputs)
    return market_difficulty if named is None else named


def pow_target(difficulty: int) -> bytes | None:
    """Digests below this (as 32-byte big-endian strings) have `difficulty` leading
    zero bits; None when every digest qualifies (difficulty 0)."""
    if difficulty <= 0:
        return None
    return (1 << (256 - difficulty)).to_bytes(32, "big")


def pow_ok(inputs: bytes, difficulty: int, proof: bytes) -> bool:
    """Whether `proof` is a nonce meeting `difficulty` for `inputs`: one hash."""
    if type(proof) is not bytes or len(proof) != NONCE_BYTES:
        return False
    target = pow_target(difficulty)
    return target is None or hashlib.sha256(POW_DOMAIN + inputs + proof).digest() < target


def provably_invalid(market: Market, ask: Ask, proof: Proof) -> bool:
    """Whether the stored messages alone show `proof` to be invalid for `ask`: the
    market's system has a pure verifier here, the inputs are public and inline (not
    confidential, not delivered directly), the proof is inline, and it fails. False
    whenever any of that is missing: no verdict is not a verdict of valid, only one
    no node may act on."""
    if market.proof_system != "pow" or ask.confidential:
        return False
    if sha256(ask.inputs) != ask.inputs_hash or sha256(proof.proof) != proof.proof_hash:
        return False  # inputs or proof travel directly: nothing to judge here
    try:
        difficulty = effective_difficulty(market.difficulty, ask.inputs)
    except ValueError:
        # Inputs no proof can meet: the prover should attest InvalidInputs; a
        # proof anyway is not a wrong answer to a valid question, so no evidence.
        return False
    return not pow_ok(ask.inputs, difficulty, proof.proof)
