"""Provers and a requester as whole nodes on 127.0.0.1 (real hosts, real pow
proofs, real signatures), one trio run: the ask lifecycle over the network."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2p_market.core.envelope import message_id
from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import InvalidInputs, sha256
from p2p_market.node.direct import DirectMessage
from p2p_market.proving.pow import pow_ok
from p2p_market.roles.requester import Tracked
from tests.roles.harness import MARKET, MID, BadProofs, BigProofs, SlowPow, market, wait_state


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
        loser = m.provers["dear"]
        reached: list[tuple[str, bytes]] = []

        async def spy(message: DirectMessage) -> bool:
            reached.append((message.kind, message.ask))
            return False  # not handled: the role's inbox gets it as before

        loser.node.direct_hooks.insert(0, spy)
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
        # The loser may have committed too (it commits unless it sees the better
        # commit within its stage delay: a matter of gossip timing), so its inbox
        # may expect the inputs; what matters is that they never reach its node.
        assert ("inputs", ask) not in reached
        assert ("inputs", ask) not in m.provers["dear"].inbox.received
        assert ("inputs", ask) in m.provers["cheap"].inbox.received
        data = (tmp_path / "dear" / "envelopes.sqlite").read_bytes()
        assert secret not in data


async def test_a_large_proof_comes_directly_and_is_let_in(tmp_path: Path) -> None:
    """A proof too large for its notice goes to the requester directly, before the
    notice: the requester's inbox lets it in from the assignment on, on its header
    (before, it expected the proof only once the notice came: the proof was
    declined and the ask timed out)."""
    big = BigProofs()
    async with market(tmp_path, {"p": (10, 10_000)}, {"p": big}, requester_backend=big) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 20_000}
        ask = await m.requester.request(fields, b"inputs")
        with trio.fail_after(30):
            done = await m.requester.wait(ask)
        [proof] = done.proofs.values()
        assert len(proof) > 100_000 and proof.endswith(BigProofs.PAD)
        assert ("proof", ask) in m.requester.inbox.received


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
        m.kill["victim"].cancel()  # ...because its node dies mid-proof
        with trio.fail_after(40):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [m.provers["backup"].me]
        await wait_state(m, ask, AskState.PROVEN)
        view = m.relay.states[MID].view(ask)
        assert view.winners == (victim.me, m.provers["backup"].me)
        assert [s.value for s in view.slot_states] == ["timed_out", "accepted"]


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
    """p's offer fits the ask and p is online, bidding and idle: were the cancel
    without effect, p would win the ask when its commit window settles. Cancelled at
    once, the ask is never assigned on any node, p never works on it and nobody is
    paid; p then proves a twin ask with the same caps, so it was a real candidate."""
    async with market(tmp_path, {"p": (10, 5_000)}) as m:
        p = m.provers["p"]
        fields = {"market": MID.hex(), "max_price": 20, "max_proof_time": 10_000}
        ask = await m.requester.request(fields, b"inputs")
        assert await m.requester.cancel(ask) == "ok"
        placed = m.requester.node.states[MID].view(ask).ask.timestamp
        # past the window's settling (window end + skew) everywhere, with a margin
        settled = placed + MARKET.commit_window_ms + MARKET.skew_ms + 1_000
        await trio.sleep(max(0, settled - m.requester.node.clock()) / 1000)
        for n in m.nodes:
            view = n.states[MID].view(ask)
            got = (view.state, view.winners, view.paid)
            assert got == (AskState.CANCELLED, (), 0), n.config.data_dir.name
        assert (p.stats.won, p.stats.proved, p.stats.active) == (0, 0, {})
        twin = await m.requester.request(fields, b"inputs")
        with trio.fail_after(30):
            done = await m.requester.wait(twin)
        assert list(done.proofs) == [p.me]
        assert (p.stats.won, p.stats.proved) == (1, 1)
        assert m.relay.states[MID].view(ask).state is AskState.CANCELLED


async def test_an_ask_larger_than_a_bid_takes_is_never_committed_to(tmp_path: Path) -> None:
    """A requester sets a proof-of-work ask's work through its inputs: difficulty 40
    would keep a prover that bid for the market's difficulty grinding until its
    deadline. The ask declares its size (2**40 units here, read off its inputs), so
    a bid taking size 1 is not eligible however well it prices: the prover never
    commits, and the same prover wins an ask of size 1 at once."""
    async with market(tmp_path, {"p": (10, 5_000)}) as m:
        prover = m.provers["p"]
        size = 1 << (40 - MARKET.difficulty)
        fields = {"market": MID.hex(), "max_price": 10 * size, "max_proof_time": 10_000}
        big = await m.requester.request({**fields, "ttl_ms": 4_000}, b"difficulty=40\ngrief")
        assert m.requester.node.states[MID].view(big).ask.size == size
        small = await m.requester.request(fields, b"fair")
        with trio.fail_after(30):
            await m.requester.wait(small)
        await wait_state(m, big, AskState.EXPIRED)
        assert prover.stats.commits == 1 and prover.stats.proved == 1
        assert m.relay.states[MID].view(big).winners == ()


async def test_priced_per_unit_the_bid_that_takes_the_size_wins_and_is_paid_for_it(
    tmp_path: Path,
) -> None:
    """Inputs naming difficulty 12 in this difficulty-10 market are 4 units of work. The
    cheapest bid per unit takes at most 2, so the next one wins and is paid 4 times
    its price; on an ask of size 1 the cheapest wins as usual."""
    offers = {"small": (5, 10_000, 2), "large": (7, 10_000, 8)}
    async with market(tmp_path, offers) as m:
        fields = {"market": MID.hex(), "max_price": 40, "max_proof_time": 30_000}
        four = await m.requester.request(fields, b"difficulty=12\nfour units")
        one = await m.requester.request(fields, b"one unit")
        with trio.fail_after(30):
            done4 = await m.requester.wait(four)
            done1 = await m.requester.wait(one)
        assert list(done4.proofs) == [m.provers["large"].me]
        assert list(done1.proofs) == [m.provers["small"].me]
        await wait_state(m, four, AskState.PROVEN)
        view = m.relay.states[MID].view(four)
        assert (view.ask.size, view.prices, view.paid) == (4, (28,), 28)


async def test_a_misdeclared_confidential_ask_is_attested_not_ground_at(tmp_path: Path) -> None:
    """Confidential inputs reach the winner only, so no node can check the declared
    size: a requester that signs size 1 over inputs naming difficulty 40 wins a
    prover that takes size 1. The winner reads the inputs, attests at once (the
    reason names the sizes) instead of grinding until its deadline, and the ask ends
    INVALID_INPUTS without a proof."""
    async with market(tmp_path, {"p": (10, 5_000)}) as m:
        prover = m.provers["p"]
        inputs = b"difficulty=40\nsecret grief"
        liar = m.requester
        # The requester role refuses to sign this (the size contradicts the inputs it
        # holds): sign it below the role, as a requester that lies would.
        raw = liar.node.sign_ask(
            {
                "market": MID.hex(),
                "max_price": 100,
                "max_proof_time": 10_000,
                "confidential": True,
                "inputs_hash": sha256(inputs).hex(),
                "size": 1,
            }
        )
        ask = message_id(raw)
        liar.asks[ask] = Tracked(market=MID, inputs=inputs)
        assert (await liar.node.submit(raw)).status == "accept"
        with trio.fail_after(15):  # the deadline is about 6.5 s after the window
            while prover.stats.attested == 0:
                await trio.sleep(0.05)
        assert prover.stats.proved == 0 and not prover.stats.active
        await wait_state(m, ask, AskState.INVALID_INPUTS)
        state = m.relay.states[MID]
        assert [s.value for s in state.view(ask).slot_states] == ["attested"]
        reasons = [
            e.message.reason
            for e in state.events[ask].values()
            if isinstance(e.message, InvalidInputs)
        ]
        need = 1 << (40 - MARKET.difficulty)
        assert reasons == [f"misdeclared_size: declares 1, the inputs need {need}"], reasons
        with pytest.raises(ValueError, match="does not match the inputs"):
            await liar.request({"market": MID.hex(), "max_price": 100, "max_proof_time": 10_000,
                                "confidential": True, "size": 1}, inputs)  # fmt: skip
