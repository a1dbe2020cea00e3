"""Provers and a requester as whole nodes on 127.0.0.1 (real hosts, real pow
proofs, real signatures), one trio run: the ask lifecycle over the network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.core.lifecycle import AskState
from p2p_market.devnet import default_market
from p2p_market.node.config import NodeConfig
from p2p_market.node.runtime import Node
from p2p_market.proving.pow import PowBackend, pow_ok
from p2p_market.roles.inbox import Inbox
from p2p_market.roles.prover import ProverRole, ProverSettings
from p2p_market.roles.requester import RequesterRole

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2p_market.core.messages import Market as MarketDescriptor

KILL: dict[str, trio.CancelScope] = {}
MARKET = default_market(commit_window_ms=1_000, stage_ms=200, skew_ms=300, difficulty=10)
MID = market_id(MARKET)


def node(tmp: Path, name: str, bootstrap: tuple[str, ...], prover: bool = False) -> Node:
    cfg = NodeConfig(
        key_file=tmp / "unused.pem",
        data_dir=tmp / name,
        bootstrap=bootstrap,
        frames_per_second=50.0,
        markets=(MARKET,),
    )
    return Node(cfg, devnet_key(f"roles-{name}"), prover=prover)


@dataclass
class Market:
    relay: Node
    provers: dict[str, ProverRole]
    requester: RequesterRole
    nursery: trio.Nursery

    @property
    def nodes(self) -> list[Node]:
        return [self.relay, self.requester.node, *(p.node for p in self.provers.values())]


class BadProofs(PowBackend):
    """A prover that returns garbage instead of proofs."""

    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        return b"not a proof"


async def run_prover(
    nursery: trio.Nursery, n: Node, role: ProverRole, scope: trio.CancelScope
) -> None:
    """The prover's node and role in their own cancel scope, so a test can kill them."""

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
    offers: dict[str, tuple[int, int]],
    backends: dict[str, PowBackend] | None = None,
) -> AsyncIterator[Market]:
    async with trio.open_nursery() as nursery:
        relay = node(tmp, "relay", ())
        await nursery.start(relay.run)
        assert relay.gossip is not None
        boot = (relay.gossip.addr,)
        provers = {}
        for name, (price, proof_time) in offers.items():
            n = node(tmp, name, boot, prover=True)
            settings = ProverSettings(market=MID, price=price, proof_time=proof_time)
            backend = (backends or {}).get(name, PowBackend())
            role = ProverRole(n, backend, settings, Inbox())
            KILL[name] = trio.CancelScope()
            await run_prover(nursery, n, role, KILL[name])
            provers[name] = role
        q = node(tmp, "requester", boot)
        await nursery.start(q.run)
        requester = RequesterRole(q, {MID: PowBackend()}, Inbox())
        await nursery.start(requester.run)
        everyone = [relay, q, *(p.node for p in provers.values())]
        with trio.fail_after(15):  # every node has every bid before asks are placed
            while any(len(n.states[MID].book.current) < len(provers) for n in everyone):
                await trio.sleep(0.05)
        yield Market(relay, provers, requester, nursery)
        nursery.cancel_scope.cancel()


async def test_happy_path_preference_and_receipts_everywhere(tmp_path: Path) -> None:
    offers = {"cheap-slow": (10, 20_000), "fast-dear": (50, 5_000)}
    async with market(tmp_path, offers) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 30_000}
        by_cost = await m.requester.request({**fields, "prefer": "cost"}, b"cost inputs")
        by_time = await m.requester.request({**fields, "prefer": "time"}, b"time inputs")
        with trio.fail_after(30):
            cost = await m.requester.wait(by_cost)
            time = await m.requester.wait(by_time)
        cheap = m.provers["cheap-slow"].me
        fast = m.provers["fast-dear"].me
        assert list(cost.proofs) == [cheap] and list(time.proofs) == [fast]
        assert pow_ok(b"cost inputs", MARKET.difficulty, cost.proofs[cheap])
        with trio.fail_after(10):  # the receipts reach every node
            while not all(
                n.states[MID].view(a).state is AskState.PROVEN
                for n in m.nodes
                for a in (by_cost, by_time)
            ):
                await trio.sleep(0.05)
        assert m.relay.states[MID].view(by_cost).paid == 10


async def test_confidential_inputs_reach_only_the_winner(tmp_path: Path) -> None:
    offers = {"cheap": (10, 10_000), "dear": (60, 10_000)}
    secret = b"the requester's secret inputs"
    async with market(tmp_path, offers) as m:
        fields = {
            "market": MID.hex(),
            "max_price": 100,
            "max_proof_time": 30_000,
            "confidential": True,
        }
        ask = await m.requester.request(fields, secret)
        with trio.fail_after(30):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [m.provers["cheap"].me]
        for n in m.nodes:  # no stored envelope anywhere carries the plaintext
            assert all(secret not in e.raw for e in n.states[MID].stored_envelopes())
        loser = m.provers["dear"]
        assert ("inputs", ask) not in loser.inbox.accepts
        data = (tmp_path / "dear" / "envelopes.sqlite").read_bytes()
        assert secret not in data


async def wait_state(m: Market, ask: bytes, state: AskState, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while m.relay.states[MID].asks.get(ask) is None or (
            m.relay.states[MID].view(ask).state is not state
        ):
            await trio.sleep(0.05)


async def test_a_killed_winner_times_out_and_the_other_prover_proves(tmp_path: Path) -> None:
    offers = {"victim": (10, 3_000), "backup": (40, 3_000)}
    async with market(tmp_path, offers) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 10_000}
        victim = m.provers["victim"]
        victim.backend = SlowPow()  # it wins, starts, and never finishes...
        ask = await m.requester.request(fields, b"inputs")
        with trio.fail_after(15):
            while ask not in victim.stats.active:
                await trio.sleep(0.05)
        KILL["victim"].cancel()  # ...because its node dies mid-proof
        with trio.fail_after(40):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [m.provers["backup"].me]
        await wait_state(m, ask, AskState.PROVEN)
        view = m.relay.states[MID].view(ask)
        assert view.winners == (victim.me, m.provers["backup"].me)
        assert [s.value for s in view.slot_states] == ["timed_out", "accepted"]


class SlowPow(PowBackend):
    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_an_invalid_proof_is_receipted_and_reassigned(tmp_path: Path) -> None:
    offers = {"liar": (10, 5_000), "honest": (40, 5_000)}
    async with market(tmp_path, offers, backends={"liar": BadProofs()}) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 10_000}
        ask = await m.requester.request(fields, b"inputs")
        with trio.fail_after(40):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [m.provers["honest"].me]
        await wait_state(m, ask, AskState.PROVEN)
        view = m.relay.states[MID].view(ask)
        assert [s.value for s in view.slot_states] == ["invalid", "accepted"]
        assert view.paid == 40


async def test_replicas_two_distinct_provers_each_deliver(tmp_path: Path) -> None:
    offers = {"a": (10, 5_000), "b": (20, 5_000), "c": (30, 5_000)}
    async with market(tmp_path, offers) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 10_000, "replicas": 2}
        ask = await m.requester.request(fields, b"inputs")
        with trio.fail_after(30):
            done = await m.requester.wait(ask)
        assert sorted(done.proofs) == sorted([m.provers["a"].me, m.provers["b"].me])


async def test_cancel_before_assignment_is_never_assigned(tmp_path: Path) -> None:
    async with market(tmp_path, {"p": (10, 5_000)}) as m:
        fields = {"market": MID.hex(), "max_price": 5, "max_proof_time": 10_000}  # nobody fits
        ask = await m.requester.request(fields, b"inputs")
        assert await m.requester.cancel(ask) == "ok"
        await wait_state(m, ask, AskState.CANCELLED)
        assert m.relay.states[MID].view(ask).winners == ()
