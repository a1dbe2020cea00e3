"""JSON views of core objects, for facade implementations (the runtime, tests): what
the control API answers for a bid and an ask. Apart from node/api.py so that what
renders them does not import the HTTP stack (the CLI starts faster)."""

from __future__ import annotations

from typing import Any

from p2p_market.core.book import StoredBid
from p2p_market.core.state import AskView


def bid_json(stored: StoredBid) -> dict[str, Any]:
    b = stored.bid
    return {
        "id": stored.id.hex(),
        "prover": stored.prover.hex(),
        "price": b.price,
        "proof_time": b.proof_time,
        "capacity": b.capacity,
        "max_size": b.max_size,
        "timestamp": b.timestamp,
        "expires_at": b.expires_at,
        "seq": b.seq,
    }


def ask_json(view: AskView) -> dict[str, Any]:
    a = view.ask
    return {
        "id": view.id.hex(),
        "market": a.market.hex(),
        "requester": view.requester.hex(),
        "state": view.state.value,
        "timestamp": a.timestamp,
        "max_price": a.max_price,
        "max_proof_time": a.max_proof_time,
        "prefer": a.prefer,
        "replicas": a.replicas,
        "size": a.size,
        "expires_at": a.expires_at,
        "inputs_hash": a.inputs_hash.hex(),
        "inputs_size": len(a.inputs),
        "confidential": a.confidential,
        "allow": [k.hex() for k in a.allow],
        "deny": [k.hex() for k in a.deny],
        "nonce": a.nonce,
        "winners": [p.hex() for p in view.winners],
        "prices": list(view.prices),
        "slot_states": [s.value for s in view.slot_states],
        "accepted": [p.hex() for p in view.accepted],
        "paid": view.paid,
    }
