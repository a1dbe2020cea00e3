"""The frame format and the frame rule, without a network."""

from __future__ import annotations

import msgpack
import pytest

from p2p_market.core import codec
from p2p_market.core.envelope import Envelope, market_id, message_id, seal
from p2p_market.core.verdict import ACCEPTED, Reason, Status, Verdict, ignore, reject
from p2p_market.markets.devnet import default_market
from p2p_market.net.frame import (
    MAX_FRAME_BYTES,
    MAX_FRAME_ITEMS,
    FrameError,
    decode_frame,
    encode_frame,
    frame_size,
    judge_frame,
)
from tests.net.cluster import MID, NOW, actor, bid
from tests.newer import later_kind


def bad_signature(raw: bytes) -> bytes:
    """The same envelope with one bit of its signature flipped."""
    kind, body, signer, sig = codec.unpack(raw)
    return codec.pack((kind, body, signer, bytes([sig[0] ^ 1]) + sig[1:]))


def non_canonical(raw: bytes) -> bytes:
    """The same envelope with its kind as a 2-byte integer: decodes to the same
    values, but is not the one encoding."""
    assert raw[0] == 0x94 and raw[1] < 0x80
    return bytes([0x94, 0xCC, raw[1]]) + raw[2:]


def test_round_trip_and_exact_size() -> None:
    items = [bid("a"), bid("b"), b"x" * 35_000]
    data = encode_frame(items)
    assert decode_frame(data) == tuple(items)
    assert len(data) == frame_size([len(i) for i in items])
    many = [bytes([i]) * 3 for i in range(MAX_FRAME_ITEMS)]
    assert decode_frame(encode_frame(many)) == tuple(many)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (msgpack.packb([]), Reason.UNDECODABLE),
        (msgpack.packb([b""]), Reason.UNDECODABLE),
        (msgpack.packb([b"x", b"x"]), Reason.UNDECODABLE),
        (msgpack.packb(["text"]), Reason.UNDECODABLE),
        (msgpack.packb([1]), Reason.UNDECODABLE),
        (msgpack.packb({b"k": b"v"}), Reason.UNDECODABLE),
        (msgpack.packb(b"bare"), Reason.UNDECODABLE),
        (msgpack.packb([b"a"]) + b"\x00", Reason.UNDECODABLE),
        (b"\xc1", Reason.UNDECODABLE),
        (msgpack.packb([bytes([i]) for i in range(MAX_FRAME_ITEMS + 1)]), Reason.UNDECODABLE),
        (b"\xdc\x00\x01\xc4\x01a", Reason.NOT_CANONICAL),  # array16 for one item
        (b"\x91\xc5\x00\x01a", Reason.NOT_CANONICAL),  # bin16 for one byte
        (b"\x91" + b"\xc6" + (MAX_FRAME_BYTES).to_bytes(4, "big"), Reason.OVERSIZED),
    ],
)
def test_decode_refuses_everything_but_the_canonical_frame(data: bytes, reason: Reason) -> None:
    if reason is Reason.OVERSIZED:
        data = data + b"\x00" * MAX_FRAME_BYTES
    with pytest.raises(FrameError) as err:
        decode_frame(data)
    assert err.value.reason is reason


def test_encode_refuses_what_decode_would() -> None:
    with pytest.raises(FrameError):
        encode_frame([])
    with pytest.raises(FrameError):
        encode_frame([b"a", b"a"])
    with pytest.raises(FrameError):
        encode_frame([bytes([i]) * 60_000 for i in range(5)])


def test_a_frame_of_valid_envelopes_delivers_each() -> None:
    items = (bid("a"), bid("b"), bid("c"))
    verdict, envs = judge_frame(encode_frame(items), MID)
    assert verdict == ACCEPTED
    assert tuple(e.raw for e in envs) == items


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [(bad_signature, Reason.BAD_SIGNATURE), (non_canonical, Reason.NOT_CANONICAL)],
)
def test_one_bad_envelope_poisons_the_whole_frame(spoil, reason: Reason) -> None:
    bad = spoil(bid("mallory"))
    verdict, envs = judge_frame(encode_frame([bid("a"), bad, bid("b")]), MID)
    assert verdict.status is Status.REJECT and verdict.reason is reason
    assert "envelope 1" in verdict.detail
    assert envs == ()


def test_envelopes_of_another_market_are_rejected_on_this_topic() -> None:
    other = default_market(name="other")
    assert judge_frame(encode_frame([bid("a")]), market_id(other))[0].reason is (
        Reason.WRONG_MARKET
    )
    # A market's descriptor travels on its own topic.
    raw = seal(other, actor("creator").key)
    assert judge_frame(encode_frame([raw]), market_id(other))[0] == ACCEPTED
    assert judge_frame(encode_frame([raw]), MID)[0].reason is Reason.WRONG_MARKET


def test_the_extra_check_ignores_some_and_rejects_all() -> None:
    seen = {bid("a")}

    def check(env: Envelope) -> Verdict:
        return ignore(Reason.DUPLICATE) if env.raw in seen else ACCEPTED

    verdict, envs = judge_frame(encode_frame([bid("a"), bid("b")]), MID, check)
    assert verdict == ACCEPTED and [e.raw for e in envs] == [bid("b")]
    verdict, envs = judge_frame(encode_frame([bid("a")]), MID, check)
    assert verdict.status is Status.IGNORE and envs == ()
    verdict, envs = judge_frame(
        encode_frame([bid("b"), bid("c")]), MID, lambda env: reject(Reason.EXPIRED)
    )
    assert verdict.status is Status.REJECT and envs == ()


def test_an_unknown_kind_stops_the_frame_not_the_rest_of_it() -> None:
    """A later version's kind is not blamed and not forwarded: the frame is IGNOREd,
    but its other envelopes are judged and delivered as usual."""
    newer = later_kind(actor("newer"), now=NOW)
    items = [bid("a"), newer, bid("b")]
    verdict, envs = judge_frame(encode_frame(items), MID)
    assert (verdict.status, verdict.reason) == (Status.IGNORE, Reason.UNKNOWN_KIND)
    assert "envelope 1" in verdict.detail
    assert [e.raw for e in envs] == [bid("a"), bid("b")]
    verdict, envs = judge_frame(encode_frame([newer]), MID)
    assert verdict.reason is Reason.UNKNOWN_KIND and envs == ()

    def check(env: Envelope) -> Verdict:
        return ignore(Reason.DUPLICATE) if env.raw == bid("a") else ACCEPTED

    verdict, envs = judge_frame(encode_frame(items), MID, check)
    assert verdict.reason is Reason.UNKNOWN_KIND and [e.raw for e in envs] == [bid("b")]


def test_an_unknown_kind_shields_no_bad_envelope() -> None:
    newer = later_kind(actor("newer"), now=NOW)
    verdict, envs = judge_frame(encode_frame([newer, bad_signature(bid("m"))]), MID)
    assert (verdict.status, verdict.reason) == (Status.REJECT, Reason.BAD_SIGNATURE)
    assert "envelope 1" in verdict.detail and envs == ()
    verdict, envs = judge_frame(
        encode_frame([bid("a"), newer]), MID, lambda env: reject(Reason.EXPIRED)
    )
    assert verdict.status is Status.REJECT and "envelope 0" in verdict.detail and envs == ()
    _, body, signer, signature = codec.unpack(newer)
    kind_256 = codec.pack((256, body, signer, signature))
    verdict, envs = judge_frame(encode_frame([bid("a"), kind_256]), MID)
    assert (verdict.status, verdict.reason) == (Status.REJECT, Reason.UNDECODABLE)


def test_held_envelopes_are_duplicates_before_their_signature_is_checked() -> None:
    """The seen cache comes before the signature: an envelope already held costs a
    hash. (Its id is the SHA-256 of its bytes, signature included, so a held id
    means bytes whose signature was verified when they were stored.)"""
    held = {message_id(bid("a")), message_id(bad_signature(bid("b")))}
    checked: list[bytes] = []

    def check(env: Envelope) -> Verdict:
        checked.append(env.raw)
        return ACCEPTED

    def known(mid: bytes) -> bool:
        return mid in held

    # a held id is never verified (here, one whose signature would fail)
    verdict, envs = judge_frame(encode_frame([bad_signature(bid("b"))]), MID, check, known)
    assert verdict.reason is Reason.DUPLICATE and verdict.status is Status.IGNORE
    assert envs == () and checked == []
    # held ones are dropped, new ones judged as ever
    verdict, envs = judge_frame(encode_frame([bid("a"), bid("c")]), MID, check, known)
    assert verdict == ACCEPTED and [e.raw for e in envs] == [bid("c")] and checked == [bid("c")]
    # a new envelope with a bad signature still rejects the frame
    frame = encode_frame([bid("a"), bad_signature(bid("d"))])
    assert judge_frame(frame, MID, check, known)[0].reason is Reason.BAD_SIGNATURE
