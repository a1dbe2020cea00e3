"""`/p2p-market/direct/2`: what must not be gossiped, sent to one node only.

Two things travel this way: proofs larger than a gossip envelope may carry, and
the confidential inputs of an ask, which the requester sends to its winners and
to nobody else. Both go over a libp2p stream that Noise already encrypts, yet
they are encrypted again, end to end, to the recipient's identity key:

- the content stays confidential even if it is relayed or stored on the way, and
  the recipient can keep or forward the sealed form as evidence;
- the header is signed by the sender's identity key, so the recipient knows who
  sent it from the message itself, not only from the connection it came on.

The wire format is normative and described in protocols/market-v1.md §22; in short:
a fresh libsodium secretstream (XChaCha20-Poly1305) key is sealed to the
recipient's X25519 key (its Ed25519 identity key converted) with a sealed box; the
sealed key and the stream's header ride in the signed header; the payload follows
in secretstream chunks of `CHUNK_BYTES`, the last one tagged FINAL, each
authenticated with the encoded header as additional data. All of the cryptography
is libsodium's, through PyNaCl: nothing here is built by hand.

The receiver decides on the signed header alone (form, signature, address, size,
the connected peer, whether the node wants it, a free transfer slot), so refusing
costs a round trip, never the body; a refused stream is reset. A transfer it does
accept must keep a minimum rate and finish within a time limit, and one peer may
hold only a few transfers at once (`DirectServer`).
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
import nacl.public
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p_market.core.crypto import SigningKey, verify
from p2p_market.net import relay
from p2p_market.net.host import guarded, peer_id_of
from p2p_market.node import wire
from p2p_market.node.wire import WireError, close_quietly, read_msg, write_msg

log = logging.getLogger(__name__)

PROTOCOL: Final = TProtocol("/p2p-market/direct/2")
KINDS: Final = frozenset({"inputs", "proof"})
VERSION: Final = 2
DOMAIN: Final = b"p2p-market/direct/v2\x00"
"""Signed before the header: a header signature is never valid as anything else."""
CHUNK_BYTES: Final = 1024 * 1024
"""Plaintext bytes per secretstream chunk (the last one may be shorter)."""
TAG_BYTES: Final = nacl.bindings.crypto_secretstream_xchacha20poly1305_ABYTES
"""What secretstream adds to each chunk: the tag byte and a Poly1305 MAC (17)."""
STREAM_HEADER_BYTES: Final = nacl.bindings.crypto_secretstream_xchacha20poly1305_HEADERBYTES
SEALED_KEY_BYTES: Final = (
    nacl.bindings.crypto_box_SEALBYTES
    + nacl.bindings.crypto_secretstream_xchacha20poly1305_KEYBYTES
)
_TAG_MESSAGE: Final = nacl.bindings.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL: Final = nacl.bindings.crypto_secretstream_xchacha20poly1305_TAG_FINAL
MAX_HEADER_FRAME: Final = 2_048
_KEY: Final = 32

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S: Final = 30.0
"""Each step of the exchange other than the body: dial, header, replies."""
DEFAULT_MAX_TRANSFERS: Final = 4
"""Bodies being received or handed to the node at once, from everyone."""
DEFAULT_MAX_TRANSFERS_PER_PEER: Final = 2
"""Streams one peer may hold open at once, from its header to the verdict: less
than `DEFAULT_MAX_TRANSFERS`, so one peer cannot take every slot."""
DEFAULT_MIN_RATE: Final = 64 * 1024
"""Bytes per second a body must average, measured from the go-ahead..."""
DEFAULT_GRACE_S: Final = 1.0
"""...after this grace period (a slow start is not a slow sender)."""
DEFAULT_TRANSFER_TIMEOUT_S: Final = 120.0
"""The whole body, whatever its rate: 64 MiB needs about 550 KiB/s."""
_REFUSAL_TIMEOUT_S: Final = 2.0
"""Telling a refused sender why: a sender that does not read is not waited for."""


class DirectError(Exception):
    """A direct message was refused, could not be opened, or could not be sent.

    `refusal` is the receiver's reason when it refused (what it counts in
    `DirectStats.refused`, e.g. "declined", "busy"), else None."""

    def __init__(self, detail: str, *, refusal: str | None = None) -> None:
        super().__init__(detail)
        self.refusal = refusal

    @property
    def busy(self) -> bool:
        """Refused for want of a free transfer slot: worth trying again later."""
        return self.refusal in BUSY


BUSY: Final = frozenset({"busy", "too many transfers from this peer"})
"""The refusals that say "not now" rather than "no"."""


@dataclass(frozen=True, slots=True)
class Header:
    """What the sender signs: who, to whom, about which ask, what (by hash and
    size), and the key to open it, sealed to the recipient."""

    kind: str
    market: bytes
    ask: bytes
    sender: bytes
    recipient: bytes
    sha256: bytes
    """Of the plaintext payload."""
    size: int
    """Of the plaintext payload, in bytes."""
    sealed_key: bytes
    """The secretstream key, in a sealed box to the recipient's X25519 key."""
    stream_header: bytes
    """The secretstream header (its initial nonce), from `init_push`."""

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
                "key": self.sealed_key,
                "stream": self.stream_header,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Header:
        try:
            m = wire.decode(data, max_bytes=MAX_HEADER_FRAME)
        except WireError as exc:
            raise DirectError(f"bad header: {exc}") from None
        names = {"v", "kind", "market", "ask", "sender", "recipient", "sha256", "size"}
        if type(m) is not dict or set(m) != names | {"key", "stream"} or m["v"] != VERSION:
            raise DirectError("bad header: unknown version or fields")
        if type(m["kind"]) is not str or m["kind"] not in KINDS:  # a map is unhashable
            raise DirectError(f"bad header: kind {m['kind']!r}")
        for name, size in _BYTES_FIELDS.items():
            if type(m[name]) is not bytes or len(m[name]) != size:
                raise DirectError(f"bad header: {name} must be {size} bytes")
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
            sealed_key=m["key"],
            stream_header=m["stream"],
        )


_BYTES_FIELDS: Final = {
    **dict.fromkeys(("market", "ask", "sender", "recipient", "sha256"), _KEY),
    "key": SEALED_KEY_BYTES,
    "stream": STREAM_HEADER_BYTES,
}


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


# -- crypto: libsodium's sealed boxes and secretstream -------------------------------------


def x25519_public_of(ed25519_public: bytes) -> bytes:
    """The X25519 public key of an Ed25519 identity (DirectError if not a valid point)."""
    try:
        return bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise DirectError(f"not a usable Ed25519 public key: {exc}") from None


def x25519_private_of(key: SigningKey) -> nacl.public.PrivateKey:
    """The X25519 private key matching `x25519_public_of(key.public_key)`."""
    _, secret = nacl.bindings.crypto_sign_seed_keypair(key.seed)
    return nacl.public.PrivateKey(nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret))


def chunk_count(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """A payload is at least one chunk (an empty payload is one empty chunk): the
    FINAL tag always travels, so a truncated stream is always detected."""
    return max(1, -(-size // chunk_bytes))


def ciphertext_size(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return size + TAG_BYTES * chunk_count(size, chunk_bytes)


def _sign_header(header: bytes, key: SigningKey) -> bytes:
    return key.sign(DOMAIN + header)


def _seal_key(recipient: bytes, stream_key: bytes) -> bytes:
    """The stream key in a sealed box to `recipient` (an Ed25519 public key)."""
    box = nacl.public.SealedBox(nacl.public.PublicKey(x25519_public_of(recipient)))
    try:
        return bytes(box.encrypt(stream_key))
    except nacl.exceptions.CryptoError as exc:  # e.g. a low-order point
        raise DirectError(f"unusable recipient key: {exc}") from None


def begin_seal(
    key: SigningKey, recipient: bytes, kind: str, market: bytes, ask: bytes, payload: bytes
) -> tuple[bytes, bytes, Iterator[bytes]]:
    """(header, signature, ciphertext chunks): the chunks are sealed lazily, so a
    refused message is never encrypted and a large one is not held twice."""
    if kind not in KINDS:
        raise DirectError(f"kind must be one of {sorted(KINDS)}")
    stream_key = nacl.bindings.crypto_secretstream_xchacha20poly1305_keygen()
    state = nacl.bindings.crypto_secretstream_xchacha20poly1305_state()
    stream_header = nacl.bindings.crypto_secretstream_xchacha20poly1305_init_push(state, stream_key)
    header = Header(
        kind=kind,
        market=market,
        ask=ask,
        sender=key.public_key,
        recipient=recipient,
        sha256=hashlib.sha256(payload).digest(),
        size=len(payload),
        sealed_key=_seal_key(recipient, stream_key),
        stream_header=stream_header,
    ).encode()

    def chunks() -> Iterator[bytes]:
        n = chunk_count(len(payload))
        for i in range(n):
            part = payload[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]
            tag = _TAG_FINAL if i == n - 1 else _TAG_MESSAGE
            yield nacl.bindings.crypto_secretstream_xchacha20poly1305_push(state, part, header, tag)

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
    """Decrypts the chunks of one message in order, for the holder of `key`. Made
    from the header alone: a key not sealed to us is refused before the body."""

    def __init__(self, key: SigningKey, header: bytes, parsed: Header) -> None:
        self.header = header
        self.parsed = parsed
        self.count = chunk_count(parsed.size)
        self._next = 0
        self._hash = hashlib.sha256()
        try:
            stream_key = nacl.public.SealedBox(x25519_private_of(key)).decrypt(parsed.sealed_key)
            self._state = nacl.bindings.crypto_secretstream_xchacha20poly1305_state()
            nacl.bindings.crypto_secretstream_xchacha20poly1305_init_pull(
                self._state, parsed.stream_header, stream_key
            )
        except (nacl.exceptions.CryptoError, ValueError) as exc:
            raise DirectError(
                f"the stream key does not decrypt: not for this key ({exc})"
            ) from None

    def chunk_size(self, index: int) -> int:
        """The ciphertext size of chunk `index`."""
        return min(CHUNK_BYTES, self.parsed.size - index * CHUNK_BYTES) + TAG_BYTES

    def open(self, ciphertext: bytes) -> bytes:
        i = self._next
        if i >= self.count:
            raise DirectError("more chunks than the header announces")
        try:
            plain, tag = nacl.bindings.crypto_secretstream_xchacha20poly1305_pull(
                self._state, ciphertext, self.header
            )
        except (nacl.exceptions.CryptoError, ValueError):
            raise DirectError(f"chunk {i} does not decrypt: tampered or not for this key") from None
        last = i == self.count - 1
        if tag != (_TAG_FINAL if last else _TAG_MESSAGE):
            raise DirectError(f"chunk {i} of {self.count} has tag {tag}: truncated or extended")
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
                await relay.reach(host, peer_id_of(recipient))  # known by a circuit only?
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
        error = str(reply.get("error"))
        raise DirectError(f"refused: {error}", refusal=error.split(":")[0])


OnMessage = Callable[[DirectMessage], Awaitable[bool]]
"""Hands a checked message to the node: True, taken; False, declined after all."""
Wants = Callable[[Header], bool]
"""The node's policy, asked on the signed header before a byte of the body: does it
expect this kind, for this ask, from this sender? False: refused as "declined"."""


@dataclass
class DirectStats:
    delivered: int = 0
    bytes_received: int = 0
    """Ciphertext bytes of bodies read, over every transfer (refused ones included)."""
    header_bytes: int = 0
    """Header frames read, length prefixes included."""
    refused: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Pace:
    """The minimum rate and the time limit of one body, as deadlines: a body that
    has `received` bytes must have more by `deadline(received)`. So at every moment
    `t` it has at least `min_rate * (t - start - grace_s)` bytes (0: no minimum):
    the average, less a grace period for a slow start, never falls below the rate,
    checked as the bytes come rather than once per chunk; and the body ends within
    `timeout_s` of `start`."""

    start: float
    min_rate: int
    grace_s: float
    timeout_s: float

    def _rate_deadline(self, received: int) -> float:
        if self.min_rate <= 0:
            return float("inf")
        return self.start + self.grace_s + received / self.min_rate

    def deadline(self, received: int) -> float:
        return min(self._rate_deadline(received), self.start + self.timeout_s)

    def why(self, received: int) -> str:
        """The reason a body missed `deadline(received)`."""
        if self.start + self.timeout_s <= self._rate_deadline(received):
            return f"timed out: the body took over {self.timeout_s:g} s"
        return (
            f"too slow: {received} bytes in {self.deadline(received) - self.start:.1f} s,"
            f" the minimum is {self.min_rate} B/s after {self.grace_s:g} s"
        )


class _Body:
    """Reads one body off a stream under its `Pace`, counting what it reads."""

    def __init__(self, stream: INetStream, pace: Pace, stats: DirectStats) -> None:
        self.stream = stream
        self.pace = pace
        self.stats = stats
        self.received = 0

    async def read(self, n: int) -> bytes:
        """Exactly `n` bytes; DirectError if the pace is missed, WireError if the
        stream fails or ends."""
        parts: list[bytes] = []
        got = 0
        while got < n:
            data: bytes | None = None
            with trio.move_on_at(self.pace.deadline(self.received)):
                data = await self._read_some(n - got)
            if data is None:
                raise DirectError(self.pace.why(self.received))
            parts.append(data)
            got += len(data)
            self.received += len(data)
            self.stats.bytes_received += len(data)
        return b"".join(parts)

    async def _read_some(self, n: int) -> bytes:
        try:
            data = await self.stream.read(n)
        except EOFError:
            data = b""
        except Exception as exc:  # libp2p raises StreamReset / StreamError / others
            raise WireError(f"read failed: {type(exc).__name__}: {exc}") from None
        if not data:
            raise WireError(f"stream ended after {self.received} bytes of the body")
        return data


async def _close_write(stream: INetStream) -> None:
    """Send a FIN: `NetStream.close_write`, which `INetStream` does not declare."""
    close_write: Callable[[], Awaitable[None]] | None = getattr(stream, "close_write", None)
    if close_write is not None:
        await close_write()


class DirectServer:
    """Receives direct messages for `key`: decides on the signed header (`wants`
    is the node's policy), then reads, decrypts and hands them to `on_message`
    (True: taken; False: declined) and tells the sender.

    Limits, all per server: `max_bytes` per payload; `max_transfers` bodies at once
    from everyone (each may be held in memory) and `max_transfers_per_peer` streams
    at once from one peer, header included, so one peer cannot keep the others out;
    a body must average `min_rate` bytes/s after `grace_s` seconds and end within
    `transfer_timeout_s`, or it is cut and its slot freed. `timeout_s` bounds the
    header and each reply. The defaults are the DEFAULT_* constants."""

    def __init__(
        self,
        key: SigningKey,
        on_message: OnMessage,
        *,
        wants: Wants,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_transfers: int = DEFAULT_MAX_TRANSFERS,
        max_transfers_per_peer: int = DEFAULT_MAX_TRANSFERS_PER_PEER,
        min_rate: int = DEFAULT_MIN_RATE,
        grace_s: float = DEFAULT_GRACE_S,
        transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S,
    ) -> None:
        self.key = key
        self.on_message = on_message
        self.wants = wants
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_transfers = max_transfers
        self.max_transfers_per_peer = max_transfers_per_peer
        self.min_rate = min_rate
        self.grace_s = grace_s
        self.transfer_timeout_s = transfer_timeout_s
        self.stats = DirectStats()
        self._active = 0
        """Bodies being read or handed to the node."""
        self._by_peer: Counter[ID] = Counter()
        """Open streams, by peer."""

    def attach(self, host: IHost) -> None:
        host.set_stream_handler(PROTOCOL, guarded(self.handle, PROTOCOL))

    async def handle(self, stream: INetStream) -> None:
        """One stream, counted against its peer's cap from the first byte."""
        peer = stream.muxed_conn.peer_id
        if self._by_peer[peer] >= self.max_transfers_per_peer:
            await self._refuse(stream, "too many transfers from this peer")
            return
        self._by_peer[peer] += 1
        try:
            await self._serve(stream, peer)
        finally:
            self._by_peer[peer] -= 1
            if self._by_peer[peer] <= 0:
                del self._by_peer[peer]

    async def _serve(self, stream: INetStream, peer: ID) -> None:
        try:
            message = await self._receive(stream, peer)
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
        """Tell the sender why, then reset the stream at once: whatever of the body
        it has sent or still sends is dropped by the muxer, never read. The reason
        goes out with a FIN before the reset: py-libp2p's yamux hands a reader the
        data buffered before a FIN even after a reset, which it would otherwise drop."""
        self.stats.refused[reason.split(":")[0]] += 1
        with trio.move_on_after(_REFUSAL_TIMEOUT_S + 1.0) as scope:
            scope.shield = True
            with contextlib.suppress(WireError):  # the sender may be gone already
                await write_msg(
                    stream, {"ok": False, "error": reason}, timeout_s=_REFUSAL_TIMEOUT_S
                )
            with contextlib.suppress(Exception):
                await _close_write(stream)
            with contextlib.suppress(Exception):
                await stream.reset()

    async def _receive(self, stream: INetStream, peer: ID) -> DirectMessage | None:
        """The checked message, holding a transfer slot (`_serve` frees it); or None
        once the sender has been told why not."""
        first = await read_msg(stream, max_bytes=MAX_HEADER_FRAME, timeout_s=self.timeout_s)
        self.stats.header_bytes += 4 + len(wire.encode(first))
        try:
            header, h = self._check(first, peer)
            if self._active >= self.max_transfers:
                raise DirectError("busy")
            opener = Opener(self.key, header, h)
        except DirectError as exc:
            await self._refuse(stream, str(exc))
            return None
        self._active += 1
        try:
            await write_msg(stream, {"ok": True}, timeout_s=self.timeout_s)
            payload = await self._read_body(stream, opener)
        except DirectError as exc:
            self._active -= 1
            await self._refuse(stream, str(exc))
            return None
        except BaseException:
            self._active -= 1
            raise
        return DirectMessage(
            kind=h.kind, market=h.market, ask=h.ask, sender=h.sender, payload=payload
        )

    def _check(self, first: Any, peer: ID) -> tuple[bytes, Header]:
        """The header frame's checks, cheapest first, ending with the node's policy."""
        if type(first) is not dict or set(first) != {"header", "sig"}:
            raise DirectError("bad header frame")
        if type(first["header"]) is not bytes:
            raise DirectError("bad header frame")
        header: bytes = first["header"]
        h = check_header(self.key, header, first["sig"], max_bytes=self.max_bytes)
        if peer != peer_id_of(h.sender):
            raise DirectError("signed by a key other than the connected peer's")
        if not self.wants(h):
            raise DirectError("declined")
        return header, h

    async def _read_body(self, stream: INetStream, opener: Opener) -> bytes:
        """The decrypted, checked payload, read under this server's pace."""
        pace = Pace(trio.current_time(), self.min_rate, self.grace_s, self.transfer_timeout_s)
        body = _Body(stream, pace, self.stats)
        parts = [opener.open(await body.read(opener.chunk_size(i))) for i in range(opener.count)]
        opener.finish()
        return b"".join(parts)
