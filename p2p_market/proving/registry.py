"""The choice of a proof back-end by the market's `proof_system`.

The table names each back-end's module, which is imported only when a market of
its system is met: a back-end may pull in heavy or optional dependencies, and the
back-ends import backend.py (for `ProvingError`), so a registry that imported them
at import time would close a circle. A back-end module provides
`from_options(market, options) -> ProofBackend`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio

from p2p_market.proving.backend import DEFAULT_EXTERNAL_TIMEOUT_S, BackendOptions

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2p_market.core.messages import Market
    from p2p_market.proving.backend import ProofBackend

BACKENDS: dict[str, str] = {
    "pow": "p2p_market.proving.pow",
    "external": "p2p_market.proving.external",
    "groth16": "p2p_market.proving.snark",
    "plonk": "p2p_market.proving.snark",
}
"""proof_system → the module of its back-end."""


def backend_for(
    market: Market,
    *,
    prove_cmd: str | None = None,
    verify_cmd: str | None = None,
    check_cmd: str | None = None,
    size_cmd: str | None = None,
    timeout_s: float = DEFAULT_EXTERNAL_TIMEOUT_S,
    chunk: int | None = None,
    workers: int = 1,
) -> ProofBackend:
    """The back-end for `market.proof_system`. Options that do not apply to that
    system are ignored, so one node config can be passed for every market.

    - ``pow``: `PowBackend` (`chunk`: hashes per worker-thread chunk).
    - ``external``: `ExternalBackend`; the verify command is `verify_cmd` if given,
      else the market's `verifier` field; the prove command (`prove_cmd`) comes from
      the prover's own config (a requester needs none).
    - ``groth16``, ``plonk``: `SnarkBackend` (snark.py: snarkjs in a Node.js worker;
      the circuit's artifacts are pinned by hash in the market's `verifier` field);
      `timeout_s` bounds each request, `workers` worker processes run at once.

    Raises ValueError for a malformed command template, and for an unknown system.
    """
    module = BACKENDS.get(market.proof_system)
    if module is None:
        raise ValueError(f"unknown proof system {market.proof_system!r}")
    options = BackendOptions(
        prove_cmd=prove_cmd,
        verify_cmd=verify_cmd,
        check_cmd=check_cmd,
        size_cmd=size_cmd,
        timeout_s=timeout_s,
        chunk=chunk,
        workers=workers,
    )
    backend: ProofBackend = importlib.import_module(module).from_options(market, options)
    return backend


async def close_at_exit(
    backends: Iterable[object], *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """A task that waits until its nursery is cancelled, then closes each back-end
    that has an `aclose` (snark.py's worker): start it next to the roles that use
    them, so that no helper process outlives the node."""
    closers = [b for b in backends if callable(getattr(b, "aclose", None))]
    task_status.started()
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            for backend in closers:
                await backend.aclose()  # type: ignore[attr-defined]
