"""Gossip frames: the payload of one pubsub message, carrying 1..64 envelopes.

Frames, not envelopes, are the scarce resource of the gossip layer (every pubsub
message costs a libp2p signature, a seen-cache entry and a protobuf round trip on
every hop, whatever it carries), so a busy node packs many envelopes into one frame
(see batcher.py).

Wire format: the canonical msgpack encoding of an array of 1..MAX_FRAME_ITEMS
`bin` items, each one a whole envelope (1..MAX_ENVELOPE_BYTES bytes), no item
repeated, at most MAX_FRAME_BYTES in all. Canonical or rejected, like envelopes:
the frame is re-encoded after decoding and must come out byte for byte equal,
because the gossip message id is the SHA-256 of the frame bytes and one batch
must not travel under many ids.

Validation rule (`judge_frame`, called by the topic validator in gossip.py before
anything is forwarded): a frame is forwarded only if EVERY envelope in it passes
the cheap checks and its signature (and the node's extra check rejects none); each
envelope is then delivered to the node on its own. Why all-or-nothing: gossipsub
forwards a message unchanged (its id is the hash of its bytes), so a node cannot
pass on "the valid part" of a frame without re-framing it as a new message of its
own, with a new id, for envelopes that already travel under another; the only
choices are to relay the bad envelope too, which lets a dishonest peer have honest
nodes spread its garbage, or to drop the frame. And dropping costs honest nodes
nothing: they only batch envelopes they have validated themselves, so a frame with
an invalid envelope was made (or relayed unchecked) by a dishonest peer, and the
bad envelope poisons only the frame it was batched in.
The checks on the frame itself are cheap and made first: size before decoding,
then shape, then canonical form, before any signature is verified. Envelopes the
node's extra check IGNOREs (duplicates, say) are not delivered but do not stop the
frame; a frame with nothing left to deliver is ignored, not forwarded, not blamed.

Envelopes of a kind this version does not know (IGNORE `unknown_kind`, perhaps a
later protocol version's: market-v1.md, Protocol evolution) blame nobody either, but
they make the frame IGNOREd: it is not forwarded, because forwarding it would relay
bytes this node has not checked (their body and signature are never looked at).
The frame's other envelopes are judged as usual, so a REJECT among them still
rejects the frame, and those accepted are still delivered: the gossip service
relays them in frames of its own (gossip.py), so a newer node that batched new
kinds with old ones loses nothing on the old nodes' side of the network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Final

import msgpack

from p2p_market.core import limits as L
from p2p_market.core.envelope import Envelope, market_id
from p2p_market.core.messages import Market, MarketScoped
from p2p_market.core.validation import check_form, check_signature
from p2p_market.core.verdict import ACCEPTED, Reason, Status, Verdict, ignore, reject

MAX_FRAME_ITEMS: Final = 64
"""Envelopes per frame: bounds the work one pubsub message can ask of a node."""

MAX_FRAME_BYTES: Final = 256 * 1024
"""Whole frame: four maximal envelopes, and well under libp2p's 1 MiB RPC limit."""


class FrameError(ValueError):
    """Bytes that are not a canonical frame, with the verdict reason it earns:
    OVERSIZED, NOT_CANONICAL, or UNDECODABLE for bytes that are not a frame at all
    (core has no reason of its own for a frame; UNDECODABLE is the nearest)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _bin_header(size: int) -> int:
    """Bytes of msgpack's header in front of a `bin` item of `size` bytes."""
    if size < 2**8:
        return 2
    if size < 2**16:
        return 3
    return 5


def _array_header(count: int) -> int:
    return 1 if count < 16 else 3


def frame_size(sizes: Sequence[int]) -> int:
    """The exact encoded size of a frame whose items have these sizes: lets the
    batcher fill a frame up to the cap without encoding it."""
    return _array_header(len(sizes)) + sum(_bin_header(n) + n for n in sizes)


def item_fits(item_size: int) -> bool:
    """Whether an envelope of this size can travel in a frame at all."""
    return 0 < item_size <= L.MAX_ENVELOPE_BYTES and frame_size([item_size]) <= MAX_FRAME_BYTES


def encode_frame(items: Sequence[bytes]) -> bytes:
    """The canonical frame for these envelopes. Raises FrameError for a batch the
    decoder would refuse, so a node never publishes a frame its peers reject."""
    _check_items(items)
    data: bytes = msgpack.packb(list(items), use_bin_type=True)
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(Reason.OVERSIZED, f"frame of {len(data)} bytes > {MAX_FRAME_BYTES}")
    return data


def decode_frame(data: bytes) -> tuple[bytes, ...]:
    """The envelopes of a frame, in order. Raises FrameError unless `data` is a
    canonical frame; the envelopes themselves are not looked into here."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(Reason.OVERSIZED, f"frame of {len(data)} bytes > {MAX_FRAME_BYTES}")
    try:
        outer = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_array_len=MAX_FRAME_ITEMS,
            max_bin_len=L.MAX_ENVELOPE_BYTES,
            max_str_len=0,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        detail = f"undecodable frame: {type(exc).__name__}: {exc}"
        raise FrameError(Reason.UNDECODABLE, detail) from None
    if type(outer) is not tuple or any(type(item) is not bytes for item in outer):
        raise FrameError(Reason.UNDECODABLE, "a frame is an array of bin items")
    _check_items(outer)
    if msgpack.packb(list(outer), use_bin_type=True) != data:
        raise FrameError(Reason.NOT_CANONICAL, "frame is not canonically encoded")
    return outer


def _check_items(items: Sequence[bytes]) -> None:
    if not 1 <= len(items) <= MAX_FRAME_ITEMS:
        raise FrameError(
            Reason.UNDECODABLE, f"a frame carries 1..{MAX_FRAME_ITEMS} envelopes, not {len(items)}"
        )
    for item in items:
        if not 0 < len(item) <= L.MAX_ENVELOPE_BYTES:
            raise FrameError(
                Reason.UNDECODABLE, f"an envelope of {len(item)} bytes cannot be framed"
            )
    if len(set(items)) != len(items):
        raise FrameError(Reason.UNDECODABLE, "a frame repeats an envelope")


ExtraCheck = Callable[[Envelope], Verdict]
"""The node's own, stateful check of an envelope that passed the stateless ones
(seen cache, market state): ACCEPT delivers it, IGNORE drops it without blame,
REJECT rejects the whole frame and blames the peer that forwarded it."""


def belongs_to(env: Envelope, market: bytes) -> bool:
    """Whether an envelope may travel on `market`'s topic: a market-scoped message
    names the market, and a market descriptor is the market (its id is its hash)."""
    message = env.message
    if isinstance(message, Market):
        return market_id(message) == market
    return isinstance(message, MarketScoped) and message.market == market


FrameScope = Callable[[Sequence[Envelope]], AbstractContextManager[object]]
"""Entered with a frame's envelopes that passed the stateless checks, around the
extra checks of them, and left when those are done (or the frame is rejected):
the node writes to its log in one transaction what its core will keep of the
frame (node/runtime.py, `Node.logged_ahead`)."""

Known = Callable[[bytes], bool]
"""Whether the node already holds an envelope with this id (its SHA-256): the bytes
were checked when it was stored, so the signature need not be verified again."""


def judge_frame(
    data: bytes,
    market: bytes,
    extra_check: ExtraCheck | None = None,
    known: Known | None = None,
    scope: FrameScope | None = None,
) -> tuple[Verdict, tuple[Envelope, ...]]:
    """The rule of this module's docstring: the frame's verdict, and the envelopes
    to deliver (those the extra check accepts). The verdict says what becomes of the
    frame itself: ACCEPT forwards it, IGNORE drops it without blame, REJECT blames
    the peer that sent it (and then nothing is delivered). IGNORE comes with
    envelopes to deliver only when the frame held envelopes of unknown kinds.

    Cheapest first across the whole frame: the frame's own form, then every
    envelope's form and market, and only then any signature, so a malformed frame
    costs no signature verification at all. An envelope the node already holds (the
    seen cache, `known`) is a duplicate before its signature is checked: replayed
    envelopes cost a hash, not a verification, and never reach the extra check (nor
    spend their signer's budget there). The extra checks run inside `scope`, if
    given, entered with the envelopes they are about to judge."""
    try:
        items = decode_frame(data)
    except FrameError as exc:
        return reject(exc.reason, str(exc)), ()
    envelopes: list[tuple[int, Envelope]] = []
    unknown: Verdict | None = None
    for index, item in enumerate(items):
        verdict, env = check_form(item)
        if env is None:
            if verdict.status is not Status.IGNORE:
                return _about(index, verdict), ()
            if unknown is None:  # an unknown kind: not delivered, the frame not forwarded
                unknown = _about(index, verdict)
            continue
        if not belongs_to(env, market):
            return reject(Reason.WRONG_MARKET, f"envelope {index} is not for this topic"), ()
        envelopes.append((index, env))
    duplicate: Verdict | None = None
    if known is not None:
        fresh = [(index, env) for index, env in envelopes if not known(env.id)]
        if len(fresh) < len(envelopes):
            duplicate = ignore(Reason.DUPLICATE, f"{len(envelopes) - len(fresh)} already held")
            envelopes = fresh
    for index, env in envelopes:
        verdict = check_signature(env)
        if not verdict.accepted:
            return _about(index, verdict), ()
    if not envelopes and unknown is None and duplicate is not None:
        return duplicate, ()
    if extra_check is None:
        return unknown or ACCEPTED, tuple(env for _, env in envelopes)
    accepted: list[Envelope] = []
    first_ignored: Verdict | None = None
    with nullcontext() if scope is None else scope([env for _, env in envelopes]):
        for index, env in envelopes:
            verdict = extra_check(env)
            if verdict.status is Status.REJECT:
                return _about(index, verdict), ()
            if verdict.accepted:
                accepted.append(env)
            elif first_ignored is None:
                first_ignored = _about(index, verdict)
    if unknown is not None:
        return unknown, tuple(accepted)
    if not accepted:
        assert first_ignored is not None or duplicate is not None
        return first_ignored or duplicate, ()  # type: ignore[return-value]
    return ACCEPTED, tuple(accepted)


def _about(index: int, verdict: Verdict) -> Verdict:
    detail = f"envelope {index}" + (f": {verdict.detail}" if verdict.detail else "")
    return Verdict(verdict.status, verdict.reason, detail)
