"""The envelope pipeline (core/codec.py, core/envelope.py, core/validation.py), the
full cheap-first check a gossiped envelope goes through: size, decoding, canonical
form, kind, fields, signature.

Contract: `check_envelope` never raises; it returns a verdict, and an envelope
exactly when the verdict is ACCEPT. An accepted envelope is the input itself, and
its message re-encodes to its body byte for byte (one message, one encoding).

Input: a mode byte, then either a whole envelope (even mode), or a kind byte and
a body (odd mode) that the harness signs with a real key, so that mutated bodies
also reach the signature check and the accepting path."""

from __future__ import annotations

from p2p_market.core import codec
from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import signing_payload
from p2p_market.core.validation import check_envelope
from p2p_market.fuzz import samples
from p2p_market.fuzz.target import ContractBroken, Target

_KEY = devnet_key("fuzz-signer")


def _signed(kind: int, body: bytes) -> bytes:
    """A canonical envelope of `body` with a valid signature by `_KEY`."""
    signature = _KEY.sign(signing_payload(kind, body))
    return codec.pack((kind, body, _KEY.public_key, signature))


def envelope_of(data: bytes) -> bytes:
    if len(data) < 2 or data[0] % 2 == 0:
        return data[1:]
    return _signed(data[1], data[2:])


def check(data: bytes) -> None:
    raw = envelope_of(data)
    verdict, env = check_envelope(raw)
    if (env is not None) != verdict.accepted:
        raise ContractBroken(f"verdict {verdict} with envelope {env is not None}")
    if env is None:
        return
    if env.raw != raw:
        raise ContractBroken("the accepted envelope is not the input")
    if codec.pack(env.message.to_map()) != env.body:
        raise ContractBroken(f"a {type(env.message).__name__} re-encodes to another body")


def seeds() -> list[bytes]:
    out = [b"\x00" + raw for raw in samples.envelopes()]
    out.append(b"\x00" + samples.unknown_kind(_KEY))
    for raw in samples.envelopes():
        kind, body, _, _ = codec.unpack(raw)
        out.append(bytes((1, kind)) + body)
    return out


TARGET = Target(
    name="envelope",
    about="core: decode, canonical form, kind, fields and signature of one envelope",
    check=check,
    seeds=seeds,
    mutation="msgpack",
)
