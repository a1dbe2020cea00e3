"""The one interface every proof back-end implements (the registry that picks one by
market is registry.py).

`prove`'s `deadline_s` is RELATIVE: the seconds left from the call until the proof
is due, as in `trio.fail_after` (a caller holding a deadline in epoch milliseconds
passes `(deadline_ms - now_ms) / 1000`). Zero or less means already late;
`math.inf` means no deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from p2p_market.core.messages import Market

DEFAULT_EXTERNAL_TIMEOUT_S = 600.0
"""Longest an external command may run when the caller's deadline is later."""


class ProvingError(Exception):
    """Proving, verifying or checking could not be done (as opposed to a proof that
    is simply invalid, which `verify` reports as False). The message is one line; for
    an external command it names the exit status and the tail of its stderr."""


@runtime_checkable
class ProofBackend(Protocol):
    async def prove(self, market: Market, inputs: bytes, deadline_s: float) -> bytes:
        """The proof for `inputs`, or ProvingError if it cannot be had within
        `deadline_s` seconds from now. Cancellable."""
        ...

    async def verify(self, market: Market, inputs: bytes, proof: bytes) -> bool:
        """True if `proof` is a valid proof for `inputs`, False if it is not;
        ProvingError if that cannot be decided (a verifier that fails or hangs)."""
        ...

    async def check_inputs(self, market: Market, inputs: bytes) -> bool:
        """False if `inputs` are invalid for this market, so that no proof can exist
        (grounds for an InvalidInputs attestation); ProvingError if undecidable."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendOptions:
    """What a node's config may say about proving, for whichever back-end its markets
    use; each back-end reads what applies to it and ignores the rest."""

    prove_cmd: str | None = None
    verify_cmd: str | None = None
    check_cmd: str | None = None
    size_cmd: str | None = None
    timeout_s: float = DEFAULT_EXTERNAL_TIMEOUT_S
    chunk: int | None = None
    workers: int = 1
    """How many proofs a back-end with helper processes runs at once (snark.py);
    a prover's capacity."""
