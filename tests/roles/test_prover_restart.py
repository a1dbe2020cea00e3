"""A prover that dies mid-proof and comes back from its own data directory (the
SQLite log) with the same key: before the deadline it resumes and delivers, after
the deadline it leaves the work alone and the ask goes to its next round. Inputs
that came directly (confidential) are in its role store: it resumes from them."""

from __future__ import annotations

from pathlib import Path

import trio

from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.messages import Market as MarketDescriptor
from p2p_market.core.messages import Proof
from p2p_market.net.host import connect_all
from p2p_market.proving.pow import PowBackend, pow_ok
from tests.roles.harness import (
    MARKET,
    MID,
    BigProofs,
    Market,
    SlowPow,
    market,
    wait_everywhere,
)


class CountingPow(PowBackend):
    """The real pow back-end, counting the proofs it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        self.calls += 1
        return await super().prove(market, inputs, deadline_s)


async def kill_mid_proof(m: Market, name: str, ask: bytes) -> int:
    """Wait until `name` works on `ask`, kill it; the slot's deadline (ms)."""
    with trio.fail_after(20):
        while ask not in m.provers[name].stats.active:
            await trio.sleep(0.05)
    m.kill[name].cancel()
    run = m.relay.states[MID].settlement().runs[ask]
    return run.slots[m.provers[name].me].deadline


def proofs_by(m: Market, ask: bytes, prover: bytes) -> list[Proof]:
    events = m.relay.states[MID].events.get(ask, {}).values()
    return [e.message for e in events if e.signer == prover and isinstance(e.message, Proof)]


async def test_restart_before_the_deadline_resumes_and_delivers(tmp_path: Path) -> None:
    offers = {"worker": (10, 20_000), "backup": (40, 20_000)}
    async with market(tmp_path, offers, backends={"worker": SlowPow()}) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 30_000}
        ask = await m.requester.request(fields, b"restart inputs")
        worker = m.provers["worker"].me
        deadline = await kill_mid_proof(m, "worker", ask)
        await trio.sleep(0.5)  # really down: the relay notices the lost connection
        backend = CountingPow()
        role = await m.restart("worker", backend)
        assert role.node.clock() < deadline - 5_000  # plenty of time left to resume
        with trio.fail_after(30):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [worker]
        assert pow_ok(b"restart inputs", MARKET.difficulty, done.proofs[worker])
        assert backend.calls == 1 and role.stats.proved == 1
        await wait_everywhere(m, ask, AskState.PROVEN)
        view = m.relay.states[MID].view(ask)
        assert view.winners == (worker,)  # nobody else was ever needed
        assert view.slot_states == (SlotState.ACCEPTED,)
        assert [p.timestamp <= deadline for p in proofs_by(m, ask, worker)] == [True]


async def test_restart_after_the_deadline_abandons_and_the_next_round_proves(
    tmp_path: Path,
) -> None:
    offers = {"worker": (10, 3_000), "backup": (40, 3_000)}
    async with market(tmp_path, offers, backends={"worker": SlowPow()}) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 10_000}
        ask = await m.requester.request(fields, b"late inputs")
        worker = m.provers["worker"].me
        deadline = await kill_mid_proof(m, "worker", ask)
        with trio.fail_after(15):
            while m.relay.clock() <= deadline:
                await trio.sleep(0.05)
        backend = CountingPow()
        role = await m.restart("worker", backend)  # its own log still says ASSIGNED
        with trio.fail_after(40):
            done = await m.requester.wait(ask)
        backup = m.provers["backup"].me
        assert list(done.proofs) == [backup]
        await wait_everywhere(m, ask, AskState.PROVEN)
        view = m.relay.states[MID].view(ask)
        assert view.winners == (worker, backup)
        assert view.slot_states == (SlotState.TIMED_OUT, SlotState.ACCEPTED)
        await trio.sleep(1.0)  # time enough for a wrongly resumed proof to show up
        assert backend.calls == 0 and role.stats.proved == 0
        assert proofs_by(m, ask, worker) == []


async def test_a_restarted_prover_that_reconnects_late_still_delivers_in_time(
    tmp_path: Path,
) -> None:
    """The resumed proof is ready long before the node finds a peer: published into
    an empty mesh it would sit in gossipsub's short cache and then wait for a
    periodic sync (30 s), past the deadline. The prover waits for a listener."""
    offers = {"worker": (10, 20_000), "backup": (40, 20_000)}
    async with market(tmp_path, offers, backends={"worker": SlowPow()}) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 30_000}
        ask = await m.requester.request(fields, b"isolated inputs")
        worker = m.provers["worker"].me
        deadline = await kill_mid_proof(m, "worker", ask)
        role = await m.restart("worker", CountingPow(), bootstrap=())
        with trio.fail_after(10):  # proven while alone
            while ask in role.stats.active and not role.backend.calls:  # type: ignore[attr-defined]
                await trio.sleep(0.05)
        await trio.sleep(7.0)  # longer than gossipsub keeps a message for IHAVE
        assert role.node.host is not None and m.relay.gossip is not None
        await connect_all(role.node.host, [m.relay.gossip.addr])
        with trio.fail_after(max(1.0, (deadline - m.relay.clock()) / 1000)):
            done = await m.requester.wait(ask)  # accepted before the deadline
        assert list(done.proofs) == [worker]
        assert m.requester.node.states[MID].view(ask).winners == (worker,)


class StuckPow(SlowPow):
    """Never finishes; `proving` is set once it was given inputs to prove."""

    def __init__(self) -> None:
        super().__init__()
        self.proving = trio.Event()

    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        self.proving.set()
        return await super().prove(market, inputs, deadline_s)


SECRET = b"confidential: the launch code is 0451"


async def test_a_restart_resumes_work_whose_inputs_came_directly(tmp_path: Path) -> None:
    """Confidential inputs reach the winner once, over a direct stream; the prover
    keeps them sealed in its role store, so after a restart mid-proof it proves from
    them and delivers before its deadline: no second round is needed."""
    stuck = StuckPow()
    offers = {"worker": (10, 20_000), "backup": (40, 20_000)}
    async with market(tmp_path, offers, backends={"worker": stuck}) as m:
        fields = {
            "market": MID.hex(),
            "max_price": 100,
            "max_proof_time": 30_000,
            "confidential": True,
        }
        ask = await m.requester.request(fields, SECRET)
        worker = m.provers["worker"].me
        with trio.fail_after(20):  # the inputs came: it is proving from them
            await stuck.proving.wait()
        deadline = await kill_mid_proof(m, "worker", ask)
        backend = CountingPow()
        role = await m.restart("worker", backend)
        assert role.node.clock() < deadline
        with trio.fail_after(30):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [worker]
        assert pow_ok(SECRET, MARKET.difficulty, done.proofs[worker])
        assert backend.calls == 1 and role.stats.proved == 1
        await wait_everywhere(m, ask, AskState.PROVEN)
        view = m.relay.states[MID].view(ask)
        assert view.winners == (worker,)
        assert view.slot_states == (SlotState.ACCEPTED,)
        files = [f for f in (tmp_path / "worker").rglob("*") if f.is_file()]
        assert not any(SECRET in f.read_bytes() for f in files)  # never in the clear


class GatedBigProofs(BigProofs):
    """Large proofs (they travel directly), made once `release` is set; counted."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.proving = trio.Event()
        self.release = trio.Event()

    async def prove(self, market: MarketDescriptor, inputs: bytes, deadline_s: float) -> bytes:
        self.calls += 1
        self.proving.set()
        await self.release.wait()
        return await super().prove(market, inputs, deadline_s)


async def test_a_large_proof_made_before_a_restart_is_delivered_without_proving_again(
    tmp_path: Path,
) -> None:
    """The prover made a large proof and could not deliver it (the requester was
    down); both restart. The prover delivers the proof it stored, without proving
    again, and the restarted requester verifies it."""
    gated = GatedBigProofs()
    offers = {"worker": (10, 30_000)}
    async with market(
        tmp_path, offers, backends={"worker": gated}, requester_backend=BigProofs()
    ) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 40_000}
        ask = await m.requester.request(fields, b"large proof inputs")
        worker = m.provers["worker"]
        with trio.fail_after(20):
            await gated.proving.wait()
        assert m.requester.node.gossip is not None
        addr = m.requester.node.gossip.addr  # it comes back there: where the worker dials
        m.kill["requester"].cancel()
        gated.release.set()
        with trio.fail_after(20):  # made, and its delivery failed: nobody to take it
            while ask in worker.stats.active:
                await trio.sleep(0.05)
        assert worker.stats.proved == 0
        requester = await m.restart_requester(addr=addr)
        m.kill["worker"].cancel()
        again = GatedBigProofs()
        again.release.set()
        role = await m.restart("worker", again)
        with trio.fail_after(30):
            done = await requester.wait(ask)
        assert list(done.proofs) == [worker.me]
        assert again.calls == 0 and role.stats.proved == 1
        await wait_everywhere(m, ask, AskState.PROVEN)
        assert m.relay.states[MID].view(ask).slot_states == (SlotState.ACCEPTED,)
