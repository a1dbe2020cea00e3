"""A small test harness: devnet actors, one MarketState, virtual time, and the
invariants checked after every single step."""

from __future__ import annotations

from p2p_market.core.effects import Effect
from p2p_market.core.envelope import message_id
from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import Market
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Verdict
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market

T0 = GENESIS_MS + 10_000
WINDOW, STAGE, SKEW = 1_000, 200, 500


def make_market() -> Market:
    # difficulty 0: any 8-byte nonce is a valid pow proof, so tests name proofs freely
    # (a proof of another length is evidence against its prover: core/statements.py)
    return default_market(commit_window_ms=WINDOW, stage_ms=STAGE, skew_ms=SKEW, difficulty=0)


class World:
    def __init__(self, market: Market | None = None, local_prover: str | None = None) -> None:
        self.market = market or make_market()
        self.actors: dict[str, Actor] = {}
        me = self.actor(local_prover).public_key if local_prover else None
        self.state = MarketState(self.market, local_prover=me)
        self.effects: list[Effect] = []

    def actor(self, name: str) -> Actor:
        if name not in self.actors:
            self.actors[name] = Actor(name, self.market)
        return self.actors[name]

    def pk(self, name: str) -> bytes:
        return self.actor(name).public_key

    def send(self, raw: bytes, now: int) -> Verdict:
        verdict, effects = self.state.apply(raw, now)
        self.effects.extend(effects)
        assert self.state.check_invariants() == []
        return verdict

    def tick(self, now: int) -> list[Effect]:
        effects = self.state.tick(now)
        self.effects.extend(effects)
        assert self.state.check_invariants() == []
        return effects

    def bid(self, name: str, now: int = T0, **kw: int) -> bytes:
        raw = self.actor(name).bid(now=now, **kw)
        assert self.send(raw, now).accepted
        return message_id(raw)

    def ask(self, name: str, now: int = T0, **kw: object) -> bytes:
        raw = self.actor(name).ask(now=now, **kw)  # type: ignore[arg-type]
        assert self.send(raw, now).accepted
        return message_id(raw)

    def commit(
        self, name: str, ask: bytes, bid: bytes, now: int, round: bytes | None = None
    ) -> Verdict:
        stored = self.state.book.by_id[bid].bid
        raw = self.actor(name).commit(
            now=now, ask=ask, bid=bid, price=stored.price, proof_time=stored.proof_time, round=round
        )
        return self.send(raw, now)

    def state_of(self, ask: bytes) -> AskState:
        return self.state.view(ask).state

    def winners(self, ask: bytes) -> list[str]:
        names = {a.public_key: n for n, a in self.actors.items()}
        return [names[p] for p in self.state.view(ask).winners]


def describe(raw: bytes, names: dict[bytes, str]) -> str:
    """One readable line per envelope, for failure reports."""
    from p2p_market.core.envelope import parse

    env = parse(raw)
    fields = {
        k: (v.hex()[:6] if isinstance(v, bytes) else v)
        for k, v in env.message.to_map().items()
        if k not in ("market", "inputs_hash", "allow", "deny", "inputs", "confidential", "proof")
    }
    who = names.get(env.signer, env.signer.hex()[:6])
    return f"{env.id.hex()[:6]} {type(env.message).__name__} by {who} {fields}"
