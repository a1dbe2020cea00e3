"""Envelopes that a later protocol version could send: kinds v1 does not define,
sealed exactly as that version would (the §4 signing payload, real Ed25519
signatures by devnet keys). What v1 must do with them is market-v1.md's section
"Protocol evolution"."""

from __future__ import annotations

from p2p_market.core import codec
from p2p_market.core.envelope import signing_payload
from p2p_market.markets.devnet import Actor

LATER_KIND = 10
"""The first kind code v1 leaves to later versions."""


def later_kind(actor: Actor, *, now: int, n: int = 0, kind: int = LATER_KIND) -> bytes:
    """A validly signed envelope of `kind`: say a later version's bid with a field v1
    bids do not have (`min_fill`), which is why it needs a kind code of its own."""
    body = codec.pack_map(
        {
            "market": actor.market_id,
            "timestamp": now,
            "price": 100 + n,
            "proof_time": 1_000,
            "capacity": 1,
            "expires_at": now + 3_600_000,
            "seq": n + 1,
            "min_fill": 2,
        }
    )
    signature = actor.key.sign(signing_payload(kind, body))
    return codec.pack((kind, body, actor.public_key, signature))
