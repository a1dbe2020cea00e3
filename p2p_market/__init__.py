"""p2p-market: a peer-to-peer, leaderless market for zero-knowledge proofs.

The SDK is imported lazily, so that `import p2p_market` stays light:

    async with p2p_market.open_client(bootstrap=[...], market="devnet") as client:
        proof = await client.request_proof(b"inputs", max_price=20, max_proof_time=10_000)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "ProofResult", "RequestFailed", "__version__", "open_client"]

if TYPE_CHECKING:
    from p2p_market.sdk import Client, ProofResult, RequestFailed, open_client

_SDK_NAMES = frozenset({"Client", "ProofResult", "RequestFailed", "open_client"})


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        from p2p_market import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'p2p_market' has no attribute {name!r}")
