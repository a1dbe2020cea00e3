"""The seed corpora are valid inputs that each parser accepts, so the fuzzer starts
from the deep paths: an envelope seed passes every check including its signature,
a config seed loads, and so on. Each also keeps its target's contract."""

from __future__ import annotations

import pytest

from p2p_market.core import codec
from p2p_market.core.validation import check_envelope
from p2p_market.core.verdict import Status
from p2p_market.fuzz import samples
from p2p_market.fuzz.registry import TARGETS, load
from p2p_market.fuzz.replay import replay
from p2p_market.fuzz.targets import config, direct, keyfile, peers, sync
from p2p_market.fuzz.targets.envelope import envelope_of
from p2p_market.net.frame import judge_frame
from p2p_market.node import wire
from p2p_market.node.direct import DOMAIN, check_header
from p2p_market.node.keyfile import read_key
from p2p_market.node.peers import Exchanged, _dialable


@pytest.mark.parametrize("name", TARGETS)
def test_every_seed_keeps_its_targets_contract(name: str) -> None:
    seeds = load(name).seeds()
    assert seeds
    for seed in seeds:
        replay(name, seed)


def test_envelope_seeds_are_accepted_signed_envelopes_of_every_kind() -> None:
    kinds = set()
    for seed in load("envelope").seeds():
        verdict, env = check_envelope(envelope_of(seed))
        if verdict.status is Status.IGNORE:
            continue  # the unknown kind
        assert verdict.accepted, verdict
        assert env is not None
        kinds.add(env.kind)
    assert kinds == set(range(1, 10))


def test_frame_seeds_are_accepted() -> None:
    for seed in load("frame").seeds():
        verdict, delivered = judge_frame(seed, samples.market_id())
        assert verdict.status is not Status.REJECT, verdict
        assert delivered


def test_sync_seeds_get_ok_replies() -> None:
    async def answers() -> list[object]:
        server, peer = sync._SERVER, sync._PEER
        return [server.answer(wire.decode(s), {}, peer)["ok"] for s in load("sync").seeds()]

    import trio

    replies = trio.run(answers)
    assert replies.count(True) == len(replies) - 1  # one asks for an unknown market


def test_direct_seeds_pass_the_header_checks() -> None:
    for seed in load("direct").seeds():
        signature = direct._SENDER.sign(DOMAIN + seed)
        check_header(direct._RECIPIENT, seed, signature, max_bytes=1 << 30)


def test_peers_seed_lists_dialable_peers() -> None:
    answer = wire.decode(load("peers").seeds()[0])
    found = [
        a
        for entry in answer["peers"]
        if (a := _dialable(entry, peers._OWN, peers._SCOPES, Exchanged())) is not None
    ]
    assert len(found) == 3  # the asker itself and the DNS name are left out


def test_config_seeds_load() -> None:
    from p2p_market.node.config import load_config

    for seed in load("config").seeds():
        config._FILE.write_bytes(seed)
        load_config(config._FILE)
    config._FILE.write_bytes(config.VALID.encode())
    assert len(load_config(config._FILE).markets) == 3


def test_keyfile_seeds_load_with_their_passphrase() -> None:
    plain, encrypted, _ = load("keyfile").seeds()
    keyfile._FILE.write_bytes(plain)
    first = read_key(keyfile._FILE, None)
    keyfile._FILE.write_bytes(encrypted)
    assert read_key(keyfile._FILE, keyfile.PASSPHRASE).public_key == first.public_key


def test_the_signed_mode_signs_a_canonical_envelope() -> None:
    seed = load("envelope").seeds()[-1]
    assert seed[0] == 1
    raw = envelope_of(seed)
    assert codec.unpack(raw)[1] == seed[2:]
    assert check_envelope(raw)[0].accepted


def test_artifact_and_announce_seeds_reach_the_deep_paths() -> None:
    """The artifact seeds parse as a request, a reply and a chunk; the first
    announcement seed is taken by the store."""
    from libp2p.peer.id import ID

    from p2p_market.node.artifacts import _chunk_of, _size_of, parse_request
    from p2p_market.node.discovery import KnownMarkets

    request, _, reply, _, chunk = (wire.decode(s) for s in load("artifact").seeds())
    assert parse_request(request)[2] == 0
    assert _size_of(reply) == 41_712
    assert len(_chunk_of(chunk, 1 << 20)) == 1000
    known = KnownMarkets()
    assert known.offer_message(load("announce").seeds()[0], ID(b"\x00\x25" + bytes(37)), 0).accepted
