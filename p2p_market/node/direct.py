"""`/p2p-market/direct/1`: what must not be gossiped, sent to one node only.

Two things travel this way: proofs larger than a gossip envelope may carry, and
the confidential inputs of an ask, which the requester sends to its winners and
to nobody else. Both go over a libp2p stream that Noise already encrypts, yet
they are encrypted again, end to end, to the recipient's identity key:

- the content stays confidential even if it is relayed or stored on the way, and
  the recipient can keep or forward the sealed form as evidence;
- the header is signed by the sender's identity key, so the recipient knows who
  sent it from the message itself, not only from the connection it came on.

Crypto. The recipient's Ed25519 identity key is converted to X25519 (libsodium's
birational map); the sender makes an ephemeral X25519 key, and
HKDF-SHA256(X25519(ephemeral, recipient), salt = ephemeral pub || recipient pub)
gives a ChaCha20-Poly1305 key used for this message only. The payload is sealed in
chunks of `CHUNK_BYTES` (the STREAM construction: nonce = chunk number || last-chunk
flag), each with the encoded header as associated data, so the receiver can check
and decrypt while reading, a reordered, truncated or extended stream fails, and a
header altered after signing fails both its signature and every chunk's tag.

Exchange on the stream:

    sender   -> {"header": <canonical header>, "sig": <Ed25519 over DOMAIN || header>}
    receiver -> {"ok": true} | {"ok": false, "error": ...}   (checked header only)
    sender   -> ciphertext chunks, exactly as many bytes as the header's size implies
    receiver -> {"ok": true} | {"ok": false, "error": ...}   (after decrypting,
                checking the content hash and handing the message to the node)

The receiver refuses an oversized, misaddressed or badly signed message after the
header alone, before a byte of the body is sent: refusing costs a round trip, not
64 MiB of traffic.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import nacl.bindings
import nacl.exceptions
import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from p2p_market.core.crypto import SigningKey, verify
from p2p_market.net.host import guarded, peer_id_of
from p2p_market.node import wire
from p2p_market.node.wire import WireError, close_quietly, read_exactly, read_msg, write_msg

log = logging.getLogger(__name__)

PROTOCOL: Final = TProtocol("/p2p-market/direct/1")
KINDS: Final = frozenset({"inputs", "proof"})
VERSION: Final = 1
DOMAIN: Final = b"p2p-market/direct/v1\x00"
"""Signed before the header: a header signature is never valid as anything else."""
HKDF_INFO: Final = b"p2p-market/direct/v1 chacha20poly1305 key"
CHUNK_BYTES: Final = 1024 * 1024
TAG_BYTES: Final = 16
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S: Final = 30.0
MAX_HEADER_FRAME: Final = 2_048
_KEY: Final = 32


class DirectError(Exception):
    """A direct message was refused, could not be opened, or could not be sent."""


@dataclass(frozen=True, slots=True)
class Header:
    """What the sender signs: who, to whom, about which ask, and what (by hash)."""

    kind: str
    market: bytes
    ask: bytes
    sender: bytes
    recipient: bytes
    sha256: bytes
    """Of the plaintext payload."""
    size: int
    """Of the plaintext payload, in bytes."""
    ephemeral: bytes
    """The sender's one-time X25519 public key."""

    def encode(self) -> bytes:
        return wire.encode(
            {
                "v": VERSION,
                "kind": self.kind,
                "market": self.market,
                "ask": self.ask,
                "sender": self.sender,
                "recipient": self.recipient,
                "sha256": self.sha256,
                "size": self.size,
                "epk": self.ephemeral,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Header:
        try:
            m = wire.decode(data, max_bytes=MAX_HEADER_FRAME)
        except WireError as exc:
            raise DirectError(f"bad header: {exc}") from None
        names = {"v", "kind", "market", "ask", "sender", "recipient", "sha256", "size", "epk"}
        if type(m) is not dict or set(m) != names or m["v"] != VERSION:
            raise DirectError("bad header: unknown version or fields")
        if m["kind"] not in KINDS:
            raise DirectError(f"bad header: kind {m['kind']!r}")
        for name in ("market", "ask", "sender", "recipient", "sha256", "epk"):
            if type(m[name]) is not bytes or len(m[name]) != _KEY:
                raise DirectError(f"bad header: {name} must be {_KEY} bytes")
        if type(m["size"]) is not int or m["size"] < 0:
            raise DirectError("bad header: size")
        return cls(
            kind=m["kind"],
            market=m["market"],
            ask=m["ask"],
            sender=m["sender"],
            recipient=m["recipient"],
            sha256=m["sha256"],
            size=m["size"],
            ephemeral=m["epk"],
        )


@dataclass(frozen=True, slots=True)
class DirectMessage:
    """A delivered, decrypted and checked message. `sender` is proven by the
    header signature; `payload` matches the signed hash."""

    kind: str
    market: bytes
    ask: bytes
    sender: bytes
    payload: bytes

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.payload).digest()


@dataclass(frozen=True, slots=True)
class Sealed:
    """A whole sealed message: what goes on the wire, in one piece."""

    header: bytes
    signature: bytes
    ciphertext: bytes


# -- crypto ----------------------------------------------------------------------------


def x25519_public_of(ed25519_public: bytes) -> bytes:
    """The X25519 public key of an Ed25519 identity (DirectError if not a valid point)."""
    try:
        return bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise DirectError(f"not a usable Ed25519 public key: {exc}") from None


def x25519_private_of(key: SigningKey) -> X25519PrivateKey:
    """The X25519 private key matching `x25519_public_of(key.public_key)`."""
    _, secret = nacl.bindings.crypto_sign_seed_keypair(key.seed)
    return X25519PrivateKey.from_private_bytes(
        bytes(nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret))
    )


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _aead(shared: bytes, ephemeral: bytes, recipient_x: bytes) -> ChaCha20Poly1305:
    key = HKDF(
        algorithm=hashes.SHA256(), length=_KEY, salt=ephemeral + recipient_x, info=HKDF_INFO
    ).derive(shared)
    return ChaCha20Poly1305(key)


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def chunk_count(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """A payload is at least one chunk (an empty payload is one empty chunk)."""
    return max(1, -(-size // chunk_bytes))


def ciphertext_size(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return size + TAG_BYTES * chunk_count(size, chunk_bytes)


def _sign_header(header: bytes, key: SigningKey) -> bytes:
    return key.sign(DOMAIN + header)


def begin_seal(
    key: SigningKey, recipient: bytes, kind: str, market: bytes, ask: bytes, payload: bytes
) -> tuple[bytes, bytes, Iterator[bytes]]:
    """(header, signature, ciphertext chunks): the chunks are sealed lazily, so a
    refused message is never encrypted and a large one is not held twice."""
    if kind not in KINDS:
        raise DirectError(f"kind must be one of {sorted(KINDS)}")
    recipient_x = x25519_public_of(recipient)
    ephemeral = X25519PrivateKey.generate()
    epk = _raw_public(ephemeral.public_key())
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_x))
    except ValueError as exc:  # a low-order point: no shared secret
        raise DirectError(f"unusable recipient key: {exc}") from None
    header = Header(
        kind=kind,
        market=market,
        ask=ask,
        sender=key.public_key,
        recipient=recipient,
        sha256=hashlib.sha256(payload).digest(),
        size=len(payload),
        ephemeral=epk,
    ).encode()
    aead = _aead(shared, epk, recipient_x)

    def chunks() -> Iterator[bytes]:
        n = chunk_count(len(payload))
        for i in range(n):
            part = payload[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]
            yield aead.encrypt(_nonce(i, i == n - 1), part, header)

    return header, _sign_header(header, key), chunks()


def seal(
    key: SigningKey, recipient: bytes, kind: str, market: bytes, ask: bytes, payload: bytes
) -> Sealed:
    """The whole sealed message at once (tests, storage of evidence)."""
    header, signature, chunks = begin_seal(key, recipient, kind, market, ask, payload)
    return Sealed(header, signature, b"".join(chunks))


def check_header(
    key: SigningKey, header: bytes, signature: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Header:
    """Everything that can be checked before the body: form, sender's signature,
    addressed to `key`, size within the cap. DirectError names the first failure."""
    h = Header.decode(header)
    if type(signature) is not bytes or not verify(h.sender, DOMAIN + header, signature):
        raise DirectError("bad header signature")
    if h.recipient != key.public_key:
        raise DirectError("not addressed to this node")
    if h.size > max_bytes:
        raise DirectError(f"too large: {h.size} bytes, the limit is {max_bytes}")
    return h


class Opener:
    """Decrypts the chunks of one message in order, for the holder of `key`."""

    def __init__(self, key: SigningKey, header: bytes, parsed: Header) -> None:
        self.header = header
        self.parsed = parsed
        self.count = chunk_count(parsed.size)
        self._next = 0
        self._hash = hashlib.sha256()
        try:
            recipient = x25519_private_of(key)
            shared = recipient.exchange(X25519PublicKey.from_public_bytes(parsed.ephemeral))
        except ValueError as exc:
            raise DirectError(f"unusable ephemeral key: {exc}") from None
        self._aead = _aead(shared, parsed.ephemeral, _raw_public(recipient.public_key()))

    def chunk_size(self, index: int) -> int:
        """The ciphertext size of chunk `index`."""
        return min(CHUNK_BYTES, self.parsed.size - index * CHUNK_BYTES) + TAG_BYTES

    def open(self, ciphertext: bytes) -> bytes:
        i = self._next
        if i >= self.count:
            raise DirectError("more chunks than the header announces")
        try:
            plain = self._aead.decrypt(_nonce(i, i == self.count - 1), ciphertext, self.header)
        except InvalidTag:
            raise DirectError(f"chunk {i} does not decrypt: tampered or not for this key") from None
        self._next += 1
        self._hash.update(plain)
        return plain

    def finish(self) -> None:
        if self._next != self.count:
            raise DirectError(f"{self._next} of {self.count} chunks")
        if self._hash.digest() != self.parsed.sha256:
            raise DirectError("content hash does not match the signed header")


def decrypt(key: SigningKey, header: bytes, parsed: Header, ciphertext: bytes) -> bytes:
    """The plaintext of a whole ciphertext (no header checks: see `check_header`)."""
    opener = Opener(key, header, parsed)
    out = bytearray()
    offset = 0
    for i in range(opener.count):
        size = opener.chunk_size(i)
        out += opener.open(ciphertext[offset : offset + size])
        offset += size
    if offset != len(ciphertext):
        raise DirectError("ciphertext longer than the header announces")
    opener.finish()
    return bytes(out)


def open_sealed(
    key: SigningKey, sealed: Sealed, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> DirectMessage:
    """Check and open a whole sealed message addressed to `key`."""
    h = check_header(key, sealed.header, sealed.signature, max_bytes=max_bytes)
    payload = decrypt(key, sealed.header, h, sealed.ciphertext)
    return DirectMessage(kind=h.kind, market=h.market, ask=h.ask, sender=h.sender, payload=payload)


# -- the stream protocol -------------------------------------------------------------------


async def send_direct(
    host: IHost,
    key: SigningKey,
    recipient: bytes,
    kind: str,
    market: bytes,
    ask: bytes,
    payload: bytes,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Seal `payload` to `recipient` (an Ed25519 public key) and deliver it to that
    node, whose address the caller has made known (connected, or in the peerstore).
    Returns once the recipient has checked it and its node accepted it; raises
    DirectError otherwise. `timeout_s` bounds each step (dial, each chunk, replies)."""
    header, signature, chunks = begin_seal(key, recipient, kind, market, ask, payload)
    stream: INetStream | None = None
    try:
        try:
            with trio.fail_after(timeout_s):
                stream = await host.new_stream(peer_id_of(recipient), [PROTOCOL])
        except trio.TooSlowError:
            raise DirectError(f"no stream to the recipient within {timeout_s} s") from None
        except Exception as exc:
            raise DirectError(f"cannot reach the recipient: {type(exc).__name__}: {exc}") from None
        await write_msg(
            stream,
            {"header": header, "sig": signature},
            max_bytes=MAX_HEADER_FRAME,
            timeout_s=timeout_s,
        )
        _verdict(await read_msg(stream, max_bytes=MAX_HEADER_FRAME, timeout_s=timeout_s))
        for chunk in chunks:
            await wire.write_bytes(stream, chunk, timeout_s=timeout_s)
        _verdict(await read_msg(stream, max_bytes=MAX_HEADER_FRAME, timeout_s=timeout_s))
    except WireError as exc:
        raise DirectError(f"transfer failed: {exc}") from None
    finally:
        if stream is not None:
            await close_quietly(stream)


def _verdict(reply: Any) -> None:
    if type(reply) is not dict or type(reply.get("ok")) is not bool:
        raise DirectError("malformed reply")
    if not reply["ok"]:
        raise DirectError(f"refused: {reply.get('error')}")


OnMessage = Callable[[DirectMessage], Awaitable[bool]]


@dataclass
class DirectStats:
    delivered: int = 0
    bytes_received: int = 0
    """Ciphertext bytes read, over every transfer (refused ones included)."""
    refused: Counter[str] = field(default_factory=Counter)


class DirectServer:
    """Receives direct messages for `key`: checks, decrypts, hands them to
    `on_message` (True: taken; False: declined) and tells the sender."""

    def __init__(
        self,
        key: SigningKey,
        on_message: OnMessage,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_transfers: int = 4,
    ) -> None:
        self.key = key
        self.on_message = on_message
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_transfers = max_transfers
        """At most this many bodies in memory at once; more senders are told "busy"."""
        self.stats = DirectStats()
        self._active = 0

    def attach(self, host: IHost) -> None:
        host.set_stream_handler(PROTOCOL, guarded(self.handle, PROTOCOL))

    async def handle(self, stream: INetStream) -> None:
        try:
            message = await self._receive(stream)
            if message is None:
                return
            try:  # the body holds its transfer slot until the node has taken it
                taken = await self.on_message(message)
            except Exception:
                log.exception("on_message failed on a direct %s", message.kind)
                await self._refuse(stream, "internal error")
                return
            finally:
                self._active -= 1
            if not taken:
                await self._refuse(stream, "declined")
                return
            self.stats.delivered += 1
            await write_msg(stream, {"ok": True}, timeout_s=self.timeout_s)
        except WireError as exc:
            self.stats.refused["transfer failed"] += 1
            log.debug("direct transfer failed: %s", exc)
        finally:
            await close_quietly(stream)

    async def _refuse(self, stream: INetStream, reason: str) -> None:
        self.stats.refused[reason.split(":")[0]] += 1
        with contextlib.suppress(WireError):  # the sender may be gone already
            await write_msg(stream, {"ok": False, "error": reason}, timeout_s=self.timeout_s)

    async def _receive(self, stream: INetStream) -> DirectMessage | None:
        """The checked message, holding a transfer slot (`handle` frees it); or None
        once the sender has been told why not."""
        first = await read_msg(stream, max_bytes=MAX_HEADER_FRAME, timeout_s=self.timeout_s)
        try:
            if type(first) is not dict or set(first) != {"header", "sig"}:
                raise DirectError("bad header frame")
            if type(first["header"]) is not bytes:
                raise DirectError("bad header frame")
            header: bytes = first["header"]
            h = check_header(self.key, header, first["sig"], max_bytes=self.max_bytes)
            if stream.muxed_conn.peer_id != peer_id_of(h.sender):
                raise DirectError("signed by a key other than the connected peer's")
            if self._active >= self.max_transfers:
                raise DirectError("busy")
            opener = Opener(self.key, header, h)
        except DirectError as exc:
            await self._refuse(stream, str(exc))
            return None
        self._active += 1
        try:
            await write_msg(stream, {"ok": True}, timeout_s=self.timeout_s)
            body = bytearray()
            for i in range(opener.count):
                size = opener.chunk_size(i)
                chunk = await read_exactly(stream, size, timeout_s=self.timeout_s)
                self.stats.bytes_received += size
                body += opener.open(chunk)
            opener.finish()
        except DirectError as exc:
            self._active -= 1
            await self._refuse(stream, str(exc))
            return None
        except BaseException:
            self._active -= 1
            raise
        return DirectMessage(
            kind=h.kind, market=h.market, ask=h.ask, sender=h.sender, payload=bytes(body)
        )
