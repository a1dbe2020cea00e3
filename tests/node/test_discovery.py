"""Market announcements (node/discovery.py) and joining a market by its id alone
(node/join.py): the store's checks and bounds on their own, then whole nodes on
127.0.0.1 — a prover that knows nothing but a groth16 market's id gets its
descriptor and artifacts from a peer and proves with them (real snarkjs)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID

from p2p_market.core import codec
from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id, seal
from p2p_market.core.messages import Market
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.markets.devnet import default_market
from p2p_market.node.api_client import ApiClient
from p2p_market.node.config import NodeConfig
from p2p_market.node.discovery import TOPIC, KnownMarkets, encode_announcement
from p2p_market.node.join import JoinError, join_market
from p2p_market.node.runtime import Node
from p2p_market.proving.snark import SHIPPED_ARTIFACTS, SnarkBackend, encode_inputs

CIRCUITS = Path(__file__).resolve().parents[2] / "protocols" / "circuits"
GROTH16 = read_descriptor(CIRCUITS / "multiplier-groth16-devnet-INSECURE.toml")
PEER = ID(b"\x00\x25" + bytes(37))
ALICE, BOB = devnet_key("disc-alice"), devnet_key("disc-bob")


def market(n: int) -> Market:
    return Market(name=f"m{n}", proof_system="pow", verifier="v", difficulty=1, created_at=n)


# -- the store -------------------------------------------------------------------------


def test_bad_announcements_are_refused_by_name_and_change_nothing() -> None:
    known = KnownMarkets()
    good = seal(GROTH16, ALICE)
    forged = good[:-1] + bytes([good[-1] ^ 1])
    from p2p_market.core.messages import Cancel

    cancel = seal(Cancel(market=market_id(GROTH16), timestamp=1, ask=bytes(32)), ALICE)
    cases = {
        "oversized": b"\x94" + bytes(70_000),
        "undecodable": b"\xc1junk",
        "bad_signature": forged,
        "wrong_market": cancel,  # another kind on the markets topic
    }
    for reason, raw in cases.items():
        verdict = known.offer(raw, PEER, 0.0)
        assert verdict.reason.value == reason and not verdict.accepted, (reason, verdict)
    # a non-canonical re-encoding (a uint8 written as uint16) of a real announcement
    unpacked = codec.unpack(good)
    assert unpacked[0] == 1
    bent = b"\x94\xcd\x00\x01" + good[2:]
    assert known.offer(bent, PEER, 0.0).reason.value == "not_canonical"
    assert known.entries == {} and known.bytes == 0
    assert known.offer(good, PEER, 0.0).accepted
    assert [e["id"] for e in known.listing(0.0)] == [market_id(GROTH16).hex()]


def test_the_announcement_wrapper_is_checked_before_the_envelope() -> None:
    known = KnownMarkets()
    raw = seal(GROTH16, ALICE)
    assert known.offer_message(encode_announcement(raw, 5), PEER, 0).accepted
    bad = {
        "undecodable": codec.pack([raw]),
        "not_canonical": b"\x92" + codec.pack(raw) + b"\xcd\x00\x05",
        "oversized": codec.pack([bytes(70_000), 1]),
    }
    for reason, data in bad.items():
        assert known.offer_message(data, PEER, 0).reason.value == reason, reason
    assert known.stats.accepted == 1


def test_the_store_is_bounded_and_forgets_what_is_not_announced_again() -> None:
    known = KnownMarkets(max_markets=3, max_per_announcer=2, max_announcers=2, ttl_s=90)
    assert known.offer(seal(market(1), ALICE), PEER, 0).accepted
    assert known.offer(seal(market(2), ALICE), PEER, 0).accepted
    over = known.offer(seal(market(3), ALICE), PEER, 0)
    assert over.reason.value == "rate_limited" and "more markets" in over.detail
    assert known.offer(seal(market(3), BOB), PEER, 0).accepted
    full = known.offer(seal(market(4), BOB), PEER, 0)
    assert full.reason.value == "rate_limited" and "full" in full.detail
    # heard again at once: a duplicate (not forwarded); after a third of the ttl: news
    assert known.offer(seal(market(1), ALICE), PEER, 10).reason.value == "duplicate"
    assert known.offer(seal(market(1), ALICE), PEER, 40).accepted
    carol = devnet_key("disc-carol")
    assert known.offer(seal(market(1), BOB), PEER, 40).accepted
    assert known.offer(seal(market(1), carol), PEER, 40).reason.value == "rate_limited"
    # market 2 and 3 were last heard at 0: gone after the ttl; market 1 stays
    listing = known.listing(100)
    assert [(e["name"], e["peers"]) for e in listing] == [("m1", 2)]
    assert len(known.entries) == 1 and known.bytes == len(codec.pack(market(1).to_map()))


# -- whole nodes -----------------------------------------------------------------------


def make_node(
    tmp: Path, name: str, markets: tuple[Market, ...], boot: tuple[str, ...] = ()
) -> Node:
    cfg = NodeConfig(
        key_file=tmp / f"{name}.pem",
        data_dir=tmp / name,
        bootstrap=boot,
        markets=markets,
        announce_every_s=60.0,
    )
    return Node(cfg, devnet_key(f"disc-{name}"))


async def test_a_prover_joins_a_groth16_market_by_its_id_alone(tmp_path: Path) -> None:
    """Node A follows the groth16 example market and holds its artifacts (the
    repository's). B has an empty data dir and the id: it fetches the descriptor and
    the three artifacts from A, checked against the id, proves a·b = 33 with them,
    and A verifies the proof. B then runs as a node of that market and lists it as
    announced by A (GET /v1/markets/known)."""
    mid = market_id(GROTH16)
    a = make_node(tmp_path, "a", (GROTH16, default_market()))
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        assert a.gossip is not None
        with trio.fail_after(30):
            started = trio.current_time()
            joined = await join_market(mid, [a.gossip.addr], tmp_path / "b", search=[])
            took = trio.current_time() - started
        assert joined.market == GROTH16
        assert sorted(joined.artifacts) == ["vkey", "wasm", "zkey"]
        assert all(p.parent == tmp_path / "b" / "artifacts" for p in joined.artifacts.values())
        assert read_descriptor(joined.descriptor) == GROTH16
        size = sum(p.stat().st_size for p in joined.artifacts.values())
        print(f"joined by id: descriptor + {size} bytes of artifacts in {took:.2f} s")
        assert a.artifact_server.stats.served == 4

        inputs = encode_inputs({"a": 3, "b": 11})
        async with SnarkBackend("groth16", dirs=[tmp_path / "b" / "artifacts"]) as prover:
            proof = await prover.prove(joined.market, inputs, 60)
        async with SnarkBackend("groth16", dirs=[SHIPPED_ARTIFACTS]) as verifier:
            assert await verifier.verify(GROTH16, inputs, proof)

        b = make_node(tmp_path, "b", (joined.market,), (a.gossip.addr,))
        await nursery.start(b.run)
        assert b.artifact_dirs[0] == tmp_path / "b" / "artifacts"
        client = ApiClient(f"http://127.0.0.1:{b.api_port}")
        with trio.fail_after(15):
            while True:
                listing = await trio.to_thread.run_sync(client.known_markets)
                heard = {e["id"]: e for e in listing}
                if devnet_market_announced(heard, a):
                    break
                await trio.sleep(0.2)
        entry = heard[mid.hex()]
        assert entry["followed"] and a.key.public_key.hex() in entry["announcers"]
        assert entry["proof_system"] == "groth16"
        nursery.cancel_scope.cancel()


def devnet_market_announced(heard: dict[str, dict[str, object]], a: Node) -> bool:
    entry = heard.get(market_id(default_market()).hex())
    announcers = entry.get("announcers", []) if entry else []
    return isinstance(announcers, list) and a.key.public_key.hex() in announcers


async def test_a_wrong_id_or_no_peer_is_a_named_join_error(tmp_path: Path) -> None:
    a = make_node(tmp_path, "a", (default_market(),))
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        assert a.gossip is not None
        unknown = hashlib.sha256(os.urandom(8)).digest()
        with trio.fail_after(20), pytest.raises(JoinError, match="unknown market"):
            await join_market(unknown, [a.gossip.addr], tmp_path / "b")
        nursery.cancel_scope.cancel()
    with trio.fail_after(20), pytest.raises(JoinError, match="no bootstrap peer"):
        await join_market(unknown, [], tmp_path / "c")
    assert not (tmp_path / "b" / "markets").exists()


async def test_a_peer_flooding_the_markets_topic_with_junk_is_banned(tmp_path: Path) -> None:
    """Junk on the markets topic is REJECTed by name, kept nowhere, forwarded to
    nobody, and blames the peer that sent it like a bad frame: it is cut off at the
    ban threshold (net/scores.py: graylisted at 4 REJECTs, banned after 8 more sent
    while graylisted). The market it announced rightly before stays known."""
    honest = make_node(tmp_path, "honest", (default_market(),))
    async with trio.open_nursery() as nursery:
        await nursery.start(honest.run)
        assert honest.gossip is not None
        evil = make_node(tmp_path, "evil", (GROTH16,), (honest.gossip.addr,))
        await nursery.start(evil.run)
        assert evil.gossip is not None
        with trio.fail_after(15):
            while market_id(GROTH16) not in honest.known.entries:
                await trio.sleep(0.1)
        junk = [
            b"\xc1junk",
            encode_announcement(b"\x94" + bytes(10), 1),
            encode_announcement(seal(GROTH16, ALICE)[:-1] + b"\x00", 2),
        ]
        for i in range(16):  # 4 REJECTs graylist it; 8 more sent while graylisted ban it
            await evil.gossip.pubsub.publish(TOPIC, junk[i % 3] + bytes(i * (i > 2)))
            await trio.sleep(0.05)
        with trio.fail_after(10):
            while evil.gossip.peer_id in honest.host.get_connected_peers():  # type: ignore[union-attr]
                await trio.sleep(0.05)
        refused = honest.known.stats.refused
        assert refused.get("undecodable", 0) >= 2 and refused.get("bad_signature", 0) == 1
        assert honest.gossip.stats.peers_banned == 1
        assert list(honest.known.entries) == [market_id(GROTH16)]
        nursery.cancel_scope.cancel()
