"""Proof back-ends behind one interface (`ProofBackend`, backend.py), used by the
prover and requester roles of a node: the built-in demo proof of work (`pow`) and
external prove / verify commands (`external`, e.g. a zkVM's CLIs).
`backend_for(market)` (registry.py) picks one by the market's `proof_system` and
imports its module only then."""

from p2p_market.proving.backend import ProofBackend, ProvingError
from p2p_market.proving.registry import backend_for

__all__ = ["ProofBackend", "ProvingError", "backend_for"]
