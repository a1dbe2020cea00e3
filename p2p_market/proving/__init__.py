"""Proof back-ends behind one interface (`ProofBackend`), used by the prover and
requester roles of a node: the built-in demo proof of work (`pow`) and external
prove / verify commands (`external`, e.g. a zkVM's CLIs). `backend_for(market)`
picks one by the market's `proof_system`."""

from p2p_market.proving.backend import ProofBackend, ProvingError, backend_for
from p2p_market.proving.external import ExternalBackend
from p2p_market.proving.pow import PowBackend, pow_ok, solve_pow

__all__ = [
    "ExternalBackend",
    "PowBackend",
    "ProofBackend",
    "ProvingError",
    "backend_for",
    "pow_ok",
    "solve_pow",
]
