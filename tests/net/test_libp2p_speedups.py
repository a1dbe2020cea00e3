"""The py-libp2p gossip-path patches (net/libp2p_speedups.py): pinned to the library
version and code they were written for, each doing what it says on real hosts and
real streams, and each changing nothing a peer can see but the cost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib.metadata import version
from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.custom_types import TProtocol
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub.pb import rpc_pb2
from libp2p.stream_muxer.yamux.yamux import YamuxStream
from libp2p.utils.varint import encode_uvarint, read_varint_prefixed_bytes_limited

from p2p_market.core.crypto import devnet_key
from p2p_market.net import libp2p_speedups
from p2p_market.net.host import connect_all, dial_addr, make_host
from tests.net.cluster import MID, bid, cluster, nothing_waiting, receive, receive_n
from tests.net.test_libp2p_patches import pinned_libp2p

RECHECK = (
    "py-libp2p is no longer the version or the code p2p_market/net/libp2p_speedups.py "
    "was written for: re-check each patch against the new library (docs/upstream/), "
    "then update PATCHED_VERSION and the pinned SHA-256s, or delete a patch upstream "
    "made unnecessary"
)
ECHO = TProtocol("/p2p-market-test/rpcs/1")


class StreamReader:
    """A trio stream read the way a libp2p stream is: `read(n)` returns what is
    there, up to n bytes, and b"" at the end."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.reads = 0

    async def read(self, n: int | None = None) -> bytes:
        self.reads += 1
        return bytes(await self.stream.receive_some(n))


def framed(messages: list[bytes]) -> bytes:
    return b"".join(encode_uvarint(len(m)) + m for m in messages)


async def read_all(
    reader_fn: Any, data: bytes, chunks: list[int], count: int, limit: int = 1 << 20
) -> tuple[list[bytes], int]:
    """Send `data` in pieces of the given sizes; read `count` messages with
    `reader_fn`; the messages and the reads it took."""
    send, receive_stream = trio.testing.memory_stream_pair()
    reader = StreamReader(receive_stream)
    out: list[bytes] = []

    async def sender() -> None:
        at = 0
        for size in [*chunks, len(data)]:
            if at >= len(data):
                break
            await send.send_all(data[at : at + max(size, 1)])
            at += max(size, 1)
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        for _ in range(count):
            out.append(await reader_fn(reader, limit))
    return out, reader.reads


def test_the_patches_are_for_the_pinned_and_installed_libp2p() -> None:
    assert pinned_libp2p() == libp2p_speedups.PATCHED_VERSION, RECHECK
    assert version("libp2p") == libp2p_speedups.PATCHED_VERSION, RECHECK
    for name, speedup in libp2p_speedups.SPEEDUPS.items():
        expected = {label: sha for label, (_, sha) in speedup.pins.items()}
        assert libp2p_speedups.source_hashes(name) == expected, f"{name}: {RECHECK}"
        assert libp2p_speedups.applicable(name) is None


def test_make_host_installs_every_patch_once() -> None:
    make_host(devnet_key("speedup-a"))
    assert libp2p_speedups.installed() == list(libp2p_speedups.SPEEDUPS)
    assert libp2p_speedups.apply() == list(libp2p_speedups.SPEEDUPS)


def test_an_unknown_patch_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown py-libp2p patch 'nope'"):
        libp2p_speedups.leave_out("nope")


@contextmanager
def without(name: str) -> Iterator[None]:
    """The library's own code for `name` while inside (a process-wide switch)."""
    libp2p_speedups.leave_out(name)
    try:
        yield
    finally:
        libp2p_speedups._left_out.discard(name)
        libp2p_speedups.apply()


# -- pubsub-read ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(st.binary(min_size=0, max_size=400), min_size=1, max_size=8),
    chunks=st.lists(st.integers(min_value=1, max_value=300), max_size=30),
)
def test_buffered_reads_give_the_librarys_messages_in_fewer_reads(
    messages: list[bytes], chunks: list[int]
) -> None:
    data = framed(messages)

    async def both() -> tuple[Any, Any]:
        ours = await read_all(libp2p_speedups.read_prefixed_buffered, data, chunks, len(messages))
        theirs = await read_all(read_varint_prefixed_bytes_limited, data, chunks, len(messages))
        return ours, theirs

    (ours, our_reads), (theirs, their_reads) = trio.run(both)
    assert ours == theirs == messages
    assert our_reads <= their_reads


async def test_one_read_takes_several_rpcs_that_arrived_together() -> None:
    messages = [b"a" * 200, b"b" * 300, b"c"]
    got, reads = await read_all(libp2p_speedups.read_prefixed_buffered, framed(messages), [], 3)
    assert got == messages
    assert reads == 1
    _, library_reads = await read_all(read_varint_prefixed_bytes_limited, framed(messages), [], 3)
    assert library_reads >= 7  # a read per prefix byte, and one per body


@pytest.mark.parametrize(
    ("data", "limit", "error"),
    [
        (encode_uvarint(2_000) + b"x" * 2_000, 1_000, MessageTooLarge),
        (b"\xff" * 10, 1_000, ParseError),
        (b"\x85", 1_000, IncompleteReadError),  # the stream ends inside the prefix
        (encode_uvarint(50) + b"x" * 10, 1_000, IncompleteReadError),  # ... in the body
        (b"", 1_000, IncompleteReadError),
    ],
)
async def test_bad_or_cut_rpcs_raise_the_librarys_errors(
    data: bytes, limit: int, error: type[Exception]
) -> None:
    for reader_fn in (libp2p_speedups.read_prefixed_buffered, read_varint_prefixed_bytes_limited):
        send, receive_stream = trio.testing.memory_stream_pair()
        await send.send_all(data)
        await send.aclose()
        with pytest.raises(error):
            await reader_fn(cast(Any, StreamReader(receive_stream)), limit)


# -- yamux-window --------------------------------------------------------------------


@asynccontextmanager
async def two_hosts() -> AsyncIterator[tuple[Any, Any]]:
    a, a_listen = make_host(devnet_key("speedup-yamux-a"))
    b, b_listen = make_host(devnet_key("speedup-yamux-b"))
    async with a.run(a_listen), b.run(b_listen):
        assert not await connect_all(a, [dial_addr(b)], timeout=10)
        yield a, b


async def window_updates_for(rpcs: int) -> int:
    """WINDOW_UPDATE frames the receiver sends while reading `rpcs` small RPCs the
    way pubsub reads them, over a real yamux connection between two hosts."""
    updates = 0
    original = YamuxStream.send_window_update

    async def counting(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        nonlocal updates
        updates += 1
        await original(self, increment, skip_lock)

    got = trio.Event()

    async def handler(stream: Any) -> None:
        read = libp2p_speedups.SPEEDUPS["pubsub-read"]
        reader_fn = (
            libp2p_speedups.read_prefixed_buffered
            if read.is_installed()
            else read_varint_prefixed_bytes_limited
        )
        for _ in range(rpcs):
            await reader_fn(stream, 1 << 20)
        got.set()

    YamuxStream.send_window_update = counting  # type: ignore[method-assign]
    try:
        async with two_hosts() as (a, b):
            b.set_stream_handler(ECHO, handler)
            stream = await a.new_stream(b.get_id(), [ECHO])
            for i in range(rpcs):
                await stream.write(framed([bytes([i % 256]) * 300]))
            with trio.fail_after(10):
                await got.wait()
    finally:
        YamuxStream.send_window_update = original  # type: ignore[method-assign]
    return updates


async def test_yamux_gives_window_credit_back_by_the_half_window_not_per_read() -> None:
    assert await window_updates_for(50) == 0  # 15 KB read of a 256 KiB window
    with without("yamux-window"):
        every_read = await window_updates_for(50)
    assert every_read >= 50  # the library: a frame back for every read


# -- sender-record -------------------------------------------------------------------


async def test_the_same_sender_record_is_checked_once_and_a_bad_one_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, _ = make_host(devnet_key("speedup-record-a"))
    b, _ = make_host(devnet_key("speedup-record-b"))
    record, _ = env_to_send_in_RPC(a)
    checks = 0
    library = vars(libp2p_speedups)["_library_consume"]

    def counting(msg: Any, host: Any, peer_id: Any) -> bool:
        nonlocal checks
        checks += 1
        return bool(library(msg, host, peer_id))

    monkeypatch.setattr(libp2p_speedups, "_library_consume", counting)
    try:
        rpc = rpc_pb2.RPC(senderRecord=record)
        for _ in range(5):
            assert libp2p_speedups.consume_sender_record_once(rpc, b, a.get_id())
        assert checks == 1
        # the same record said to come from another peer: checked, refused
        assert not libp2p_speedups.consume_sender_record_once(rpc, b, b.get_id())
        # a record with a flipped byte: checked, refused, every time
        bad = bytearray(record)
        bad[-5] ^= 1
        for _ in range(2):
            assert not libp2p_speedups.consume_sender_record_once(
                rpc_pb2.RPC(senderRecord=bytes(bad)), b, a.get_id()
            )
        assert checks == 4
    finally:
        libp2p_speedups._accepted.clear()


# -- all of them, on a gossiping network ---------------------------------------------


async def test_gossip_works_the_same_with_and_without_the_patches() -> None:
    for leave_out in ((), tuple(libp2p_speedups.SPEEDUPS)):
        for name in leave_out:
            libp2p_speedups.leave_out(name)
        try:
            async with cluster(3, [(0, 1), (1, 2)]) as nodes:
                sent = [bid(f"speedup-{len(leave_out)}-{i}") for i in range(20)]
                for raw in sent:
                    assert (await nodes[0].publish(MID, raw)).accepted
                got = {(await receive(nodes[2], timeout=10)).raw for _ in sent}
                assert got == set(sent)
        finally:
            libp2p_speedups._left_out.clear()
            libp2p_speedups.apply()
    assert libp2p_speedups.installed() == list(libp2p_speedups.SPEEDUPS)


# -- seen-first ------------------------------------------------------------------------


async def test_a_copy_of_a_frame_already_seen_starts_no_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a triangle, node 2 reads every frame of node 0 twice (from 0, and from 1,
    which forwards it); the second copy, already seen, is dropped before a
    `push_msg` task is started for it (the library starts one for every copy).
    Each envelope is delivered once."""
    reads: list[tuple[Any, bytes]] = []
    pushes: list[Any] = []
    library_subscribed = libp2p_speedups._library_is_subscribed
    library_push = libp2p_speedups.Pubsub.push_msg

    def counted_subscribed(self: Any, msg: Any) -> bool:
        reads.append((self, bytes(msg.data)))
        return bool(library_subscribed(self, msg))

    async def counted_push(self: Any, forwarder: Any, msg: Any) -> None:
        pushes.append(self)
        await library_push(self, forwarder, msg)

    monkeypatch.setattr(libp2p_speedups, "_library_is_subscribed", counted_subscribed)
    monkeypatch.setattr(libp2p_speedups.Pubsub, "push_msg", counted_push)
    async with cluster(3, [(0, 1), (1, 2), (0, 2)]) as nodes:
        sent = [bid(f"seen-first-{i}") for i in range(30)]
        for raw in sent:
            assert (await nodes[0].publish(MID, raw)).accepted
            await trio.sleep(0.02)
        got = [d.raw for d in await receive_n(nodes[2], len(sent), timeout=10)]
        assert sorted(got) == sorted(sent)
        pubsub = nodes[2].pubsub

        def read_at_2() -> list[bytes]:
            return [frame for reader, frame in reads if reader is pubsub]

        with trio.fail_after(10):
            while len(read_at_2()) < 2 * len(set(read_at_2())):
                await trio.sleep(0.01)
        frames = len(set(read_at_2()))
        assert frames >= 2 and len(read_at_2()) == 2 * frames
        assert pushes.count(pubsub) <= frames + 2, (pushes.count(pubsub), frames)
        assert nothing_waiting(nodes[2])
