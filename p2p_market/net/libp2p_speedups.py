"""Four fixes to py-libp2p 0.8.1's gossip path, each measured (`p2p-market bench
frames`, docs/transport.md) and written up for upstream in docs/upstream/.

- `pubsub-read`: pubsub reads each RPC's length prefix one byte at a time
  (utils/varint.py `read_varint_prefixed_bytes_limited`, called by
  `Pubsub.continuously_read_stream`), so every RPC costs 2-4 stream reads, each
  taking the stream's lock and, under yamux, running the window bookkeeping. The
  replacement keeps a buffer per stream and reads what is there (one read per RPC
  or fewer), with the same limits and the same errors.
- `yamux-window`: a yamux stream sends a WINDOW_UPDATE frame back for every read
  that returns bytes (`YamuxStream._auto_tune_and_send_window_update`: below the
  half-window mark its "partial slack" branch credits each read, whatever
  `PY_YAMUX_RELEASE_ON_READ` says): with the byte-wise reads above, about three
  frames back for every RPC received, each encrypted, sent, received, decrypted
  and handled by the peer. go-yamux gives credit back once half the window is
  consumed; with this patch so does py-libp2p. Its `PY_YAMUX_*` settings, which it
  reads from the environment on every frame, are read once, when it is applied.
- `sender-record`: every pubsub RPC carries the sender's signed peer record, and
  the receiver parses it and checks its Ed25519 signature every time
  (pubsub/utils.py `maybe_consume_signed_record`): a signature check per RPC per
  receiver, for a record that changes when the sender's addresses do. The
  replacement remembers, per peer, the last record bytes it accepted and takes
  the same bytes again without re-checking for `SENDER_RECORD_RECHECK_S` (after
  which it re-consumes it, which also renews the peerstore's TTL).
- `seen-first`: pubsub starts a task per message it reads (`push_msg`), and only
  that task finds the message already seen and drops it; with a mesh degree of D a
  node reads most frames D times. The replacement of the read loop's subscription
  test (`_is_subscribed_to_msg`, called only there, just before the task is
  started) also answers no for a message already seen, so a copy costs no task;
  `push_msg` did nothing else with it (its other early exits, a blacklisted sender,
  also do nothing).

Each patch is applied only to the library version it was written for, and only if
the library's code it replaces is the code it was written against (SHA-256 of the
source; `tests/net/test_libp2p_speedups.py` pins both); otherwise it logs a warning
and leaves the library alone. `leave_out(name)` keeps one off in this process: the
benchmark's baseline (`bench frames`' `before` variant) runs without them.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from weakref import WeakKeyDictionary

import libp2p.pubsub.pubsub as pubsub_module
import libp2p.stream_muxer.yamux.yamux as yamux_module
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.pubsub.utils import maybe_consume_signed_record as _library_consume
from libp2p.utils.varint import decode_uvarint
from libp2p.utils.varint import read_varint_prefixed_bytes_limited as _library_read

from p2p_market.net.pins import misfit, source_sha256

log = logging.getLogger(__name__)

PATCHED_VERSION: Final = "0.8.1"
"""The py-libp2p release the patches were written for (pyproject.toml pins it)."""

READ_CHUNK: Final = 64 * 1024
"""Most bytes one read of a pubsub stream asks for (more than one RPC may come)."""
MAX_VARINT_BYTES: Final = 10
SENDER_RECORDS: Final = 4096
"""Peers whose last accepted record is remembered (oldest forgotten first)."""
SENDER_RECORD_RECHECK_S: Final = 60.0
GROW_THRESHOLD_SHA256: Final = "fde3988bca54745c16a562ae8884b5b56ff72beb3d1ad7af37d6e8c42f1dc05d"
"""`YamuxStream._grow_threshold`, which `window_update_by_half` relies on."""
CONTINUOUSLY_READ_STREAM_SHA256: Final = (
    "ac0c4ad87ca39288d70fcc5a58a842613bc8c47f32c171995a5775bc83fa4430"
)
"""Two patches replace names this method looks up (the read loop of every pubsub
stream): it must still be the method that does."""


# -- pubsub-read ---------------------------------------------------------------------

_buffers: WeakKeyDictionary[Any, bytearray] = WeakKeyDictionary()


def _parse_prefix(buffer: bytearray) -> tuple[int, int] | None:
    """(length, prefix size) of the varint at the start of `buffer`; None while it
    is incomplete; ParseError past 10 bytes (the library's limit)."""
    for i in range(min(len(buffer), MAX_VARINT_BYTES)):
        if buffer[i] & 0x80 == 0:
            return decode_uvarint(bytes(buffer[: i + 1])), i + 1
    if len(buffer) >= MAX_VARINT_BYTES:
        raise ParseError("Varint decoding error: integer exceeds maximum size of 64 bits")
    return None


async def read_prefixed_buffered(reader: Any, max_length: int) -> bytes:
    """`read_varint_prefixed_bytes_limited` over a per-reader buffer: the same
    result, limits and errors, in one read per RPC instead of one per prefix byte
    and more for the body. Only for a reader that nothing else reads (the pubsub
    stream's read loop)."""
    if max_length <= 0:
        raise ValueError("max_length must be greater than 0")
    buffer = _buffers.get(reader)
    if buffer is None:
        buffer = _buffers[reader] = bytearray()
    while True:
        prefix = _parse_prefix(buffer)
        if prefix is not None:
            length, size = prefix
            if length > max_length:
                raise MessageTooLarge(
                    f"Message length {length} exceeds maximum allowed {max_length}"
                )
            if len(buffer) >= size + length:
                message = bytes(buffer[size : size + length])
                del buffer[: size + length]
                return message
            want = size + length - len(buffer)
        else:
            want = 1
        chunk = await reader.read(max(want, READ_CHUNK) if prefix else READ_CHUNK)
        if not chunk:
            if prefix is None:
                raise IncompleteReadError(
                    "Stream ended while reading varint length prefix",
                    expected_bytes=1,
                    received_bytes=0,
                )
            raise IncompleteReadError(
                f"Incomplete message: expected {prefix[0]}, got {len(buffer) - prefix[1]}",
                expected_bytes=prefix[0],
                received_bytes=len(buffer) - prefix[1],
            )
        buffer += chunk


# -- yamux-window --------------------------------------------------------------------

_YAMUX_SETTINGS: Final = (
    "_perf_yamux_debug_enabled",
    "_yamux_disable_hysteresis",
    "_yamux_batch_threshold_divisor",
    "_yamux_data_read_timeout",
    "_yamux_release_on_read",
)
_yamux_originals: dict[str, Callable[[], Any]] = {
    name: getattr(yamux_module, name) for name in _YAMUX_SETTINGS
}
_library_window_update = yamux_module.YamuxStream._auto_tune_and_send_window_update
_WINDOW_UPDATE: Final = "_auto_tune_and_send_window_update"


def _constant(value: Any) -> Callable[[], Any]:
    def setting() -> Any:
        return value

    return setting


async def window_update_by_half(self: Any, *, bytes_read: int = 0) -> None:
    """`YamuxStream._auto_tune_and_send_window_update` as go-yamux's
    `sendWindowUpdate`: credit goes back once the window lacks at least half of its
    target (`_grow_threshold`), never for each read. The library's own version also
    credits every read below that mark (its "partial slack" branch, whatever
    `PY_YAMUX_RELEASE_ON_READ` says): a WINDOW_UPDATE frame back per read. The
    growth of the target (auto-tuning) is the library's own code."""
    total_delta = 0
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta > 0 and delta >= self._grow_threshold():
            total_delta = self._grow_to_delta(buffered)
            total_delta += self._apply_autotune_epoch(buffered)
            self._pending_recv_release = 0
    if total_delta > 0:
        await self.send_window_update(total_delta, skip_lock=True)


def _install_yamux_window() -> None:
    for name in _YAMUX_SETTINGS:
        setattr(yamux_module, name, _constant(_yamux_originals[name]()))
    setattr(yamux_module.YamuxStream, _WINDOW_UPDATE, window_update_by_half)


def _remove_yamux_window() -> None:
    for name, original in _yamux_originals.items():
        setattr(yamux_module, name, original)
    setattr(yamux_module.YamuxStream, _WINDOW_UPDATE, _library_window_update)


# -- sender-record -------------------------------------------------------------------

_accepted: OrderedDict[Any, tuple[bytes, float]] = OrderedDict()
"""Peer id -> (the last signed peer record of it accepted, when it was checked)."""


def consume_sender_record_once(msg: Any, host: Any, peer_id: Any) -> bool:
    """`maybe_consume_signed_record`, which checks the record's signature and stores
    its addresses, skipped for the same bytes from the same peer within
    `SENDER_RECORD_RECHECK_S` of their last check (the result cannot differ)."""
    if not msg.HasField("senderRecord"):
        return True
    record = bytes(msg.senderRecord)
    now = time.monotonic()
    seen = _accepted.get(peer_id)
    if seen is not None and seen[0] == record and now - seen[1] < SENDER_RECORD_RECHECK_S:
        return True
    ok = _library_consume(msg, host, peer_id)
    if ok:
        _accepted[peer_id] = (record, now)
        _accepted.move_to_end(peer_id)
        while len(_accepted) > SENDER_RECORDS:
            _accepted.popitem(last=False)
    else:
        _accepted.pop(peer_id, None)
    return ok


_CONSUME: Final = "maybe_consume_signed_record"
_READ: Final = "read_varint_prefixed_bytes_limited"
"""Names `Pubsub.continuously_read_stream` looks up in its module at each RPC."""


def _install_sender_record() -> None:
    setattr(pubsub_module, _CONSUME, consume_sender_record_once)


def _remove_sender_record() -> None:
    setattr(pubsub_module, _CONSUME, _library_consume)
    _accepted.clear()


# -- seen-first ----------------------------------------------------------------------

Pubsub = pubsub_module.Pubsub
_library_is_subscribed = Pubsub._is_subscribed_to_msg


def subscribed_and_unseen(self: Any, msg: Any) -> bool:
    """The read loop's test before it starts `push_msg` for a message: subscribed
    to one of its topics, and not a message already seen (which `push_msg` drops)."""
    return bool(_library_is_subscribed(self, msg)) and not self._is_msg_seen(msg)


_SUBSCRIBED: Final = "_is_subscribed_to_msg"


def _install_seen_first() -> None:
    setattr(Pubsub, _SUBSCRIBED, subscribed_and_unseen)


def _remove_seen_first() -> None:
    setattr(Pubsub, _SUBSCRIBED, _library_is_subscribed)


# -- the registry --------------------------------------------------------------------


@dataclass(frozen=True)
class Speedup:
    name: str
    pins: dict[str, tuple[Any, str]]
    """What the patch replaces or relies on: label -> (object, SHA-256 of its source)."""
    install: Callable[[], None]
    remove: Callable[[], None]
    is_installed: Callable[[], bool]


def _install_pubsub_read() -> None:
    setattr(pubsub_module, _READ, read_prefixed_buffered)


def _remove_pubsub_read() -> None:
    setattr(pubsub_module, _READ, _library_read)


SPEEDUPS: Final[dict[str, Speedup]] = {
    s.name: s
    for s in (
        Speedup(
            "pubsub-read",
            {
                "read_varint_prefixed_bytes_limited": (
                    _library_read,
                    "75623a1c5c4e2c39cdd128685dd7eb8c510939bf06f957489d4dccc4e7ca47fd",
                ),
                "Pubsub.continuously_read_stream": (
                    pubsub_module.Pubsub.continuously_read_stream,
                    CONTINUOUSLY_READ_STREAM_SHA256,
                ),
            },
            _install_pubsub_read,
            _remove_pubsub_read,
            lambda: getattr(pubsub_module, _READ) is read_prefixed_buffered,
        ),
        Speedup(
            "yamux-window",
            {
                "YamuxStream._grow_threshold": (
                    yamux_module.YamuxStream._grow_threshold,
                    GROW_THRESHOLD_SHA256,
                ),
                "YamuxStream._auto_tune_and_send_window_update": (
                    _library_window_update,
                    "6ebcbd822fe7f996efbc9efd5dceea1e8d0d729380a807eb7e4aa81cf79ca036",
                ),
            },
            _install_yamux_window,
            _remove_yamux_window,
            lambda: (
                yamux_module._yamux_release_on_read
                is not _yamux_originals["_yamux_release_on_read"]
            ),
        ),
        Speedup(
            "sender-record",
            {
                "maybe_consume_signed_record": (
                    _library_consume,
                    "11b2181c27d75df4753635abc3ee3c7e9adaf6a0dd7829d8e6c416f161ef0f8b",
                ),
                "Pubsub.continuously_read_stream": (
                    pubsub_module.Pubsub.continuously_read_stream,
                    CONTINUOUSLY_READ_STREAM_SHA256,
                ),
            },
            _install_sender_record,
            _remove_sender_record,
            lambda: getattr(pubsub_module, _CONSUME) is consume_sender_record_once,
        ),
        Speedup(
            "seen-first",
            {
                "Pubsub._is_subscribed_to_msg": (
                    _library_is_subscribed,
                    "fb0271117bb6936ef877042c0acda338ae28438a0cc9488bbad417012eb02900",
                ),
                "Pubsub.push_msg": (
                    Pubsub.push_msg,
                    "1531483ab4d77674dc71d122a8eab16f7facbd85af3a030a5d1925e52f293717",
                ),
                "Pubsub.continuously_read_stream": (
                    Pubsub.continuously_read_stream,
                    CONTINUOUSLY_READ_STREAM_SHA256,
                ),
            },
            _install_seen_first,
            _remove_seen_first,
            lambda: getattr(Pubsub, _SUBSCRIBED) is subscribed_and_unseen,
        ),
    )
}

_left_out: set[str] = set()


def source_hashes(name: str) -> dict[str, str]:
    """The SHA-256 of the installed library's source of what `name` replaces."""
    return {label: source_sha256(obj) for label, (obj, _) in SPEEDUPS[name].pins.items()}


def applicable(name: str) -> str | None:
    """None if the patch fits the installed library, else why not."""
    pins = [(label, obj, expected) for label, (obj, expected) in SPEEDUPS[name].pins.items()]
    return misfit(PATCHED_VERSION, pins, "patch")


def leave_out(*names: str) -> None:
    """Run this process without these patches (a benchmark's baseline); removes
    them if applied. ValueError for an unknown name."""
    for name in names:
        if name not in SPEEDUPS:
            raise ValueError(f"unknown py-libp2p patch {name!r}; known: {', '.join(SPEEDUPS)}")
    for name in names:
        _left_out.add(name)
        if SPEEDUPS[name].is_installed():
            SPEEDUPS[name].remove()


def apply() -> list[str]:
    """Install every patch that fits and is not left out (once; later calls do
    nothing). Returns the names installed now or before."""
    installed = []
    for name, speedup in SPEEDUPS.items():
        if name in _left_out:
            continue
        if speedup.is_installed():
            installed.append(name)
            continue
        problem = applicable(name)
        if problem is not None:
            log.warning("py-libp2p patch %s not applied: %s", name, problem)
            continue
        speedup.install()
        installed.append(name)
    return installed


def installed() -> list[str]:
    return [name for name, s in SPEEDUPS.items() if s.is_installed()]
