"""Direct delivery: sealed to the recipient's identity key, signed by the sender,
refused early when it should be. Network tests use real hosts on 127.0.0.1; the
crypto is also tested on its own (what a third party holding the ciphertext can do)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from p2p_market.core.crypto import SigningKey, devnet_key
from p2p_market.node import direct
from p2p_market.node.direct import (
    CHUNK_BYTES,
    PROTOCOL,
    DirectError,
    DirectMessage,
    DirectServer,
    Header,
    Sealed,
    check_header,
    decrypt,
    open_sealed,
    seal,
    send_direct,
)
from p2p_market.node.wire import WireError, read_msg, write_bytes, write_msg
from tests.node.hosts import running_hosts

ALICE, BOB, EVE = (devnet_key(n) for n in ("direct-alice", "direct-bob", "direct-eve"))
MARKET, ASK = hashlib.sha256(b"market").digest(), hashlib.sha256(b"ask").digest()


class Inbox:
    def __init__(self, take: bool = True) -> None:
        self.messages: list[DirectMessage] = []
        self.take = take

    async def __call__(self, message: DirectMessage) -> bool:
        self.messages.append(message)
        return self.take


async def test_a_5_mb_payload_arrives_intact_and_signed() -> None:
    payload = os.urandom(5 * 1024 * 1024)
    inbox = Inbox()
    server = DirectServer(BOB, inbox)
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
        DirectServer(BOB, inbox).attach(bob)
        with trio.fail_after(10), pytest.raises(DirectError, match="declined"):
            await send_direct(alice, ALICE, BOB.public_key, "inputs", MARKET, ASK, b"")
    assert inbox.messages[0].payload == b""


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
    ct, n = sealed.ciphertext, CHUNK_BYTES + 16

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
    # ...and re-signed by Eve as its sender, every chunk's tag fails (header = AAD).
    forged = Header(**{**_fields(h), "sender": EVE.public_key}).encode()
    with pytest.raises(DirectError, match="does not decrypt"):
        opens(Sealed(forged, EVE.sign(direct.DOMAIN + forged), ct))


def _fields(h: Header) -> dict[str, Any]:
    return {name: getattr(h, name) for name in Header.__slots__}


def _seal_claiming(key: SigningKey, payload: bytes, claimed: bytes) -> Sealed:
    """Correctly encrypted and signed, but the signed hash is not the payload's."""
    recipient_x = direct.x25519_public_of(BOB.public_key)
    eph = X25519PrivateKey.generate()
    epk = direct._raw_public(eph.public_key())
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_x))
    header = Header(
        "proof", MARKET, ASK, key.public_key, BOB.public_key, claimed, len(payload), epk
    )
    raw = header.encode()
    ct = direct._aead(shared, epk, recipient_x).encrypt(direct._nonce(0, True), payload, raw)
    return Sealed(raw, key.sign(direct.DOMAIN + raw), ct)


def test_a_content_hash_that_does_not_match_is_rejected() -> None:
    good = _seal_claiming(ALICE, b"proof bytes", hashlib.sha256(b"proof bytes").digest())
    assert open_sealed(BOB, good).payload == b"proof bytes"
    bad = _seal_claiming(ALICE, b"proof bytes", hashlib.sha256(b"something else").digest())
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
    from p2p_market.net.host import peer_id_of

    return peer_id_of(BOB.public_key)


async def test_tampered_in_transit_is_refused_and_never_delivered() -> None:
    inbox = Inbox()
    server = DirectServer(BOB, inbox)
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
    server = DirectServer(BOB, inbox, max_bytes=1024 * 1024)
    async with running_hosts(BOB, ALICE) as (bob, alice):
        server.attach(bob)
        with trio.fail_after(10), pytest.raises(DirectError, match="too large"):
            await send_direct(
                alice, ALICE, BOB.public_key, "proof", MARKET, ASK, bytes(3 * 1024 * 1024)
            )
        # A sender that ignores the refusal and writes anyway is not read either.
        sealed = seal(ALICE, BOB.public_key, "proof", MARKET, ASK, bytes(2 * 1024 * 1024))
        with trio.fail_after(10):
            reply = await _raw_send(alice, sealed, sealed.ciphertext, wait=False)
            assert reply["ok"] is False and "too large" in reply["error"]
    assert server.stats.bytes_received == 0 and not inbox.messages
    assert sum(server.stats.refused.values()) == 2


async def test_a_recipient_that_is_not_listening_is_an_error_not_a_hang() -> None:
    async with running_hosts(ALICE) as (alice,):
        with trio.fail_after(10), pytest.raises(DirectError, match=r"cannot reach|no stream"):
            await send_direct(alice, ALICE, BOB.public_key, "proof", MARKET, ASK, b"x", timeout_s=2)
