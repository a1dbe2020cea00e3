"""Canonical msgpack: one message, one encoding, one id.

msgpack alone accepts duplicate map keys, non-minimal integers and strings, and
unsorted maps, so one order could travel under many ids (and dodge the seen-cache).
We decode with strict limits, re-encode the canonical way, and accept only when
the bytes are identical.
"""

from __future__ import annotations

from typing import Any

import msgpack

from p2p_market.core import limits as L


class CodecError(ValueError):
    def __init__(self, canonical_violation: bool, detail: str) -> None:
        super().__init__(detail)
        self.canonical_violation = canonical_violation


def _no_ext(code: int, data: bytes) -> Any:
    raise CodecError(False, f"extension type {code} is not allowed")


_LIMITS: dict[str, int] = {
    "max_str_len": L.MAX_INLINE_PROOF_BYTES,
    "max_bin_len": L.MAX_ENVELOPE_BYTES,
    "max_array_len": L.MAX_LIST_ITEMS,
    "max_map_len": 32,
    "max_ext_len": 0,
}


_PACKER = msgpack.Packer(use_bin_type=True, autoreset=True)
"""One packer, reused: `msgpack.packb` builds a new Packer (and its buffer) per call,
which costs more than packing a small order. Safe: packing neither re-enters nor
releases the GIL, and a failed pack resets the buffer."""


def pack(obj: object) -> bytes:
    """The canonical encoding. Maps must already be in sorted key order."""
    return _PACKER.pack(obj)  # type: ignore[no-any-return]


def pack_map(body: dict[str, Any]) -> bytes:
    return pack(dict(sorted(body.items())))


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=False, strict_map_key=True, ext_hook=_no_ext, **_LIMITS
        )
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise CodecError(False, f"{type(exc).__name__}: {exc}") from None


def unpack_canonical_map(data: bytes) -> dict[str, Any]:
    """Decode a body map and prove its encoding is the canonical one."""
    body = unpack(data)
    if type(body) is not dict:
        raise CodecError(False, "body is not a map")
    keys = list(body)
    if any(type(k) is not str for k in keys):
        raise CodecError(False, "map keys must be strings")
    # The decoded map keeps the wire order, so: sorted keys, then the same bytes again
    # (a duplicate key shrinks the map and changes the bytes).
    if keys != sorted(keys) or pack(body) != data:
        raise CodecError(True, "body is not canonically encoded")
    return body
