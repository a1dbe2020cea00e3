"""What the local control API may ask of a running node. The runtime implements it;
the API server and its tests depend only on this protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Submitted:
    """The node's verdict on an envelope submitted through the API."""

    id: str
    status: str
    reason: str
    detail: str = ""


class NodeFacade(Protocol):
    def status(self) -> dict[str, Any]:
        """Node identity (public key hex, peer id), listen addrs, peers, markets, uptime,
        and "storage": "ok", or why the log cannot be written (messages are refused)."""
        ...

    def markets(self) -> list[dict[str, Any]]:
        """Each followed market: id hex, name, proof system, parameters."""
        ...

    def book(self, market: str) -> dict[str, Any]:
        """`{"bids": [...], "asks": [...]}` for a market id hex; KeyError if unknown."""
        ...

    def ask(self, ask_id: str) -> dict[str, Any]:
        """One ask's view (state, winners, prices, slot states); KeyError if unknown."""
        ...

    async def submit(self, raw: bytes) -> Submitted:
        """Apply an already signed envelope locally and publish it if accepted."""
        ...

    async def place_bid(self, fields: dict[str, Any]) -> Submitted:
        """Sign a Bid with the node's key from `fields` (market, price, proof_time,
        capacity, ttl_ms) and submit it. ValueError names a bad field."""
        ...

    async def place_ask(self, fields: dict[str, Any]) -> Submitted:
        """Sign an Ask (market, max_price, max_proof_time, prefer, replicas, ttl_ms,
        inputs hex or inputs_hash hex, confidential, allow, deny) and submit it."""
        ...

    async def cancel(self, ask_id: str) -> Submitted:
        """Sign and submit a Cancel for one of this node's asks."""
        ...


class ProverControl(Protocol):
    """What the control API may ask of a node's prover role (roles/prover.py), its
    operator's commands: the bid's settings, jobs and earnings."""

    def bid_view(self) -> dict[str, Any]:
        """The bid's terms as the role signs them, and its state (active, paused,
        withdrawn)."""
        ...

    async def update_bid(self, changes: dict[str, int]) -> dict[str, Any]:
        """Change some terms (price, proof_time, capacity, max_size, bid_ttl_ms);
        posted at once if active. ValueError names a bad field."""
        ...

    async def pause_bid(self, state: str) -> dict[str, Any]:
        """Stop committing and re-posting ("paused" or "withdrawn")."""
        ...

    async def resume_bid(self) -> dict[str, Any]:
        """Post the current terms again and take asks."""
        ...

    def jobs_view(self) -> dict[str, Any]:
        """The current and recent jobs."""
        ...

    def earnings_view(self) -> dict[str, Any]:
        """What the prover earned since the node started, per market."""
        ...
