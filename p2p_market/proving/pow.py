"""The built-in DEMO proof system: hash-based proof of work.

    ***************************************************************************
    *  THIS IS A DEMO. It is NOT zero-knowledge, NOT succinct in any useful    *
    *  sense, and NOT a proof of anything except that someone spent work on    *
    *  these inputs. Anyone who sees a proof can copy it; two provers of the   *
    *  same ask find the same nonce. It exists so that the market can be run   *
    *  end to end, with a real asymmetric cost (expensive to prove, one hash   *
    *  to verify), without installing a zkVM. Real markets use `external`.     *
    ***************************************************************************

The statement (core/statements.py, shared with the fold, which treats a failing
inline proof as evidence against its signer): a proof is an 8-byte nonce such that

    SHA-256(b"p2p-market/pow/v1\\x00" + inputs + nonce)

has at least `d` leading zero bits. The expected work is 2**d hashes.

Difficulty: `d = market.difficulty` (0..64), unless the inputs' FIRST LINE is
exactly ``difficulty=N`` (ASCII decimal, no sign, no leading zeros, no spaces, no
``\\r``, 0 <= N <= 40), in which case d = N. The line is part of the inputs and so is
hashed with them. Inputs whose first line starts with ``difficulty=`` but is not of
that form, and inputs over `MAX_POW_INPUT_BYTES`, are invalid (`check_inputs` says
False, `prove` raises ProvingError, `verify` says False).

Provers search nonces 0, 1, 2, ... in chunks of `chunk` hashes, each chunk in a
worker thread (`trio.to_thread.run_sync`) so the event loop keeps running; the
deadline is checked between chunks, and cancellation takes effect at the end of the
running chunk (about 40 ms at 50k hashes on one core of a small box).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final

import trio

from p2p_market.core.statements import (
    MAX_DIFFICULTY,
    MAX_INPUT_DIFFICULTY,
    MAX_POW_INPUT_BYTES,
    NONCE_BYTES,
    NONCE_SPACE,
    POW_DOMAIN,
    effective_difficulty,
    input_difficulty,
    pow_ok,
    pow_target,
)
from p2p_market.proving.backend import BackendOptions, ProvingError

__all__ = [
    "MAX_DIFFICULTY",
    "MAX_INPUT_DIFFICULTY",
    "MAX_POW_INPUT_BYTES",
    "NONCE_BYTES",
    "POW_DOMAIN",
    "PowBackend",
    "effective_difficulty",
    "input_difficulty",
    "pow_ok",
    "solve_pow",
]

if TYPE_CHECKING:
    from p2p_market.core.messages import Market

DEFAULT_CHUNK: Final = 50_000


def solve_pow(inputs: bytes, difficulty: int, start_nonce: int, count: int) -> bytes | None:
    """Try nonces start_nonce .. start_nonce + count - 1 (within the 8-byte space) and
    return the first that meets `difficulty`, as 8 big-endian bytes, else None. Pure
    and CPU-bound: run it in a worker thread from async code."""
    stop = min(start_nonce + count, NONCE_SPACE)
    if start_nonce < 0 or start_nonce >= stop:
        return None
    target = pow_target(difficulty)
    if target is None:
        return start_nonce.to_bytes(NONCE_BYTES, "big")
    copy = hashlib.sha256(POW_DOMAIN + inputs).copy
    for n in range(start_nonce, stop):
        nonce = n.to_bytes(NONCE_BYTES, "big")
        h = copy()
        h.update(nonce)
        if h.digest() < target:
            return nonce
    return None


class PowBackend:
    """`ProofBackend` for markets with proof_system ``pow`` (see the module doc)."""

    def __init__(self, *, chunk: int = DEFAULT_CHUNK) -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self.chunk = chunk

    async def prove(self, market: Market, inputs: bytes, deadline_s: float) -> bytes:
        try:
            d = effective_difficulty(market.difficulty, inputs)
        except ValueError as e:
            raise ProvingError(f"pow: invalid inputs: {e}") from None
        end = trio.current_time() + deadline_s
        nonce = 0
        while nonce < NONCE_SPACE:
            if trio.current_time() >= end:
                raise ProvingError(
                    f"pow: deadline reached after {nonce} hashes at difficulty {d}"
                    f" (expected work {_work(d)} hashes)"
                )
            found = await trio.to_thread.run_sync(solve_pow, inputs, d, nonce, self.chunk)
            if found is not None:
                return found
            nonce += self.chunk
        raise ProvingError(f"pow: no nonce meets difficulty {d}")  # pragma: no cover

    async def verify(self, market: Market, inputs: bytes, proof: bytes) -> bool:
        try:
            d = effective_difficulty(market.difficulty, inputs)
        except ValueError:
            return False
        return pow_ok(inputs, d, proof)

    async def check_inputs(self, market: Market, inputs: bytes) -> bool:
        try:
            effective_difficulty(market.difficulty, inputs)
        except ValueError:
            return False
        return True


def _work(difficulty: int) -> str:
    return f"2**{difficulty}" if difficulty > 20 else str(2**difficulty)


def from_options(market: Market, options: BackendOptions) -> PowBackend:
    """The registry's constructor (registry.py): `chunk` is all that applies."""
    return PowBackend(chunk=DEFAULT_CHUNK if options.chunk is None else options.chunk)
