"""Signed envelopes: `[kind, body, signer, signature]`, canonical msgpack.

The signature covers DOMAIN || kind-byte || body, so a signature made for this
protocol can never be replayed as another protocol's, nor as another kind.
The id of a message is the SHA-256 of the whole canonical envelope.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from p2p_market.core import codec
from p2p_market.core import limits as L
from p2p_market.core.crypto import SigningKey
from p2p_market.core.messages import MESSAGE_TYPES, AnyMessage, Message


def signing_payload(kind: int, body: bytes) -> bytes:
    return L.PROTOCOL_DOMAIN + bytes((kind,)) + body


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded, canonical envelope whose body parsed into a message.

    Its signature is NOT yet checked: that is validation's job (see validation.py),
    done after the cheaper checks."""

    id: bytes
    raw: bytes
    kind: int
    body: bytes
    signer: bytes
    signature: bytes
    message: AnyMessage

    @property
    def payload(self) -> bytes:
        return signing_payload(self.kind, self.body)


def seal(message: Message, key: SigningKey) -> bytes:
    """Encode and sign a message: the bytes that go on the wire."""
    kind = int(message.KIND)
    body = codec.pack(message.to_map())
    signature = key.sign(signing_payload(kind, body))
    return codec.pack((kind, body, key.public_key, signature))


def message_id(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def market_id(descriptor: Message) -> bytes:
    """A market is named by the hash of its canonical descriptor body."""
    return hashlib.sha256(codec.pack(descriptor.to_map())).digest()


def parse(raw: bytes) -> Envelope:
    """Decode and check the form of an envelope (not its signature).

    Raises codec.CodecError for bytes that are not a canonical envelope,
    UnknownKind for a canonical envelope whose kind code this version does not
    know (its body is not looked at), and messages.MessageError for a body that is
    not a valid message of its kind."""
    outer = codec.unpack(raw)
    if type(outer) is not tuple or len(outer) != 4:
        raise codec.CodecError(False, "an envelope is an array of 4 items")
    kind, body, signer, signature = outer
    if type(kind) is not int or type(body) is not bytes:
        raise codec.CodecError(False, "envelope kind must be an integer and body bytes")
    if not 0 <= kind <= L.MAX_KIND:
        # Signed as one byte (signing_payload): no version of this protocol can sign it.
        raise codec.CodecError(False, f"envelope kind must be 0..{L.MAX_KIND}, not {kind}")
    if type(signer) is not bytes or len(signer) != L.KEY_BYTES:
        raise codec.CodecError(False, "signer must be a 32-byte key")
    if type(signature) is not bytes or len(signature) != L.SIGNATURE_BYTES:
        raise codec.CodecError(False, "signature must be 64 bytes")
    if codec.pack(outer) != raw:
        raise codec.CodecError(True, "envelope is not canonically encoded")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise UnknownKind(kind)
    fields = codec.unpack_canonical_map(body)
    message: AnyMessage = cls.from_map(fields)  # type: ignore[assignment]
    return Envelope(
        id=message_id(raw),
        raw=raw,
        kind=kind,
        body=body,
        signer=signer,
        signature=signature,
        message=message,
    )


class UnknownKind(ValueError):
    """A well-formed envelope of a kind code (0..MAX_KIND) that this protocol
    version does not define: perhaps a later version's (market-v1.md, Protocol
    evolution)."""

    def __init__(self, kind: int) -> None:
        super().__init__(f"unknown message kind {kind}")
        self.kind = kind
