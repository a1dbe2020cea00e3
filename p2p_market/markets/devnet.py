"""The devnet: deterministic, public, INSECURE keys and a default market, so that
simulations, tests and the demo are reproducible byte for byte. Never use these
keys for anything of value: anyone can derive them from their names."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2p_market.core.crypto import SigningKey, devnet_key
from p2p_market.core.envelope import market_id, seal
from p2p_market.core.messages import (
    Ask,
    Award,
    Bid,
    Cancel,
    Commit,
    InvalidInputs,
    Market,
    Proof,
    Receipt,
    sha256,
)

GENESIS_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: the devnet market's creation time."""

DEVNET_NAMES: tuple[str, ...] = (
    *(f"relay-{i}" for i in range(1, 5)),
    *(f"prover-{i}" for i in range(1, 9)),
    *(f"requester-{i}" for i in range(1, 5)),
)
"""The devnet identities with key files in keys/devnet/."""


def default_market(**overrides: object) -> Market:
    fields: dict[str, object] = {
        "name": "devnet-pow",
        "proof_system": "pow",
        "verifier": "sha256-leading-zero-bits",
        "difficulty": 16,
        "created_at": GENESIS_MS,
    }
    fields.update(overrides)
    return Market(**fields)  # type: ignore[arg-type]


@dataclass
class Actor:
    """A devnet identity that signs messages for one market."""

    name: str
    market: Market
    key: SigningKey = field(init=False)
    _seq: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.key = devnet_key(self.name)

    @property
    def public_key(self) -> bytes:
        return self.key.public_key

    @property
    def market_id(self) -> bytes:
        return market_id(self.market)

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def bid(
        self,
        *,
        now: int,
        price: int,
        proof_time: int,
        capacity: int = 1,
        ttl: int = 3_600_000,
        seq: int | None = None,
        max_size: int = 1,
    ) -> bytes:
        return seal(
            Bid(
                market=self.market_id,
                timestamp=now,
                price=price,
                proof_time=proof_time,
                capacity=capacity,
                expires_at=now + ttl,
                seq=self._next() if seq is None else seq,
                max_size=max_size,
            ),
            self.key,
        )

    def ask(
        self,
        *,
        now: int,
        max_price: int,
        max_proof_time: int,
        prefer: str = "cost",
        replicas: int = 1,
        size: int = 1,
        ttl: int = 600_000,
        inputs: bytes = b"",
        confidential: bool = False,
        allow: tuple[bytes, ...] = (),
        deny: tuple[bytes, ...] = (),
        nonce: int | None = None,
        inputs_hash: bytes | None = None,
    ) -> bytes:
        return seal(
            Ask(
                market=self.market_id,
                timestamp=now,
                max_price=max_price,
                max_proof_time=max_proof_time,
                prefer=prefer,
                replicas=replicas,
                size=size,
                expires_at=now + ttl,
                inputs=b"" if confidential else inputs,
                inputs_hash=inputs_hash or sha256(inputs),
                confidential=confidential,
                allow=tuple(sorted(allow)),
                deny=tuple(sorted(deny)),
                nonce=self._next() if nonce is None else nonce,
            ),
            self.key,
        )

    def commit(
        self,
        *,
        now: int,
        ask: bytes,
        bid: bytes,
        price: int,
        proof_time: int,
        round: bytes | None = None,
        attempt: int = 0,
    ) -> bytes:
        return seal(
            Commit(
                market=self.market_id,
                timestamp=now,
                ask=ask,
                round=ask if round is None else round,
                attempt=attempt,
                bid=bid,
                price=price,
                proof_time=proof_time,
            ),
            self.key,
        )

    def cancel(self, *, now: int, ask: bytes) -> bytes:
        return seal(Cancel(market=self.market_id, timestamp=now, ask=ask), self.key)

    def proof(self, *, now: int, ask: bytes, proof: bytes) -> bytes:
        return seal(
            Proof(
                market=self.market_id,
                timestamp=now,
                ask=ask,
                proof_hash=sha256(proof),
                proof=proof,
                size=len(proof),
            ),
            self.key,
        )

    def receipt(self, *, now: int, ask: bytes, prover: bytes, outcome: str) -> bytes:
        return seal(
            Receipt(market=self.market_id, timestamp=now, ask=ask, prover=prover, outcome=outcome),
            self.key,
        )

    def invalid_inputs(self, *, now: int, ask: bytes, reason: str) -> bytes:
        return seal(
            InvalidInputs(market=self.market_id, timestamp=now, ask=ask, reason=reason), self.key
        )

    def award(
        self, *, now: int, ask: bytes, commits: list[bytes], round: bytes | None = None,
        attempt: int = 0,
    ) -> bytes:  # fmt: skip
        return seal(
            Award(
                market=self.market_id,
                timestamp=now,
                ask=ask,
                round=ask if round is None else round,
                attempt=attempt,
                commits=tuple(sorted(commits)),
            ),
            self.key,
        )
