"""The one ranking rule, shared by the matcher (who should commit) and by the
settlement (who wins among commits), so the two can never disagree.

prefer=cost ranks by (price, proof_time, tiebreak); prefer=time by (proof_time,
price, tiebreak). The tiebreak H(ask_id || prover) differs per ask, so provers
with identical offers share the work instead of the same one always winning.
"""

from __future__ import annotations

import hashlib

RankKey = tuple[int, int, bytes]


def tiebreak(ask_id: bytes, prover: bytes) -> bytes:
    return hashlib.sha256(ask_id + prover).digest()


def rank_key(
    prefer_cost: bool, price: int, proof_time: int, ask_id: bytes, prover: bytes
) -> RankKey:
    tb = tiebreak(ask_id, prover)
    return (price, proof_time, tb) if prefer_cost else (proof_time, price, tb)
