"""Direct delivery: sealed to the recipient's identity key, signed by the sender,
refused on its header when it should be, and paced. Network tests use real hosts on
127.0.0.1; the crypto is also tested on its own (what a third party holding the
ciphertext can do, and a sender built from libsodium calls and the spec alone)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

import nacl.bindings as sodium
import nacl.public
import psutil  # type: ignore[import-untyped]
import pytest
import trio
from libp2p.abc import IHost

from p2p_market.core.crypto import SigningKey, devnet_key
from p2p_market.net.host import peer_id_of
from p2p_market.node import direct, wire
from p2p_market.node.direct import (
    CHUNK_BYTES,
    PROTOCOL,
    TAG_BYTES,
    DirectError,
    DirectMessage,
    DirectServer,
    Header,
    Sealed,
    begin_seal,
    check_header,
    decrypt,
    open_sealed,
    seal,
    send_direct,
)
from p2p_market.node.wire import WireError, read_msg, write_bytes, write_msg
from p2p_market.roles.inbox import Inbox as RoleInbox
from tests.node.hosts import running_hosts

ALICE, BOB, EVE = (devnet_key(n) for n in ("direct-alice", "direct-bob", "direct-eve"))
MARKET, ASK = hashlib.sha256(b"market").digest(), hashlib.sha256(b"ask").digest()
MiB = 1024 * 1024


class Inbox:
    def __init__(self, take: bool = True) -> None:
        self.messages: list[DirectMessage] = []
        self.take = take

    async def __call__(self, message: DirectMessage) -> bool:
        self.messages.append(message)
        return self.take


def anything(header: Header) -> bool:
    """A policy that wants every header (the network tests of the crypto)."""
    return True


async def test_a_5_mb_payload_arrives_intact_and_signed() -> None:
    payload = os.urandom(5 * MiB)
    inbox = Inbox()
    server = DirectServer(BOB, inbox, wants=anything)
    async with running_hosts(BOB, ALICE) as (bob, alice):
        server.attach(bob)
        with trio.fail_after(20):
            started = trio.current_time()
            await send_direct(alice, ALICE, BOB.public_key, "proof", MARKET, ASK, payload)
            elapsed = trio.current_time() - started
    [got] = inbox.messages
    assert (got.kind, got.market, got.ask, got.sender) == ("proof", MARKET, ASK, ALICE.public_key)
    assert got.payload == payload
    assert server.stats.delivered == 1 and not server.stats.refused
    print(f"5 MiB sealed, sent, opened in {elapsed * 1000:.0f} ms: {5 / elapsed:.1f} MiB/s")


async def test_an_empty_payload_and_a_declined_one() -> None:
    inbox = Inbox(take=False)
    async with running_hosts(BOB, ALICE) as (bob, alice):
        DirectServer(BOB, inbox, wants=anything).attach(bob)
        with trio.fail_after(10), pytest.raises(DirectError, match="declined") as declined:
            await send_direct(alice, ALICE, BOB.public_key, "inputs", MARKET, ASK, b"")
    assert inbox.messages[0].payload == b""
    assert declined.value.refusal == "declined" and not declined.value.busy


def test_only_the_recipient_can_open_it() -> None:
    payload = os.urandom(CHUNK_BYTES + 123)
    sealed = seal(ALICE, BOB.public_key, "inputs", MARKET, ASK, payload)
    assert open_sealed(BOB, sealed).payload == payload
    with pytest.raises(DirectError, match="not addressed"):
        open_sealed(EVE, sealed)
    # Eve captured everything and skips the address check: the key is not hers.
    header = Header.decode(sealed.header)
    with pytest.raises(DirectError, match="does not decrypt"):
        decrypt(EVE, sealed.header, header, sealed.ciphertext)
    assert payload[:64] not in sealed.ciphertext  # and it is not in the clear


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def test_tampering_is_detected() -> None:
    payload = os.urandom(2 * CHUNK_BYTES + 10)  # three chunks
    sealed = seal(ALICE, BOB.public_key, "proof", MARKET, ASK, payload)
    ct, n = sealed.ciphertext, CHUNK_BYTES + TAG_BYTES

    def opens(s: Sealed) -> None:
        open_sealed(BOB, s)

    with pytest.raises(DirectError, match="does not decrypt"):
        opens(Sealed(sealed.header, sealed.signature, _flip(ct, 5)))
    with pytest.raises(DirectError, match="does not decrypt"):  # chunks reordered
        opens(Sealed(sealed.header, sealed.signature, ct[n : 2 * n] + ct[:n] + ct[2 * n :]))
    with pytest.raises(DirectError):  # truncated: the last chunk is missing
        opens(Sealed(sealed.header, sealed.signature, ct[: 2 * n]))
    with pytest.raises(DirectError, match="longer"):
        opens(Sealed(sealed.header, sealed.signature, ct + b"\x00"))
    # The header altered after signing (another ask): the signature fails...
    h = Header.decode(sealed.header)
    other = Header(**{**_fields(h), "ask": hashlib.sha256(b"other").digest()}).encode()
    with pytest.raises(DirectError, match="signature"):
        opens(Sealed(other, sealed.signature, ct))
    # ...and re-signed by Eve as its sender, every chunk's tag fails (header = AD).
    forged = Header(**{**_fields(h), "sender": EVE.public_key}).encode()
    with pytest.raises(DirectError, match="chunk 0 does not decrypt"):
        opens(Sealed(forged, EVE.sign(direct.DOMAIN + forged), ct))


def _fields(h: Header) -> dict[str, Any]:
    return {name: getattr(h, name) for name in Header.__slots__}


def _from_the_spec(
    key: SigningKey, payload: bytes, *, claimed: bytes | None = None, final: bool = True
) -> Sealed:
    """A sender written from protocols/market-v1.md §22 and libsodium alone: a sealed
    box holds a fresh secretstream key; chunks of CHUNK_BYTES, the header as
    additional data, the last tagged FINAL (unless `final` is False); the signed hash
    is `claimed` if given."""
    stream_key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, stream_key)
    recipient_x = sodium.crypto_sign_ed25519_pk_to_curve25519(BOB.public_key)
    fields = {
        "v": 2,
        "kind": "proof",
        "market": MARKET,
        "ask": ASK,
        "sender": key.public_key,
        "recipient": BOB.public_key,
        "sha256": claimed or hashlib.sha256(payload).digest(),
        "size": len(payload),
        "key": nacl.public.SealedBox(nacl.public.PublicKey(recipient_x)).encrypt(stream_key),
        "stream": stream_header,
    }
    header = wire.encode({k: bytes(v) if isinstance(v, bytes) else v for k, v in fields.items()})
    parts = [payload[i : i + CHUNK_BYTES] for i in range(0, len(payload), CHUNK_BYTES)] or [b""]
    tags = [sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE] * len(parts)
    if final:
        tags[-1] = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
    ct = b"".join(
        sodium.crypto_secretstream_xchacha20poly1305_push(state, part, header, tag)
        for part, tag in zip(parts, tags, strict=True)
    )
    return Sealed(header, key.sign(b"p2p-market/direct/v2\x00" + header), ct)


def test_a_sender_built_from_the_spec_is_understood() -> None:
    payload = os.urandom(CHUNK_BYTES + 5)
    assert open_sealed(BOB, _from_the_spec(ALICE, payload)).payload == payload
    assert open_sealed(BOB, _from_the_spec(ALICE, b"")).payload == b""


def test_a_stream_without_its_final_tag_is_refused() -> None:
    """Truncation shows in the tags, not only in the byte count."""
    with pytest.raises(DirectError, match="truncated or extended"):
        open_sealed(BOB, _from_the_spec(ALICE, os.urandom(2 * CHUNK_BYTES), final=False))


def test_a_content_hash_that_does_not_match_is_rejected() -> None:
    good = _from_the_spec(ALICE, b"proof bytes", claimed=hashlib.sha256(b"proof bytes").digest())
    assert open_sealed(BOB, good).payload == b"proof bytes"
    bad = _from_the_spec(ALICE, b"proof bytes", claimed=hashlib.sha256(b"something else").digest())
    with pytest.raises(DirectError, match="content hash"):
        open_sealed(BOB, bad)


def test_oversized_is_refused_on_the_header() -> None:
    sealed = seal(ALICE, BOB.public_key, "proof", MARKET, ASK, bytes(2_000))
    with pytest.raises(DirectError, match="too large"):
        check_header(BOB, sealed.header, sealed.signature, max_bytes=1_999)


async def _raw_send(host: Any, sealed: Sealed, body: bytes, *, wait: bool = True) -> Any:
    """A sender that does whatever it likes on the stream; `wait=False` writes the
    body at once without waiting for the go-ahead, and returns the first reply."""
    stream = await host.new_stream(bob_id(), [PROTOCOL])
    await write_msg(stream, {"header": sealed.header, "sig": sealed.signature})
    if not wait:
        async with trio.open_nursery() as nursery:

            async def blast() -> None:
                with contextlib.suppress(WireError):
                    await write_bytes(stream, body, timeout_s=5)

            nursery.start_soon(blast)
            reply = await read_msg(stream)
            nursery.cancel_scope.cancel()
        return reply
    go = await read_msg(stream)
    if not go["ok"]:
        return go
    await write_bytes(stream, body, timeout_s=5)
    return await read_msg(stream)


def bob_id() -> Any:
    return peer_id_of(BOB.public_key)


async def test_tampered_in_transit_is_refused_and_never_delivered() -> None:
    inbox = Inbox()
    server = DirectServer(BOB, inbox, wants=anything)
    payload = os.urandom(300_000)
    sealed = seal(ALICE, BOB.public_key, "inputs", MARKET, ASK, payload)
    async with running_hosts(BOB, ALICE, EVE) as (bob, alice, eve):
        server.attach(bob)
        with trio.fail_after(10):
            reply = await _raw_send(alice, sealed, _flip(sealed.ciphertext, 1_000))
            assert reply["ok"] is False and "does not decrypt" in reply["error"]
            # Eve replays Alice's genuine message from her own connection.
            reply = await _raw_send(eve, sealed, sealed.ciphertext)
            assert reply == {
                "ok": False,
                "error": "signed by a key other than the connected peer's",
            }
            # Both refused; the genuine one still goes through.
            assert (await _raw_send(alice, sealed, sealed.ciphertext)) == {"ok": True}
    assert [m.payload for m in inbox.messages] == [payload]
    assert server.stats.refused == {
        "chunk 0 does not decrypt": 1,
        "signed by a key other than the connected peer's": 1,
    }


async def test_oversized_is_refused_before_the_body_is_sent() -> None:
    inbox = Inbox()
    server = DirectServer(BOB, inbox, wants=anything, max_bytes=MiB)
    async with running_hosts(BOB, ALICE) as (bob, alice):
        server.attach(bob)
        with trio.fail_after(10), pytest.raises(DirectError, match="too large"):
            await send_direct(alice, ALICE, BOB.public_key, "proof", MARKET, ASK, bytes(3 * MiB))
        # A sender that ignores the refusal and writes anyway is not read either.
        sealed = seal(ALICE, BOB.public_key, "proof", MARKET, ASK, bytes(2 * MiB))
        with trio.fail_after(10):
            reply = await _raw_send(alice, sealed, sealed.ciphertext, wait=False)
            assert reply["ok"] is False and "too large" in reply["error"]
    assert server.stats.bytes_received == 0 and not inbox.messages
    assert sum(server.stats.refused.values()) == 2


async def test_a_recipient_that_is_not_listening_is_an_error_not_a_hang() -> None:
    async with running_hosts(ALICE) as (alice,):
        with trio.fail_after(10), pytest.raises(DirectError, match=r"cannot reach|no stream"):
            await send_direct(alice, ALICE, BOB.public_key, "proof", MARKET, ASK, b"x", timeout_s=2)


# -- refused on the header: the node's policy ------------------------------------------


async def _blast(host: IHost, header: bytes, signature: bytes, chunks: Any) -> tuple[Any, int]:
    """An attacker: the header, then the whole body at once, never waiting for the
    go-ahead. Returns Bob's first reply and how many body bytes the transport took
    before Bob cut the stream."""
    stream = await host.new_stream(bob_id(), [PROTOCOL])
    await write_msg(stream, {"header": header, "sig": signature})
    written = 0
    async with trio.open_nursery() as nursery:

        async def blast() -> None:
            nonlocal written
            with contextlib.suppress(WireError):
                for chunk in chunks:
                    await write_bytes(stream, chunk, timeout_s=10)
                    written += len(chunk)

        nursery.start_soon(blast)
        reply = await read_msg(stream, timeout_s=10)
        with trio.move_on_after(10):  # until the reset reaches the writer
            while nursery.child_tasks:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return reply, written


async def test_an_unsolicited_64_mib_payload_is_refused_on_its_header() -> None:
    """Nobody asked Bob for this proof (his inbox, the roles' own, expects nothing):
    he refuses it from the signed header; the body is neither read nor decrypted,
    and his memory does not grow by the payload, though the sender blasts it all."""
    inbox = Inbox()
    server = DirectServer(BOB, inbox, wants=RoleInbox().wants)
    payload = bytes(64 * MiB)  # calloc'd zero pages: the sender costs no resident memory
    process = psutil.Process()
    async with running_hosts(BOB, ALICE) as (bob, alice):
        server.attach(bob)
        with trio.fail_after(10), pytest.raises(DirectError, match="declined"):
            await send_direct(alice, ALICE, BOB.public_key, "proof", MARKET, ASK, payload)
        before = peak = process.memory_info().rss
        header, signature, chunks = begin_seal(ALICE, BOB.public_key, "proof", MARKET, ASK, payload)
        async with trio.open_nursery() as nursery:

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, process.memory_info().rss)
                    await trio.sleep(0.01)

            nursery.start_soon(sample)
            with trio.fail_after(30):
                reply, written = await _blast(alice, header, signature, chunks)
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    assert reply == {"ok": False, "error": "declined"}
    assert server.stats.bytes_received == 0 and not inbox.messages
    assert server.stats.header_bytes < 2 * direct.MAX_HEADER_FRAME
    assert server.stats.refused == {"declined": 2}
    assert written < 4 * MiB  # the reset stopped the sender early
    growth = (peak - before) / MiB
    print(
        f"header {server.stats.header_bytes} B read for two 64 MiB claims;"
        f" the blaster got {written} B out; RSS +{growth:.1f} MiB"
    )
    assert growth < 24


def test_the_roles_inbox_wants_only_what_it_expects() -> None:
    inbox = RoleInbox(max_items=1)
    header = Header.decode(seal(ALICE, BOB.public_key, "inputs", MARKET, ASK, b"x").header)
    assert not inbox.wants(header)
    inbox.expect("inputs", ASK, EVE.public_key)  # from someone else
    assert not inbox.wants(header)
    inbox.expect("proof", ASK, ALICE.public_key)  # another kind
    assert not inbox.wants(header)
    inbox.expect("inputs", ASK, ALICE.public_key)
    assert inbox.wants(header)


# -- per-peer caps, minimum rate, time limit ---------------------------------------------

TRICKLER, HONEST = devnet_key("direct-trickler"), devnet_key("direct-honest")
OVER_CAP = "refused or reset: over its cap"


async def _trickle(host: IHost, key: SigningKey, size: int, rate: int, outcomes: list[str]) -> None:
    """A sender that takes its time: `rate` bytes/s in pieces every 0.1 s. Appends
    to `outcomes` what became of it: refused on the header, cut, or finished."""
    header, signature, chunks = begin_seal(key, BOB.public_key, "proof", MARKET, ASK, bytes(size))
    body = b"".join(chunks)
    stream = await host.new_stream(bob_id(), [PROTOCOL])
    await write_msg(stream, {"header": header, "sig": signature})
    try:
        go = await read_msg(stream, timeout_s=10)
    except WireError:  # over its cap, the reason may be overtaken by the reset
        outcomes.append(OVER_CAP)
        return
    if not go["ok"]:
        outcomes.append(OVER_CAP if "from this peer" in go["error"] else go["error"])
        return
    piece, sent = max(1, rate // 10), 0
    try:
        while sent < len(body):
            await write_bytes(stream, body[sent : sent + piece], timeout_s=10)
            sent += piece
            await trio.sleep(0.1)
        reply = await read_msg(stream, timeout_s=10)
        outcomes.append(f"finished: {reply}")
    except WireError:
        outcomes.append("cut")


async def test_a_trickling_peer_holds_two_slots_at_most_and_is_cut() -> None:
    """The attack: one peer opens four transfers and trickles them at 44 KB/s. It
    gets two (its cap), another peer's delivery goes through at once, and the two
    it holds are cut once their average falls below the minimum rate."""
    inbox = Inbox()
    server = DirectServer(BOB, inbox, wants=anything)  # the default limits
    outcomes: list[str] = []
    async with running_hosts(BOB, TRICKLER, HONEST) as (bob, trickler, honest):
        server.attach(bob)
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(_trickle, trickler, TRICKLER, 3 * MiB, 44_000, outcomes)
            with trio.fail_after(5):
                while len(outcomes) < 2 or server._active < 2:
                    await trio.sleep(0.01)
            started = trio.current_time()
            with trio.fail_after(3):
                await send_direct(honest, HONEST, BOB.public_key, "proof", MARKET, ASK, b"p" * MiB)
            took = trio.current_time() - started
            with trio.fail_after(10):
                while len(outcomes) < 4:
                    await trio.sleep(0.05)
            cut_after = trio.current_time() - started
    print(f"honest 1 MiB in {took:.2f} s beside the trickler, cut after {cut_after:.1f} s")
    assert sorted(outcomes) == ["cut", "cut"] + [OVER_CAP] * 2
    assert [m.sender for m in inbox.messages] == [HONEST.public_key]
    assert server.stats.refused["too slow"] == 2
    assert server._active == 0 and not server._by_peer


async def test_the_per_peer_cap_alone_keeps_a_slot_for_others() -> None:
    """No minimum rate here: only the per-peer cap stands between the trickler and
    every slot of the server."""
    inbox = Inbox()
    server = DirectServer(
        BOB, inbox, wants=anything, max_transfers=3, max_transfers_per_peer=2, min_rate=0
    )
    outcomes: list[str] = []
    async with running_hosts(BOB, TRICKLER, HONEST) as (bob, trickler, honest):
        server.attach(bob)
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(_trickle, trickler, TRICKLER, MiB, 20_000, outcomes)
            with trio.fail_after(5):
                while not outcomes or server._active < 2:
                    await trio.sleep(0.01)
            with trio.fail_after(3):
                await send_direct(honest, HONEST, BOB.public_key, "proof", MARKET, ASK, b"p")
            assert server._active == 2  # the trickler still holds its two
            nursery.cancel_scope.cancel()
    assert outcomes == [OVER_CAP]
    assert [m.sender for m in inbox.messages] == [HONEST.public_key]


async def test_a_body_below_the_minimum_rate_is_cut_and_its_slot_freed() -> None:
    inbox = Inbox()
    server = DirectServer(BOB, inbox, wants=anything, min_rate=64 * 1024, grace_s=0.5)
    outcomes: list[str] = []
    async with running_hosts(BOB, TRICKLER) as (bob, trickler):
        server.attach(bob)
        with trio.fail_after(5):  # 20 KB/s falls below 64 KiB/s within a second or so
            await _trickle(trickler, TRICKLER, MiB, 20_000, outcomes)
        with trio.fail_after(5):  # and the slot is free again: a prompt sender goes through
            await send_direct(trickler, TRICKLER, BOB.public_key, "proof", MARKET, ASK, b"ok")
    assert outcomes == ["cut"]
    assert server.stats.refused == {"too slow": 1}
    assert server.stats.bytes_received < 64 * 1024 * 2  # what a second and a half allows
    assert [m.payload for m in inbox.messages] == [b"ok"]


async def test_a_body_over_the_time_limit_is_cut_whatever_its_rate() -> None:
    inbox = Inbox()
    server = DirectServer(BOB, inbox, wants=anything, min_rate=1024, transfer_timeout_s=1.5)
    outcomes: list[str] = []
    async with running_hosts(BOB, TRICKLER) as (bob, trickler):
        server.attach(bob)
        with trio.fail_after(5):  # 2 MiB at 200 KB/s would take ten seconds
            await _trickle(trickler, TRICKLER, 2 * MiB, 200_000, outcomes)
    assert outcomes == ["cut"]
    assert server.stats.refused == {"timed out": 1}
    assert not inbox.messages and server._active == 0


async def test_a_full_server_says_busy() -> None:
    """The global cap is still there: two peers, one slot."""
    server = DirectServer(
        BOB, Inbox(), wants=anything, max_transfers=1, max_transfers_per_peer=1, min_rate=0
    )
    outcomes: list[str] = []
    async with running_hosts(BOB, TRICKLER, HONEST) as (bob, trickler, honest):
        server.attach(bob)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_trickle, trickler, TRICKLER, MiB, 20_000, outcomes)
            with trio.fail_after(5):
                while server._active < 1:
                    await trio.sleep(0.01)
            with trio.fail_after(5), pytest.raises(DirectError, match="busy") as busy:
                await send_direct(honest, HONEST, BOB.public_key, "proof", MARKET, ASK, b"p")
            # and the trickler, at its own cap, is told so: both are worth a retry
            with trio.fail_after(5), pytest.raises(DirectError, match="from this peer") as cap:
                await send_direct(trickler, TRICKLER, BOB.public_key, "proof", MARKET, ASK, b"p")
            nursery.cancel_scope.cancel()
    assert busy.value.busy and busy.value.refusal == "busy"
    assert cap.value.busy
