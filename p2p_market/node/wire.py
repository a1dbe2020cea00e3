"""Framing for the request/response stream protocols (sync, direct delivery).

A frame is a 4-byte big-endian length followed by that many bytes of canonical
msgpack. The length is checked against the reader's cap *before* any of the body
is read, so a peer that announces 4 GiB costs us 4 bytes, not an allocation. The
body is decoded with limits on every container and string, then re-encoded and
compared: as with envelopes, a body that is not in canonical form is rejected, so one
value has one encoding and a peer cannot make the same request look different.

Every read and write runs under `trio.fail_after`: a peer that stops talking
costs a timeout, never a hung task. Everything that can go wrong here (timeout,
reset, EOF, oversized frame, undecodable body) surfaces as one exception class,
`WireError`, so protocol code has one thing to catch.

Library quirk (py-libp2p 0.8.1, stream_muxer/yamux/yamux.py `write`): a writer
whose peer stops reading waits at most 5 s for a window update, then the write
fails (MuxedStreamError, surfaced here as a WireError). So a reader may take its
time between frames, but once the other side is writing more than the window
(256 KiB at first) it must keep reading, whatever timeout the writer was given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Final

import msgpack
import trio
from libp2p.abc import INetStream

MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
"""Default cap on one frame's body; protocols pass tighter caps where they can."""

DEFAULT_TIMEOUT_S: Final = 10.0

_PREFIX: Final = 4
_MAX_CONTAINER: Final = 65_536
_MAX_MAP: Final = 64


class WireError(Exception):
    """A frame could not be read or written: timeout, reset, EOF, over the cap,
    or not canonical msgpack.

    `eof` is True when the stream ended cleanly *between* frames: for a server
    that loops over requests that is the client saying goodbye, not an error."""

    def __init__(self, detail: str, *, eof: bool = False) -> None:
        super().__init__(detail)
        self.eof = eof


def _canon(obj: Any) -> Any:
    """The value with every map's keys sorted (str keys only), recursively."""
    if isinstance(obj, Mapping):
        if any(type(k) is not str for k in obj):
            raise WireError("map keys must be strings")
        return {k: _canon(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list | tuple):
        return [_canon(v) for v in obj]
    if type(obj) is float:
        raise WireError("floats are not part of the protocol")
    return obj


def encode(obj: Any) -> bytes:
    """Canonical msgpack: sorted str keys, bin for bytes, no floats."""
    try:
        return msgpack.packb(_canon(obj), use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        # RecursionError: a value nested some 500 levels deep, which msgpack decodes
        # (its limit is 1,024) but _canon cannot walk; `decode` re-encodes what it read.
        raise WireError(f"cannot encode: {exc}") from None


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"extension type {code} is not allowed")


def decode(data: bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Decode one canonical value; anything else is a WireError."""
    if len(data) > max_bytes:
        raise WireError(f"{len(data)} bytes over the {max_bytes}-byte cap")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            ext_hook=_no_ext,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=_MAX_CONTAINER,
            max_map_len=_MAX_MAP,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise WireError(f"undecodable frame: {type(exc).__name__}: {exc}") from None
    if encode(obj) != data:
        raise WireError("frame is not canonical msgpack")
    return obj


def frame(obj: Any, *, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Length prefix + canonical body; refuses to build what a peer would refuse."""
    body = encode(obj)
    if len(body) > max_bytes:
        raise WireError(f"frame of {len(body)} bytes over the {max_bytes}-byte cap")
    return len(body).to_bytes(_PREFIX, "big") + body


async def read_exactly(stream: INetStream, n: int, *, timeout_s: float) -> bytes:
    """Exactly `n` bytes, or WireError (EOF, reset, timeout). The stream hands out
    whatever it has buffered, so this loops; `eof` is set only if the stream
    ended before the first byte."""
    parts: list[bytes] = []
    got = 0
    try:
        with trio.fail_after(timeout_s):
            while got < n:
                try:
                    chunk = await stream.read(n - got)
                except EOFError:
                    chunk = b""
                if not chunk:
                    raise WireError(f"stream ended after {got} of {n} bytes", eof=got == 0)
                parts.append(chunk)
                got += len(chunk)
    except trio.TooSlowError:
        raise WireError(f"timed out after {timeout_s} s reading {n} bytes ({got} read)") from None
    except WireError:
        raise
    except Exception as exc:  # libp2p raises StreamReset / StreamError / others
        raise WireError(f"read failed: {type(exc).__name__}: {exc}") from None
    return b"".join(parts)


async def read_msg(
    stream: INetStream,
    *,
    max_bytes: int = MAX_FRAME_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """One frame, decoded. The length is checked before the body is read."""
    with trio.move_on_after(timeout_s) as scope:
        prefix = await read_exactly(stream, _PREFIX, timeout_s=timeout_s)
        size = int.from_bytes(prefix, "big")
        if size > max_bytes:
            raise WireError(f"peer announced a {size}-byte frame; the cap is {max_bytes}")
        try:
            body = await read_exactly(stream, size, timeout_s=timeout_s)
        except WireError as exc:
            raise WireError(str(exc)) from None  # EOF inside a frame is not a clean EOF
        return decode(body, max_bytes=max_bytes)
    assert scope.cancelled_caught
    raise WireError(f"timed out after {timeout_s} s reading a frame")


async def write_bytes(stream: INetStream, data: bytes, *, timeout_s: float) -> None:
    """Write raw bytes under a timeout; every failure is a WireError."""
    try:
        with trio.fail_after(timeout_s):
            await stream.write(data)
    except trio.TooSlowError:
        raise WireError(f"timed out after {timeout_s} s writing {len(data)} bytes") from None
    except Exception as exc:
        raise WireError(f"write failed: {type(exc).__name__}: {exc}") from None


async def write_msg(
    stream: INetStream,
    obj: Any,
    *,
    max_bytes: int = MAX_FRAME_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Write one frame."""
    await write_bytes(stream, frame(obj, max_bytes=max_bytes), timeout_s=timeout_s)


async def close_quietly(stream: INetStream) -> None:
    """Close a stream whose peer may already be gone; never raises, never hangs."""
    with trio.move_on_after(1.0) as scope:
        scope.shield = True
        try:
            await stream.close()
        except Exception:
            with contextlib.suppress(Exception):
                await stream.reset()
