"""Real, signed protocol messages for seed corpora: one envelope of every kind of
the devnet market, signed by devnet keys, so the seeds pass every check and the
fuzzer mutates from deep inside the parsers."""

from __future__ import annotations

import functools

from p2p_market.core import codec
from p2p_market.core.crypto import SigningKey, devnet_key
from p2p_market.core.envelope import message_id, seal
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market

NOW = GENESIS_MS + 60_000


def market_id() -> bytes:
    return Actor("requester-1", default_market()).market_id


@functools.cache
def envelopes() -> tuple[bytes, ...]:
    """Every v1 kind, each valid and signed: market, bid, ask (inline and
    confidential), commit, cancel, proof, receipt, invalid inputs, award."""
    market = default_market()
    requester = Actor("requester-1", market)
    prover = Actor("prover-1", market)
    bid = prover.bid(now=NOW, price=7, proof_time=1_000, capacity=2)
    ask = requester.ask(now=NOW, max_price=10, max_proof_time=5_000, inputs=b"inputs")
    secret = requester.ask(
        now=NOW, max_price=10, max_proof_time=5_000, inputs=b"secret", confidential=True,
        allow=(prover.public_key,),
    )  # fmt: skip
    ask_id = message_id(ask)
    commit = prover.commit(now=NOW + 10, ask=ask_id, bid=message_id(bid), price=7, proof_time=1_000)
    return (
        seal(market, devnet_key("relay-1")),
        bid,
        ask,
        secret,
        commit,
        requester.cancel(now=NOW + 20, ask=message_id(secret)),
        prover.proof(now=NOW + 30, ask=ask_id, proof=b"proof"),
        requester.receipt(now=NOW + 40, ask=ask_id, prover=prover.public_key, outcome="accepted"),
        prover.invalid_inputs(now=NOW + 50, ask=ask_id, reason="bad inputs"),
        requester.award(now=NOW + 60, ask=ask_id, commits=[message_id(commit)]),
    )


def unknown_kind(key: SigningKey) -> bytes:
    """A canonical envelope of a kind v1 does not define (a later version's)."""
    return codec.pack((200, codec.pack({"x": 1}), key.public_key, bytes(64)))
