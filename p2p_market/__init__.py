"""p2p-market: a peer-to-peer, leaderless market for zero-knowledge proofs."""

__version__ = "0.1.0"
