"""Whole nodes on 127.0.0.1 for the role tests (real hosts, real pow proofs, real
signatures), one trio run: a relay, some provers, one requester. Each prover runs
in its own cancel scope so that a test can kill it, and can restart it from the
same data directory and key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.core.lifecycle import AskState
from p2p_market.markets.devnet import default_market
from p2p_market.node.config import NodeConfig
from p2p_market.node.runtime import Node
from p2p_market.proving.backend import ProofBackend
from p2p_market.proving.pow import PowBackend
from p2p_market.roles.inbox import Inbox
from p2p_market.roles.prover import ProverRole, ProverSettings
from p2p_market.roles.requester import DEFAULT_AWARD_LAG_MS, RequesterRole

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2p_market.core.messages import Market as MarketDescriptor

MARKET = default_market(commit_window_ms=1_000, stage_ms=200, skew_ms=300, difficulty=10)
MID = market_id(MARKET)


def node(
    tmp: Path,
    name: str,
    bootstrap: tuple[str, ...],
    prover: bool = False,
    market: MarketDescriptor = MARKET,
    metrics_port: int = -1,
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",),
) -> Node:
    cfg = NodeConfig(
        listen=listen,
        key_file=tmp / "unused.pem",
        data_dir=tmp / name,
        bootstrap=bootstrap,
        frames_per_second=50.0,
        markets=(market,),
        metrics_port=metrics_port,
    )
    return Node(cfg, devnet_key(f"roles-{name}"), prover=prover)


@dataclass
class Market:
    relay: Node
    provers: dict[str, ProverRole]
    requester: RequesterRole
    nursery: trio.Nursery
    kill: dict[str, trio.CancelScope] = field(default_factory=dict)
    """Each prover's scope: cancelling it stops its node and role (a crash)."""
    tmp: Path = Path()
    market: MarketDescriptor = MARKET

    @property
    def mid(self) -> bytes:
        return market_id(self.market)

    @property
    def nodes(self) -> list[Node]:
        return [self.relay, self.requester.node, *(p.node for p in self.provers.values())]

    async def restart(
        self, name: str, backend: ProofBackend, bootstrap: tuple[str, ...] | None = None
    ) -> ProverRole:
        """A killed prover, back from its own data directory (the SQLite log) with
        the same key and config settings: a fresh node and role, as after a process
        restart (what its operator changed through the API comes from its role store).
        `bootstrap` replaces its bootstrap list (() to come back isolated)."""
        old = self.provers[name]
        boot = old.node.config.bootstrap if bootstrap is None else bootstrap
        n = node(self.tmp, name, boot, prover=True, market=self.market)
        role = ProverRole(n, backend, old.config_settings, Inbox())
        self.kill[name] = trio.CancelScope()
        await run_prover(self.nursery, n, role, self.kill[name])
        self.provers[name] = role
        return role

    async def restart_requester(self, *, addr: str | None = None) -> RequesterRole:
        """The requester killed (`kill["requester"]`, if it was not already) and back
        from its data directory with the same key: a fresh node and role. `addr`: its
        old address (taken before the kill), to come back where provers dial it."""
        self.kill["requester"].cancel()
        old = self.requester
        listen = ("/ip4/127.0.0.1/tcp/0",) if addr is None else (addr.split("/p2p/")[0],)
        n = node(
            self.tmp, "requester", old.node.config.bootstrap, market=self.market, listen=listen
        )
        lag = old.node.states[self.mid].award_lag_ms
        role = RequesterRole(n, old.backends, Inbox(), award_lag_ms=lag)
        self.kill["requester"] = trio.CancelScope()
        await run_prover(self.nursery, n, role, self.kill["requester"])
        self.requester = role
        return role


class BadProofs(PowBackend):
    """A prover that returns garbage instead of proofs."""

    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        return b"not a proof"


class BadBigProofs(PowBackend):
    """Garbage too large for a Proof notice: it travels directly, so only the
    requester sees it and its invalidity stays the requester's word (a subjective
    outcome: no node can judge it from the stored messages)."""

    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        return b"not a proof" + bytes(100_000)


class BigProofs(PowBackend):
    """Pow proofs padded past what a Proof notice may carry (MAX_INLINE_PROOF_BYTES),
    so that they travel directly; its verify strips the padding."""

    PAD = bytes(100_000)

    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        return await super().prove(market, inputs, deadline_s) + self.PAD

    async def verify(self, market: MarketDescriptor, inputs: bytes, proof: bytes) -> bool:
        core = proof[: -len(self.PAD)]
        return proof.endswith(self.PAD) and await super().verify(market, inputs, core)


class SlowPow(PowBackend):
    """A prover that starts and never finishes."""

    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def run_prover(
    nursery: trio.Nursery, n: Node, role: ProverRole | RequesterRole, scope: trio.CancelScope
) -> None:
    """A node and its role in their own cancel scope, so a test can kill them."""

    async def both(task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            async with trio.open_nursery() as inner:
                await inner.start(n.run)
                await inner.start(role.run)
                task_status.started()

    await nursery.start(both)


@asynccontextmanager
async def market(
    tmp: Path,
    offers: Mapping[str, tuple[int, ...]],
    backends: dict[str, ProofBackend] | None = None,
    *,
    descriptor: MarketDescriptor = MARKET,
    requester_backend: ProofBackend | None = None,
    metrics: bool = False,
    award_lag_ms: int = DEFAULT_AWARD_LAG_MS,
    bid_ttl_ms: int = 600_000,
) -> AsyncIterator[Market]:
    """A relay, one prover per offer (name: (price, proof_time ms[, max_size])) and a
    requester, every bid on every node before the body runs. `metrics`: each prover
    node serves /metrics (its `metrics_port`). `bid_ttl_ms`: every prover's (it
    re-posts at half of it)."""
    mid = market_id(descriptor)
    async with trio.open_nursery() as nursery:
        relay = node(tmp, "relay", (), market=descriptor)
        await nursery.start(relay.run)
        assert relay.gossip is not None
        boot = (relay.gossip.addr,)
        provers = {}
        kill = {}
        for name, (price, proof_time, *sized) in offers.items():
            port = 0 if metrics else -1
            n = node(tmp, name, boot, prover=True, market=descriptor, metrics_port=port)
            settings = ProverSettings(
                market=mid,
                price=price,
                proof_time=proof_time,
                max_size=sized[0] if sized else 1,
                bid_ttl_ms=bid_ttl_ms,
            )
            backend = (backends or {}).get(name, PowBackend())
            role = ProverRole(n, backend, settings, Inbox())
            kill[name] = trio.CancelScope()
            await run_prover(nursery, n, role, kill[name])
            provers[name] = role
        q = node(tmp, "requester", boot, market=descriptor)
        requester = RequesterRole(
            q, {mid: requester_backend or PowBackend()}, Inbox(), award_lag_ms=award_lag_ms
        )
        kill["requester"] = trio.CancelScope()
        await run_prover(nursery, q, requester, kill["requester"])
        everyone = [relay, q, *(p.node for p in provers.values())]
        with trio.fail_after(20):  # every node has every bid before asks are placed
            while any(len(n.states[mid].book.current) < len(provers) for n in everyone):
                await trio.sleep(0.05)
        yield Market(relay, provers, requester, nursery, kill, tmp, descriptor)
        nursery.cancel_scope.cancel()


async def wait_state(m: Market, ask: bytes, state: AskState, timeout: float = 30) -> None:
    """Until the relay (a bystander) sees the ask in `state`."""
    with trio.fail_after(timeout):
        while m.relay.states[m.mid].asks.get(ask) is None or (
            m.relay.states[m.mid].view(ask).state is not state
        ):
            await trio.sleep(0.05)


async def wait_everywhere(m: Market, ask: bytes, state: AskState, timeout: float = 30) -> None:
    """Until every running node sees the ask in `state`."""
    with trio.fail_after(timeout):
        while not all(
            ask in n.states[m.mid].asks and n.states[m.mid].view(ask).state is state
            for n in m.nodes
        ):
            await trio.sleep(0.05)
