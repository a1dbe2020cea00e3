"""`/p2p-market/artifact/1`: a market's descriptor and its circuit's artifacts, fetched
from peers by hash, so that a prover joining a groth16 / plonk market needs nothing
but the market's id (protocols/market-v1.md §25).

What is served is content-addressed and checked against what the fetcher already
trusts: the descriptor body is the content whose SHA-256 is the market id (§4), and
an artifact is a file whose SHA-256 the market's `verifier` field pins (§23). So a
fetcher believes nothing a peer says about the content: it hashes what arrives.

One request per stream (frames of wire.py):

    fetcher -> {"market": <32>, "sha256": <32>, "offset": <uint>}
    server  -> {"ok": true, "size": <uint>} | {"ok": false, "error": <reason>}
    server  -> {"data": <bin, 1..CHUNK_BYTES>} ...   from `offset` up to `size`

`sha256` is the market id for the descriptor, else one of the hashes its verifier
field pins. `offset` resumes a transfer cut short (the fetcher keeps a partial
file and hashes it again before asking for the rest).

A single SHA-256 over the whole artifact cannot authenticate a chunk before the last
one has come, so each chunk is checked for what can be checked as it arrives (its
frame, its size, that it does not run past the announced size, which is itself
capped) and the whole against the pinned hash at the end. What a lying peer can
waste is therefore bounded by the cap (`MAX_ARTIFACT_BYTES`) and by the minimum
rate: never the fetcher's disk beyond one partial file per hash. A peer that sent
a bad or oversized artifact is not asked for that hash again (`ArtifactFetcher`
remembers (peer, hash)); a partial file that does not hash right at the end is
deleted, never resumed.

The server serves only markets its node follows, only hashes those markets pin,
only files whose content it has checked against their name, and bounds what one
peer can take like the other stream protocols: `PeerSlots` of sessions in total and
per peer, a time limit for the request, and a minimum rate and total time for the
answer (a fetcher that reads too slowly is cut off, its slot freed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p_market.core import codec
from p2p_market.core.envelope import market_id
from p2p_market.core.limits import MAX_ENVELOPE_BYTES
from p2p_market.core.messages import Market, MessageError
from p2p_market.net.host import PeerSlots, guarded
from p2p_market.node.direct import Pace
from p2p_market.node.wire import WireError, close_quietly, read_msg, write_msg
from p2p_market.proving import snark

log = logging.getLogger(__name__)

PROTOCOL: Final = TProtocol("/p2p-market/artifact/1")
HASH_BYTES: Final = 32
CHUNK_BYTES: Final = 256 * 1024
"""Bytes of content per chunk frame (the last one may be shorter)."""
MAX_ARTIFACT_BYTES: Final = 64 * 1024 * 1024
"""The largest artifact served or fetched: a zkey of some million constraints."""
MAX_REQUEST_BYTES: Final = 256
MAX_REPLY_BYTES: Final = 256
MAX_CHUNK_FRAME: Final = CHUNK_BYTES + 64
DEFAULT_MAX_SESSIONS: Final = 8
DEFAULT_MAX_SESSIONS_PER_PEER: Final = 2
"""One peer may fetch two artifacts at once, never every slot."""
DEFAULT_TIMEOUT_S: Final = 10.0
"""The request, the first reply, and each step of a fetch that is not the body."""
DEFAULT_MIN_RATE: Final = 256 * 1024
"""Bytes per second the content must average after `DEFAULT_GRACE_S`, on both sides:
a server cuts a fetcher that reads slower (it holds a slot), a fetcher gives up on a
server that sends slower and resumes from another peer."""
DEFAULT_GRACE_S: Final = 2.0
DEFAULT_TRANSFER_TIMEOUT_S: Final = 300.0
"""The whole answer, whatever its rate (64 MiB at the minimum rate takes 256 s)."""

# Refusals and failures, by name (the server's error replies; FetchError.reason).
UNKNOWN_MARKET: Final = "unknown market"
NOT_PINNED: Final = "not pinned"
"""The hash is not the market id nor one its verifier field pins."""
NOT_HELD: Final = "not held"
BAD_REQUEST: Final = "bad request"
BAD_OFFSET: Final = "bad offset"
OVERSIZED: Final = "oversized"
HASH_MISMATCH: Final = "hash mismatch"
BAD_CHUNK: Final = "bad chunk"
BAD_REPLY: Final = "bad reply"
TOO_SLOW: Final = "too slow"
UNREACHABLE: Final = "unreachable"
REFUSED: Final = "refused"
BAD_DESCRIPTOR: Final = "bad descriptor"
BAD_PEER_REASONS: Final = frozenset(
    {OVERSIZED, HASH_MISMATCH, BAD_CHUNK, BAD_REPLY, BAD_DESCRIPTOR}
)
"""Failures that prove the peer served something wrong: it is not asked again for
that hash. Every other failure (busy, slow, gone) may be tried again later."""


class FetchError(Exception):
    """A fetch failed; `reason` is one of the names above (or the server's refusal)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason

    @property
    def bad_peer(self) -> bool:
        return self.reason in BAD_PEER_REASONS


# -- what a node serves --------------------------------------------------------------


def descriptor_body(market: Market) -> bytes:
    """The canonical body of a market descriptor: its SHA-256 is the market id."""
    return codec.pack(market.to_map())


def parse_descriptor_body(body: bytes, wanted: bytes) -> Market:
    """The Market whose canonical body is `body`; FetchError(BAD_DESCRIPTOR) unless
    its hash is `wanted` (the id asked for) and it is a valid descriptor."""
    if hashlib.sha256(body).digest() != wanted:
        raise FetchError(HASH_MISMATCH, "the descriptor does not hash to the market id")
    try:
        fields = codec.unpack(body)
        market = Market.from_map(fields)
    except (codec.CodecError, MessageError, ValueError, TypeError) as exc:
        raise FetchError(BAD_DESCRIPTOR, str(exc)[:200]) from None
    if market_id(market) != wanted:  # not canonical: another encoding of a market
        raise FetchError(BAD_DESCRIPTOR, "not the canonical body of a market")
    return market


def pinned(market: Market) -> dict[bytes, str]:
    """The artifact hashes `market` pins, with their kind (wasm, zkey, vkey); empty
    for a market whose proof system has no artifacts."""
    if market.proof_system not in snark.SYSTEMS:
        return {}
    try:
        ref = snark.parse_verifier(market.verifier)
    except ValueError:
        return {}
    return {bytes.fromhex(ref.digest(kind)): kind for kind in snark.ARTIFACT_SUFFIXES}


def artifact_name(sha: bytes, kind: str) -> str:
    """The file name snark.py looks an artifact up by."""
    return sha.hex() + snark.ARTIFACT_SUFFIXES[kind]


@dataclass(frozen=True, slots=True)
class Served:
    """What a server holds for a request: bytes in memory (a descriptor) or a file."""

    data: bytes | None = None
    path: Path | None = None

    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        return self.path.stat().st_size

    def read(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + n]
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(n)


class MarketArtifacts:
    """What a node serves: the descriptors of the markets it follows (by market id)
    and their pinned artifacts, found in `dirs` (snark.artifact_dirs) and checked
    against their hash once (again if the file changes)."""

    def __init__(self, markets: Callable[[], Iterable[Market]], dirs: Sequence[Path]) -> None:
        self.markets = markets
        self.dirs = list(dirs)
        self._checked: dict[Path, tuple[int, int]] = {}
        """Files whose content matched their name, with (size, mtime_ns) when checked."""

    def _market(self, mid: bytes) -> Market | None:
        for market in self.markets():
            if market_id(market) == mid:
                return market
        return None

    async def lookup(self, mid: bytes, sha: bytes) -> Served | str:
        """What to serve for (market, sha256), or the refusal's name."""
        market = self._market(mid)
        if market is None:
            return UNKNOWN_MARKET
        if sha == mid:
            return Served(data=descriptor_body(market))
        kind = pinned(market).get(sha)
        if kind is None:
            return NOT_PINNED
        ref = snark.parse_verifier(market.verifier)
        try:
            path = snark.find_artifact(ref, kind, self.dirs)
        except snark.ArtifactError:
            return NOT_HELD
        if not await self._verified(path, sha):
            log.warning("not serving %s: its content does not match its name", path)
            return NOT_HELD
        return Served(path=path)

    async def _verified(self, path: Path, sha: bytes) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size > MAX_ARTIFACT_BYTES:
            return False
        stamp = (st.st_size, st.st_mtime_ns)
        if self._checked.get(path) == stamp:
            return True
        digest = await trio.to_thread.run_sync(snark.sha256_file, path)
        if digest != sha.hex():
            return False
        self._checked[path] = stamp
        return True


# -- server --------------------------------------------------------------------------


Lookup = Callable[[bytes, bytes], Any]
"""(market id, sha256) -> awaitable of Served or a refusal's name."""


@dataclass
class ArtifactServerStats:
    served: int = 0
    bytes_sent: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    cut: Counter[str] = field(default_factory=Counter)
    """Answers cut short: the fetcher read too slowly (TOO_SLOW) or went away."""


class ArtifactServer:
    """Serves `PROTOCOL` from `lookup`. Limits: `max_sessions` answers at once, at
    most `max_sessions_per_peer` from one peer; the request within `timeout_s`; the
    answer read by the fetcher at `min_rate` bytes/s after `grace_s` and in all
    within `transfer_timeout_s`, else the stream is reset and the slot freed."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_sessions_per_peer: int = DEFAULT_MAX_SESSIONS_PER_PEER,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        min_rate: int = DEFAULT_MIN_RATE,
        grace_s: float = DEFAULT_GRACE_S,
        transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S,
    ) -> None:
        self.lookup = lookup
        self.slots = PeerSlots(total=max_sessions, per_peer=max_sessions_per_peer)
        self.timeout_s = timeout_s
        self.min_rate = min_rate
        self.grace_s = grace_s
        self.transfer_timeout_s = transfer_timeout_s
        self.stats = ArtifactServerStats()

    def attach(self, host: IHost) -> None:
        host.set_stream_handler(PROTOCOL, guarded(self.handle, PROTOCOL))

    async def handle(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        refused = self.slots.take(peer)
        if refused is not None:
            await self._refuse(stream, refused)
            return
        try:
            await self._serve(stream)
        except WireError as exc:
            self.stats.cut["gone"] += 1
            log.debug("artifact answer to %s ended: %s", peer, exc)
        finally:
            self.slots.give_back(peer)
            await close_quietly(stream)

    async def _refuse(self, stream: INetStream, reason: str) -> None:
        self.stats.refused[reason] += 1
        with contextlib.suppress(WireError):
            await write_msg(stream, {"ok": False, "error": reason}, timeout_s=2.0)
        await close_quietly(stream)

    async def _serve(self, stream: INetStream) -> None:
        try:
            request = await read_msg(stream, max_bytes=MAX_REQUEST_BYTES, timeout_s=self.timeout_s)
            mid, sha, offset = parse_request(request)
        except (WireError, FetchError):
            await self._refuse(stream, BAD_REQUEST)
            return
        found = await self.lookup(mid, sha)
        if isinstance(found, str):
            await self._refuse(stream, found)
            return
        size = found.size()
        if size > MAX_ARTIFACT_BYTES:
            await self._refuse(stream, NOT_HELD)
            return
        if offset > size:
            await self._refuse(stream, BAD_OFFSET)
            return
        await write_msg(stream, {"ok": True, "size": size}, timeout_s=self.timeout_s)
        pace = Pace(trio.current_time(), self.min_rate, self.grace_s, self.transfer_timeout_s)
        sent = 0
        position = offset
        while position < size:
            data = found.read(position, min(CHUNK_BYTES, size - position))
            if not data:  # the file shrank under us
                raise WireError("the artifact shrank while being served")
            with trio.move_on_at(pace.deadline(sent)) as scope:
                await write_msg(stream, {"data": data}, max_bytes=MAX_CHUNK_FRAME, timeout_s=3600)
            if scope.cancelled_caught:
                self.stats.cut[TOO_SLOW] += 1
                log.info("artifact fetcher cut off: %s", pace.why(sent))
                with contextlib.suppress(Exception):
                    await stream.reset()
                return
            sent += len(data)
            position += len(data)
            self.stats.bytes_sent += len(data)
        self.stats.served += 1


def parse_request(request: Any) -> tuple[bytes, bytes, int]:
    if type(request) is not dict or set(request) != {"market", "sha256", "offset"}:
        raise FetchError(BAD_REQUEST)
    mid, sha, offset = request["market"], request["sha256"], request["offset"]
    if type(mid) is not bytes or len(mid) != HASH_BYTES:
        raise FetchError(BAD_REQUEST)
    if type(sha) is not bytes or len(sha) != HASH_BYTES:
        raise FetchError(BAD_REQUEST)
    if type(offset) is not int or not 0 <= offset <= MAX_ARTIFACT_BYTES:
        raise FetchError(BAD_REQUEST)
    return mid, sha, offset


# -- fetcher -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_bytes: int = MAX_ARTIFACT_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S
    min_rate: int = DEFAULT_MIN_RATE
    grace_s: float = DEFAULT_GRACE_S
    transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _hash_prefix(path: Path) -> tuple[Any, int]:
    """SHA-256 state over a partial file, and its length (0 and a fresh state if
    there is none)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return h, f.tell()
    except FileNotFoundError:
        return h, 0


async def fetch_to_file(
    host: IHost,
    peer: ID,
    mid: bytes,
    sha: bytes,
    dest: Path,
    limits: FetchLimits = FetchLimits(),
) -> int:
    """Fetch (market, sha) from `peer` into `dest`, resuming `dest`.part if there is
    one; returns the bytes received in this call. `dest` appears (atomically, by
    rename) only once the whole hashes to `sha`. FetchError otherwise; on a hash
    mismatch or an overlong answer the partial file is deleted."""
    part = partial_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    hasher, offset = await trio.to_thread.run_sync(_hash_prefix, part)
    if offset > limits.max_bytes:
        part.unlink(missing_ok=True)
        hasher, offset = hashlib.sha256(), 0
    stream: INetStream | None = None
    received = 0
    try:
        try:
            with trio.fail_after(limits.timeout_s):
                stream = await host.new_stream(peer, [PROTOCOL])
        except Exception as exc:  # dial, negotiation, timeout: libp2p raises many types
            raise FetchError(UNREACHABLE, f"{type(exc).__name__}: {exc}"[:200]) from None
        request = {"market": mid, "sha256": sha, "offset": offset}
        await write_msg(stream, request, max_bytes=MAX_REQUEST_BYTES, timeout_s=limits.timeout_s)
        reply = await read_msg(stream, max_bytes=MAX_REPLY_BYTES, timeout_s=limits.timeout_s)
        size = _size_of(reply)
        if size > limits.max_bytes:
            raise FetchError(OVERSIZED, f"{size} bytes, the cap is {limits.max_bytes}")
        if offset > size:  # what we hold is longer than the whole: it cannot be right
            part.unlink(missing_ok=True)
            raise FetchError(BAD_OFFSET, f"we hold {offset} bytes of a {size}-byte artifact")
        pace = Pace(trio.current_time(), limits.min_rate, limits.grace_s, limits.transfer_timeout_s)
        with open(part, "ab") as out:
            position = offset
            while position < size:
                frame: Any = None
                with trio.move_on_at(pace.deadline(received)):
                    frame = await read_msg(
                        stream, max_bytes=MAX_CHUNK_FRAME, timeout_s=limits.transfer_timeout_s
                    )
                if frame is None:
                    raise FetchError(TOO_SLOW, pace.why(received))
                data = _chunk_of(frame, size - position)
                hasher.update(data)
                out.write(data)
                position += len(data)
                received += len(data)
        if hasher.digest() != sha:
            part.unlink(missing_ok=True)
            raise FetchError(HASH_MISMATCH, f"the {size} bytes do not hash to {sha.hex()[:16]}…")
        os.replace(part, dest)
        return received
    except WireError as exc:
        raise FetchError(UNREACHABLE if received == 0 else TOO_SLOW, str(exc)[:200]) from None
    except FetchError as exc:
        if exc.reason in (OVERSIZED, BAD_CHUNK):
            part.unlink(missing_ok=True)
        raise
    finally:
        if stream is not None:
            await close_quietly(stream)


def _size_of(reply: Any) -> int:
    if type(reply) is not dict or type(reply.get("ok")) is not bool:
        raise FetchError(BAD_REPLY, "malformed reply")
    if not reply["ok"]:
        error = reply.get("error")
        raise FetchError(str(error)[:80] if type(error) is str else REFUSED)
    size = reply.get("size")
    if set(reply) != {"ok", "size"} or type(size) is not int or size < 0:
        raise FetchError(BAD_REPLY, "malformed reply")
    return size


def _chunk_of(frame: Any, left: int) -> bytes:
    if type(frame) is not dict or set(frame) != {"data"} or type(frame["data"]) is not bytes:
        raise FetchError(BAD_CHUNK, "not a chunk frame")
    data: bytes = frame["data"]
    if not 0 < len(data) <= CHUNK_BYTES:
        raise FetchError(BAD_CHUNK, f"a chunk of {len(data)} bytes")
    if len(data) > left:
        raise FetchError(BAD_CHUNK, "a chunk past the announced size")
    return data


@dataclass
class FetchReport:
    """What one `ArtifactFetcher.fetch` did: bytes received, by peer, and each
    failed attempt's reason."""

    received: Counter[ID] = field(default_factory=Counter)
    failures: list[tuple[ID, str]] = field(default_factory=list)
    elapsed_s: float = 0.0


class ArtifactFetcher:
    """Fetches descriptors and artifacts by hash from peers, into `store` (files
    named as snark.py looks them up), remembering which peer served which hash
    wrong so that it is not asked for it again."""

    def __init__(self, host: IHost, store: Path, limits: FetchLimits = FetchLimits()) -> None:
        self.host = host
        self.store = store
        self.limits = limits
        self.bad: set[tuple[ID, bytes]] = set()
        """(peer, sha256) pairs that served something wrong."""

    async def fetch(
        self,
        mid: bytes,
        sha: bytes,
        dest: Path,
        peers: Sequence[ID],
        report: FetchReport,
        *,
        max_bytes: int | None = None,
    ) -> Path:
        """`dest`, fetched from the first of `peers` that serves it right (a partial
        file left by one is resumed from the next); FetchError naming the last
        failure if none does. `max_bytes` lowers the cap (descriptors)."""
        limits = self.limits
        if max_bytes is not None:
            limits = dataclasses.replace(limits, max_bytes=min(max_bytes, limits.max_bytes))
        last = FetchError(UNREACHABLE, "no peer to ask")
        for peer in peers:
            if peer == self.host.get_id() or (peer, sha) in self.bad:
                continue
            try:
                report.received[peer] += await fetch_to_file(
                    self.host, peer, mid, sha, dest, limits
                )
                return dest
            except FetchError as exc:
                report.failures.append((peer, str(exc)))
                if exc.bad_peer:
                    self.bad.add((peer, sha))
                last = exc
        raise last

    async def descriptor(self, mid: bytes, peers: Sequence[ID], report: FetchReport) -> Market:
        """The market whose id is `mid`, from peers (its body hashes to the id)."""
        dest = self.store / f"{mid.hex()}.market"
        if not dest.is_file():
            await self.fetch(mid, mid, dest, peers, report, max_bytes=MAX_ENVELOPE_BYTES)
        try:
            return parse_descriptor_body(dest.read_bytes(), mid)
        except FetchError:  # a file that hashed right is a market; another is dropped
            dest.unlink(missing_ok=True)
            raise

    async def artifacts(
        self,
        market: Market,
        peers: Sequence[ID],
        dirs: Sequence[Path],
        report: FetchReport,
        kinds: Collection[str] | None = None,
    ) -> dict[str, Path]:
        """Every artifact `market` pins (of `kinds`, default all), by kind: found
        (and checked) in `dirs` or `store`, else fetched from `peers` into `store`."""
        started = trio.current_time()
        mid = market_id(market)
        out: dict[str, Path] = {}
        for sha, kind in pinned(market).items():
            if kinds is not None and kind not in kinds:
                continue
            name = artifact_name(sha, kind)
            found = await trio.to_thread.run_sync(_present, name, sha, [self.store, *dirs])
            if found is None:
                found = await self.fetch(mid, sha, self.store / name, peers, report)
            out[kind] = found
        report.elapsed_s += trio.current_time() - started
        return out


def _present(name: str, sha: bytes, dirs: Sequence[Path]) -> Path | None:
    """The first file `name` in `dirs` whose content hashes to `sha`."""
    for d in dirs:
        path = d / name
        if path.is_file() and snark.sha256_file(path) == sha.hex():
            return path
    return None
