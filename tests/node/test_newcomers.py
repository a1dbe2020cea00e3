"""Fresh keys share one budget; signers with history never pay it. A whole `Node`
and a malicious py-libp2p peer on 127.0.0.1.

The attack (issue: sybil): 2,793 keys x 32 KiB asks in 20 s; every node stored them
all (data dir 6.9 -> 94 MB, memory 130 -> 510 MB), because the per-signer limit is
beaten by making new keys."""

from __future__ import annotations

from pathlib import Path

import trio

from p2p_market.core.envelope import message_id
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Reason
from p2p_market.markets.devnet import Actor
from p2p_market.net.frame import encode_frame
from p2p_market.net.gossip import topic_for
from p2p_market.node.runtime import (
    NEWCOMER_BURST,
    NEWCOMER_BYTES_BURST,
    NEWCOMER_BYTES_PER_SECOND,
)
from tests.core.world import T0, World
from tests.node.test_replay_floods import meshed_peers
from tests.node.test_runtime import MARKET, MID, make_node, running, wait_until


def test_history_is_a_live_bid_a_commit_or_an_ask_someone_committed_to() -> None:
    w = World()
    state: MarketState = w.state
    bid = w.bid("prover", price=5, proof_time=1_000, ttl=10_000)
    ask = w.ask("requester", max_price=10, max_proof_time=5_000)
    w.ask("lonely", max_price=10, max_proof_time=5_000)
    assert state.known_signer(w.pk("prover"), T0)
    assert not state.known_signer(w.pk("prover"), T0 + 10_000)  # its bid expired
    assert not state.known_signer(w.pk("requester"), T0)  # nobody committed yet
    assert w.commit("prover", ask, bid, T0 + 10).accepted
    assert state.known_signer(w.pk("requester"), T0 + 20)
    assert state.known_signer(w.pk("prover"), T0 + 10_000)  # it committed
    assert not state.known_signer(w.pk("lonely"), T0 + 20)
    assert not state.known_signer(w.pk("stranger"), T0 + 20)


async def test_a_swarm_of_fresh_keys_cannot_crowd_out_a_known_requester(tmp_path: Path) -> None:
    victim = make_node(tmp_path, "victim")
    async with running(victim) as nursery:
        assert victim.gossip is not None
        attacker, relay = await meshed_peers(nursery, victim, "sybil-attacker", "sybil-relay")
        now = victim.clock()
        prover, requester = Actor("sybil-prover", MARKET), Actor("sybil-requester", MARKET)
        bid = prover.bid(now=now, price=5, proof_time=1_000)
        first = requester.ask(now=now, max_price=10, max_proof_time=5_000)
        commit = prover.commit(
            now=now + 1, ask=message_id(first), bid=message_id(bid), price=5, proof_time=1_000
        )
        await relay.pubsub.publish(topic_for(MID), encode_frame([bid, first, commit]))
        state = victim.states[MID]
        await wait_until(lambda: state.holds(message_id(commit)))
        assert state.known_signer(requester.public_key, victim.clock())
        # The swarm: 600 fresh keys, one ask each, 10 to a frame, 40 frames a second.
        swarm = [
            Actor(f"sybil-{i}", MARKET).ask(
                now=now, max_price=10, max_proof_time=5_000, inputs=b"x" * 4_096
            )
            for i in range(600)
        ]
        known = stranger = b""
        stats = victim.gossip.stats
        for i in range(0, len(swarm), 10):
            await attacker.pubsub.publish(topic_for(MID), encode_frame(swarm[i : i + 10]))
            await trio.sleep(0.025)
            if i == 400:  # past the budget: a known requester and a stranger, behind
                # a few more of the swarm (which take whatever the budget regained)
                await wait_until(lambda: stats.reasons[Reason.RATE_LIMITED] > 0)
                later = victim.clock()
                known = requester.ask(now=later, max_price=10, max_proof_time=5_000)
                stranger = Actor("sybil-stranger", MARKET).bid(now=later, price=5, proof_time=9)
                extra = [
                    Actor(f"sybil-extra-{k}", MARKET).ask(
                        now=later, max_price=10, max_proof_time=5_000
                    )
                    for k in range(8)
                ]
                frame = encode_frame([*extra, stranger, known])
                await relay.pubsub.publish(topic_for(MID), frame)
        await wait_until(lambda: stats.frames_accepted + stats.frames_ignored >= 62, 20)
        await wait_until(lambda: state.holds(message_id(known)))
        assert not state.holds(message_id(stranger))  # the budget was spent
        stored = sum(1 for raw in swarm if state.holds(message_id(raw)))
        elapsed_s = (victim.clock() - now) / 1000
        assert stored <= NEWCOMER_BURST + 20 * elapsed_s + 10, (stored, elapsed_s)
        stored_bytes = sum(len(raw) for raw in swarm if state.holds(message_id(raw)))
        budget = NEWCOMER_BYTES_BURST + NEWCOMER_BYTES_PER_SECOND * elapsed_s
        assert stored_bytes <= budget + 8_192, (stored_bytes, budget)
        assert stored < len(swarm)
        assert stats.reasons[Reason.RATE_LIMITED] > 0
