"""`/p2p-market/artifact/1` on real hosts on 127.0.0.1: descriptors and artifacts
fetched by hash, checked against the market's pins, resumed, capped and paced; a
peer that serves a wrong artifact is not asked for it again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio
from libp2p.abc import IHost, INetStream

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market
from p2p_market.net.host import guarded
from p2p_market.node import artifacts
from p2p_market.node.artifacts import (
    CHUNK_BYTES,
    PROTOCOL,
    ArtifactFetcher,
    ArtifactServer,
    FetchError,
    FetchLimits,
    FetchReport,
    MarketArtifacts,
    Served,
    fetch_to_file,
    partial_path,
)
from p2p_market.node.wire import read_msg, write_msg
from p2p_market.proving.snark import ARTIFACT_SUFFIXES
from tests.node.hosts import running_hosts

SERVER, FETCHER, OTHER = (devnet_key(n) for n in ("art-server", "art-fetcher", "art-other"))
MiB = 1024 * 1024


def fake_market(tmp: Path, zkey_bytes: int = 3 * MiB) -> tuple[Market, dict[str, bytes]]:
    """A groth16 market whose verifier pins three random files written to `tmp`
    (the server checks content against hashes only, so random bytes will do)."""
    contents = {
        "wasm": os.urandom(40_000),
        "zkey": os.urandom(zkey_bytes),
        "vkey": os.urandom(2_000),
    }
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in contents.items()}
    tmp.mkdir(parents=True, exist_ok=True)
    for kind, data in contents.items():
        (tmp / (digests[kind] + ARTIFACT_SUFFIXES[kind])).write_bytes(data)
    market = Market(
        name="fake-groth16",
        proof_system="groth16",
        verifier=f"groth16;wasm={digests['wasm']};zkey={digests['zkey']};vkey={digests['vkey']}",
        difficulty=0,
        created_at=1,
    )
    return market, contents


def serve(host: IHost, market: Market, dirs: list[Path], **kw: object) -> ArtifactServer:
    server = ArtifactServer(MarketArtifacts(lambda: [market], dirs).lookup, **kw)  # type: ignore[arg-type]
    server.attach(host)
    return server


async def test_a_node_fetches_the_descriptor_and_every_artifact_by_hash(tmp_path: Path) -> None:
    market, contents = fake_market(tmp_path / "a")
    mid = market_id(market)
    async with running_hosts(SERVER, FETCHER) as (a, b):
        server = serve(a, market, [tmp_path / "a"])
        fetcher = ArtifactFetcher(b, tmp_path / "b")
        report = FetchReport()
        with trio.fail_after(30):
            started = trio.current_time()
            got = await fetcher.descriptor(mid, [a.get_id()], report)
            files = await fetcher.artifacts(got, [a.get_id()], [], report)
            took = trio.current_time() - started
    assert got == market
    assert {k: p.read_bytes() for k, p in files.items()} == contents
    assert all(p.parent == tmp_path / "b" for p in files.values())
    assert not list((tmp_path / "b").glob("*.part"))
    total = sum(map(len, contents.values()))
    assert report.received[a.get_id()] >= total
    assert server.stats.served == 4 and not server.stats.refused
    print(f"descriptor + {total} bytes of artifacts in {took:.2f} s")


async def test_refusals_are_named_unknown_market_and_not_pinned(tmp_path: Path) -> None:
    market, _ = fake_market(tmp_path / "a", zkey_bytes=1000)
    other = hashlib.sha256(b"no such market").digest()
    async with running_hosts(SERVER, FETCHER) as (a, b):
        server = serve(a, market, [tmp_path / "a"])
        with trio.fail_after(10):
            with pytest.raises(FetchError, match="unknown market"):
                await fetch_to_file(b, a.get_id(), other, other, tmp_path / "x")
            with pytest.raises(FetchError, match="not pinned"):
                await fetch_to_file(b, a.get_id(), market_id(market), other, tmp_path / "x")
            stream = await b.new_stream(a.get_id(), [PROTOCOL])
            await write_msg(stream, {"market": b"short", "sha256": other, "offset": 0})
            assert await read_msg(stream) == {"ok": False, "error": "bad request"}
    assert server.stats.refused == {"unknown market": 1, "not pinned": 1, "bad request": 1}


async def test_a_wrong_artifact_is_refused_and_its_peer_not_asked_again(tmp_path: Path) -> None:
    """The liar serves random bytes for the zkey's hash; the fetcher finds out at
    the end, deletes the partial file, remembers (liar, hash), and gets the real one
    from the honest peer; asked again, it never goes back to the liar."""
    market, contents = fake_market(tmp_path / "a", zkey_bytes=600_000)
    zkey = hashlib.sha256(contents["zkey"]).digest()
    lies = os.urandom(len(contents["zkey"]))

    async def liar(mid: bytes, sha: bytes) -> Served | str:
        return Served(data=lies)

    async with running_hosts(FETCHER, SERVER, OTHER) as (b, honest, lying):
        serve(honest, market, [tmp_path / "a"])
        liar_server = ArtifactServer(liar)
        liar_server.attach(lying)
        fetcher = ArtifactFetcher(b, tmp_path / "b")
        report = FetchReport()
        dest = tmp_path / "b" / artifacts.artifact_name(zkey, "zkey")
        peers = [lying.get_id(), honest.get_id()]
        with trio.fail_after(20):
            await fetcher.fetch(market_id(market), zkey, dest, peers, report)
            assert dest.read_bytes() == contents["zkey"]
            assert report.failures[0][0] == lying.get_id()
            assert "hash mismatch" in report.failures[0][1]
            assert (lying.get_id(), zkey) in fetcher.bad
            dest.unlink()
            again = FetchReport()
            await fetcher.fetch(market_id(market), zkey, dest, peers, again)
    assert not again.failures and lying.get_id() not in again.received
    assert liar_server.stats.served == 1  # asked once, never again


async def test_one_corrupted_chunk_is_refused_and_fetched_from_another_peer(
    tmp_path: Path,
) -> None:
    """The liar serves the real zkey but for one 256 KiB chunk in the middle, with
    one byte flipped: right size, right frames, every other chunk right. The
    fetcher refuses it by name (hash mismatch), keeps no partial file to resume
    from, fetches the whole from the honest peer, and never asks the liar for that
    hash again (it asked once)."""
    market, contents = fake_market(tmp_path / "a", zkey_bytes=4 * CHUNK_BYTES + 1000)
    zkey = hashlib.sha256(contents["zkey"]).digest()
    corrupted = bytearray(contents["zkey"])
    corrupted[2 * CHUNK_BYTES + 777] ^= 0x01  # inside the third chunk
    assert len(corrupted) == len(contents["zkey"])

    async def liar(mid: bytes, sha: bytes) -> Served | str:
        return Served(data=bytes(corrupted))

    async with running_hosts(FETCHER, SERVER, OTHER) as (b, honest, lying):
        serve(honest, market, [tmp_path / "a"])
        liar_server = ArtifactServer(liar)
        liar_server.attach(lying)
        fetcher = ArtifactFetcher(b, tmp_path / "b")
        report = FetchReport()
        dest = tmp_path / "b" / artifacts.artifact_name(zkey, "zkey")
        peers = [lying.get_id(), honest.get_id()]
        with trio.fail_after(30):
            await fetcher.fetch(market_id(market), zkey, dest, peers, report)
            assert dest.read_bytes() == contents["zkey"]
            ((peer, why),) = report.failures
            assert peer == lying.get_id() and why.startswith(f"{artifacts.HASH_MISMATCH}:")
            assert liar_server.stats.bytes_sent == len(corrupted)  # it sent it all
            assert report.received[honest.get_id()] == len(contents["zkey"])  # no resume
            assert (lying.get_id(), zkey) in fetcher.bad
            assert not partial_path(dest).exists()
            dest.unlink()
            again = FetchReport()
            with pytest.raises(FetchError, match="no peer to ask"):  # the liar, offered alone
                await fetcher.fetch(market_id(market), zkey, dest, [lying.get_id()], again)
            await fetcher.fetch(market_id(market), zkey, dest, peers, again)
    assert not again.failures and lying.get_id() not in again.received
    assert liar_server.stats.served == 1  # asked once, never again


async def test_an_oversized_artifact_is_refused_before_its_body(tmp_path: Path) -> None:
    market, contents = fake_market(tmp_path / "a", zkey_bytes=2 * MiB)
    zkey = hashlib.sha256(contents["zkey"]).digest()
    dest = tmp_path / "b" / "z.zkey"
    async with running_hosts(SERVER, FETCHER) as (a, b):
        server = serve(a, market, [tmp_path / "a"])
        fetcher = ArtifactFetcher(b, tmp_path / "b", FetchLimits(max_bytes=MiB))
        with trio.fail_after(10), pytest.raises(FetchError, match="oversized") as caught:
            await fetcher.fetch(market_id(market), zkey, dest, [a.get_id()], FetchReport())
    assert caught.value.bad_peer and (a.get_id(), zkey) in fetcher.bad
    assert not dest.exists() and not partial_path(dest).exists()
    assert server.stats.bytes_sent <= 4 * CHUNK_BYTES  # what was in flight, not the body


async def test_a_cut_transfer_resumes_from_its_partial_file(tmp_path: Path) -> None:
    market, contents = fake_market(tmp_path / "a", zkey_bytes=3 * MiB)
    zkey = hashlib.sha256(contents["zkey"]).digest()
    dest = tmp_path / "b" / "z.zkey"
    dest.parent.mkdir()
    half = len(contents["zkey"]) // 2 + 12_345
    partial_path(dest).write_bytes(contents["zkey"][:half])
    async with running_hosts(SERVER, FETCHER) as (a, b):
        server = serve(a, market, [tmp_path / "a"])
        with trio.fail_after(20):
            received = await fetch_to_file(b, a.get_id(), market_id(market), zkey, dest)
    assert received == len(contents["zkey"]) - half
    assert server.stats.bytes_sent == received
    assert dest.read_bytes() == contents["zkey"]


async def _silent(host: IHost, peer: object, out: list[str]) -> None:
    """A fetcher that opens a stream and never asks: it holds a server slot until
    the request's time limit."""
    stream = await host.new_stream(peer, [PROTOCOL])  # type: ignore[arg-type]
    try:
        reply = await read_msg(stream, timeout_s=10)
        out.append(str(reply.get("error")))
    except Exception as exc:
        out.append(type(exc).__name__)


async def test_slow_fetchers_are_cut_and_one_peer_holds_only_its_share(tmp_path: Path) -> None:
    """Two silent streams from one peer hold its two slots; its third is refused as
    "peer busy"; an honest peer still fetches; the silent ones are answered "bad
    request" when the request's time limit runs out, and their slots are free.

    (The answer's own minimum rate, `Pace`, is not exercised here: py-libp2p's yamux
    takes whatever arrives into memory, read or not, so no py-libp2p fetcher can
    stall the server's writes; another implementation's could.)"""
    market, contents = fake_market(tmp_path / "a", zkey_bytes=1000)
    mid, wasm = market_id(market), hashlib.sha256(contents["wasm"]).digest()
    async with running_hosts(SERVER, FETCHER, OTHER) as (a, slow, honest):
        server = serve(a, market, [tmp_path / "a"], max_sessions=3, timeout_s=1.5)
        outcomes: list[str] = []
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(_silent, slow, a.get_id(), outcomes)
                await trio.sleep(0.5)
                assert server.slots.held_by(slow.get_id()) == 2
                assert outcomes == ["peer busy"]
                dest = tmp_path / "c" / "w.wasm"
                await fetch_to_file(honest, a.get_id(), mid, wasm, dest)
                assert dest.read_bytes() == contents["wasm"]
    assert outcomes == ["peer busy", "bad request", "bad request"]
    assert server.stats.refused == {"peer busy": 1, "bad request": 2}
    assert server.slots.active == 0


async def test_a_server_that_sends_too_slowly_is_given_up_and_resumed_elsewhere(
    tmp_path: Path,
) -> None:
    market, contents = fake_market(tmp_path / "a", zkey_bytes=2 * MiB)
    mid, zkey = market_id(market), hashlib.sha256(contents["zkey"]).digest()
    data = contents["zkey"]

    async def trickle(stream: INetStream) -> None:
        """A peer that speaks the protocol and sends one chunk, then a trickle."""
        request = await read_msg(stream)
        offset = request["offset"]
        await write_msg(stream, {"ok": True, "size": len(data)})
        await write_msg(stream, {"data": data[offset : offset + CHUNK_BYTES]}, max_bytes=2 * MiB)
        position = offset + CHUNK_BYTES
        while position < len(data):
            await trio.sleep(0.2)
            await write_msg(stream, {"data": data[position : position + 1000]})
            position += 1000

    async with running_hosts(FETCHER, SERVER, OTHER) as (b, honest, slow):
        slow.set_stream_handler(PROTOCOL, guarded(trickle, "trickle"))
        serve(honest, market, [tmp_path / "a"])
        fetcher = ArtifactFetcher(b, tmp_path / "b", FetchLimits(min_rate=2 * MiB, grace_s=0.3))
        report = FetchReport()
        dest = tmp_path / "b" / "z.zkey"
        with trio.fail_after(30):
            await fetcher.fetch(mid, zkey, dest, [slow.get_id(), honest.get_id()], report)
    assert dest.read_bytes() == data
    assert "too slow" in report.failures[0][1]
    assert (slow.get_id(), zkey) not in fetcher.bad  # slow is not wrong
    assert report.received[slow.get_id()] == 0  # what it sent was kept, resumed at the other
    assert report.received[honest.get_id()] < len(data)
