"""The node: one trio nursery holding every service, and the only place where the
wall clock meets the core.

Data flow. A frame from a peer is checked by the gossip validator (form, signature),
then each envelope goes through `admit`, which applies it to the market's core
state: an envelope is forwarded only if this node's own core accepted it, and it is
in the SQLite log before the validator returns, so a crash loses nothing accepted.
Local submissions (API, roles) take the same path before being published. Effects
from the core (apply and tick) are queued to `effects` and dispatched to the hooks
(roles, metrics, logs) by one task, so the validator never waits on I/O beyond the
log write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from p2p_market.core.crypto import SigningKey
from p2p_market.core.effects import Effect
from p2p_market.core.envelope import Envelope, market_id, seal
from p2p_market.core.messages import Ask, Bid, Cancel, Market, sha256
from p2p_market.core.state import MarketState
from p2p_market.core.validation import check_envelope
from p2p_market.core.verdict import Reason, Verdict, ignore
from p2p_market.node.config import NodeConfig
from p2p_market.node.facade import Submitted

log = logging.getLogger("p2p_market.node")

EffectHook = Callable[[bytes, Effect], Awaitable[None] | None]
TICK_S = 0.1


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Admitted:
    market: bytes
    env: Envelope
    verdict: Verdict
    local: bool


class MarketBook:
    """The node's core states, one per followed market, and the rules for feeding
    them: the same code path for gossip, sync, replay and local submissions."""

    def __init__(self, markets: tuple[Market, ...], local_prover: bytes | None) -> None:
        self.states: dict[bytes, MarketState] = {
            market_id(m): MarketState(m, local_prover=local_prover) for m in markets
        }

    def state_for(self, env: Envelope) -> MarketState | None:
        m = env.message
        if isinstance(m, Market):
            return self.states.get(market_id(m))
        return self.states.get(m.market)


class Node:
    def __init__(
        self,
        config: NodeConfig,
        key: SigningKey,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        prover: bool = False,
    ) -> None:
        self.config = config
        self.key = key
        self.clock = clock
        self.book = MarketBook(config.markets, key.public_key if prover else None)
        self.hooks: list[EffectHook] = []
        self._effects_in, self._effects_out = trio.open_memory_channel[tuple[bytes, Effect]](
            100_000
        )
        self.started_ms = clock()
        self.admitted = 0

    @property
    def states(self) -> dict[bytes, MarketState]:
        return self.book.states

    # -- the one path into the core -------------------------------------------------
    def admit(self, env: Envelope, *, persist: Callable[[bytes, Envelope], None]) -> Verdict:
        """Apply a checked envelope (form and signature already verified)."""
        state = self.book.state_for(env)
        if state is None:
            return ignore(Reason.WRONG_MARKET, "a market this node does not follow")
        verdict, effects = state.apply_checked(env, self.clock())
        if verdict.accepted:
            persist(state.market_id, env)
            self.admitted += 1
        for effect in effects:
            self._effects_in.send_nowait((state.market_id, effect))
        return verdict

    def tick(self) -> None:
        now = self.clock()
        for mid, state in self.states.items():
            for effect in state.tick(now):
                self._effects_in.send_nowait((mid, effect))

    async def dispatch_effects(self) -> None:
        async for mid, effect in self._effects_out:
            for hook in self.hooks:
                try:
                    result = hook(mid, effect)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("effect hook failed on %s", type(effect).__name__)

    async def ticker(self) -> None:
        while True:
            self.tick()
            await trio.sleep(TICK_S)

    # -- signing for the local identity ----------------------------------------------
    def sign_bid(self, fields: dict[str, Any]) -> bytes:
        now = self.clock()
        market = self._market_field(fields)
        prev = self.states[market].book.history.get(self.key.public_key, {})
        return seal(
            Bid(
                market=market,
                timestamp=now,
                price=_int(fields, "price"),
                proof_time=_int(fields, "proof_time"),
                capacity=_int(fields, "capacity", 1),
                expires_at=now + _int(fields, "ttl_ms", 3_600_000),
                seq=max(prev, default=0) + 1,
            ),
            self.key,
        )

    def sign_ask(self, fields: dict[str, Any]) -> bytes:
        now = self.clock()
        market = self._market_field(fields)
        inputs = bytes.fromhex(fields.get("inputs", "")) if fields.get("inputs") else b""
        confidential = bool(fields.get("confidential", False))
        inputs_hash = (
            bytes.fromhex(fields["inputs_hash"]) if fields.get("inputs_hash") else sha256(inputs)
        )
        return seal(
            Ask(
                market=market,
                timestamp=now,
                max_price=_int(fields, "max_price"),
                max_proof_time=_int(fields, "max_proof_time"),
                prefer=str(fields.get("prefer", "cost")),
                replicas=_int(fields, "replicas", 1),
                expires_at=now + _int(fields, "ttl_ms", 600_000),
                inputs=b"" if confidential else inputs,
                inputs_hash=inputs_hash,
                confidential=confidential,
                allow=tuple(sorted(bytes.fromhex(k) for k in fields.get("allow", []))),
                deny=tuple(sorted(bytes.fromhex(k) for k in fields.get("deny", []))),
                nonce=time.time_ns(),
            ),
            self.key,
        )

    def sign_cancel(self, ask_id: bytes) -> bytes:
        for mid, state in self.states.items():
            if ask_id in state.asks:
                return seal(Cancel(market=mid, timestamp=self.clock(), ask=ask_id), self.key)
        raise KeyError(f"unknown ask {ask_id.hex()}")

    def _market_field(self, fields: dict[str, Any]) -> bytes:
        try:
            market = bytes.fromhex(str(fields["market"]))
        except KeyError:
            raise ValueError("missing field: market") from None
        except ValueError:
            raise ValueError("market must be a hex market id") from None
        if market not in self.states:
            raise KeyError(f"unknown market {market.hex()}")
        return market


def _int(fields: dict[str, Any], name: str, default: int | None = None) -> int:
    if name not in fields:
        if default is None:
            raise ValueError(f"missing field: {name}")
        return default
    value = fields[name]
    if type(value) is not int:
        raise ValueError(f"{name} must be an integer")
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def submitted(env_id: bytes, verdict: Verdict) -> Submitted:
    return Submitted(
        id=env_id.hex(),
        status=verdict.status.value,
        reason=verdict.reason.value,
        detail=verdict.detail,
    )


def check_local(raw: bytes) -> tuple[Verdict, Envelope | None]:
    return check_envelope(raw)


def data_path(config: NodeConfig) -> Path:
    return config.data_dir / "envelopes.sqlite"
