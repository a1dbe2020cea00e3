"""Envelopes of kinds v1 does not define (market-v1.md, Protocol evolution): IGNOREd
as `unknown_kind`, never REJECTed, never stored, never verified beyond the envelope
form; kind codes outside 0..255 are malformed."""

from __future__ import annotations

import pytest

from p2p_market.core import codec
from p2p_market.core.envelope import message_id, signing_payload
from p2p_market.core.messages import MESSAGE_TYPES
from p2p_market.core.validation import check_envelope, check_form
from p2p_market.core.verdict import Reason, Status
from tests.newer import later_kind

from .world import T0, World


def test_every_kind_code_v1_does_not_define_is_ignored_not_rejected() -> None:
    w = World()
    newer = w.actor("newer")
    for kind in range(256):
        if kind in MESSAGE_TYPES:
            continue
        raw = later_kind(newer, now=T0, kind=kind)
        verdict, env = check_form(raw)
        assert (verdict.status, verdict.reason, env) == (Status.IGNORE, Reason.UNKNOWN_KIND, None)
        assert check_envelope(raw)[0] == verdict
        assert w.send(raw, T0) == verdict


def test_an_unknown_kind_is_never_stored_nor_remembered() -> None:
    w = World()
    w.bid("p", price=5, proof_time=1_000)
    before = (w.state.state_hash(), sorted(e.id for e in w.state.stored_envelopes()))
    raw = later_kind(w.actor("newer"), now=T0)
    for _ in range(3):  # not in the seen cache: each copy is judged again, never `duplicate`
        assert w.send(raw, T0).reason is Reason.UNKNOWN_KIND
    verdicts, effects = w.state.apply_many([raw, raw], T0)
    assert [v.reason for v in verdicts] == [Reason.UNKNOWN_KIND] * 2 and effects == []
    assert not w.state.holds(message_id(raw))
    assert (w.state.state_hash(), sorted(e.id for e in w.state.stored_envelopes())) == before


def test_neither_the_body_nor_the_signature_of_an_unknown_kind_is_looked_at() -> None:
    w = World()
    signer = w.actor("newer").public_key
    for body in (b"\xc1", b"", codec.pack_map({"anything": [1, 2, 3]})):
        raw = codec.pack((10, body, signer, bytes(64)))  # a signature that verifies nothing
        assert w.send(raw, T0).reason is Reason.UNKNOWN_KIND
    # ...whereas the same bytes under a v1 kind are checked in full.
    good = w.actor("p").bid(now=T0, price=5, proof_time=1_000)
    kind, body, signer, _ = codec.unpack(good)
    assert w.send(codec.pack((kind, body, signer, bytes(64))), T0).reason is Reason.BAD_SIGNATURE


def test_the_envelope_form_is_still_checked_and_blamed_for_unknown_kinds() -> None:
    w = World()
    raw = later_kind(w.actor("newer"), now=T0)
    assert raw[1] == 10
    not_canonical = bytes([0x94, 0xCC, 10]) + raw[2:]  # the kind as a uint8: two encodings
    assert w.send(not_canonical, T0).status is Status.REJECT
    _, body, signer, signature = codec.unpack(raw)
    short_signature = codec.pack((10, body, signer, signature[:63]))
    assert w.send(short_signature, T0).reason is Reason.UNDECODABLE
    oversized = codec.pack((10, b"\x00" * 65_536, signer, signature))
    assert w.send(oversized, T0).reason is Reason.OVERSIZED


@pytest.mark.parametrize("kind", [-1, 256, 2**16, 2**63 - 1])
def test_a_kind_that_no_version_can_sign_is_malformed(kind: int) -> None:
    """Kinds are signed as one byte (§4): outside 0..255 no signature can exist."""
    with pytest.raises(ValueError):
        signing_payload(kind, b"")
    w = World()
    raw = codec.pack((kind, b"\x80", w.actor("p").public_key, bytes(64)))
    verdict = w.send(raw, T0)
    assert (verdict.status, verdict.reason) == (Status.REJECT, Reason.UNDECODABLE)


def test_a_v1_message_is_judged_alike_with_or_without_unknown_kinds_around() -> None:
    """Unknown kinds change nothing a v1 node derives: interleaving them with a
    history gives the same state, message for message."""
    plain, mixed = World(), World()
    newer = mixed.actor("newer")
    history = [
        plain.actor("p").bid(now=T0, price=5, proof_time=1_000),
        plain.actor("r").ask(now=T0 + 1, max_price=10, max_proof_time=5_000),
    ]
    for i, raw in enumerate(history):
        assert plain.send(raw, T0 + 1).accepted
        assert mixed.send(later_kind(newer, now=T0, n=i), T0 + 1).reason is Reason.UNKNOWN_KIND
        assert mixed.send(raw, T0 + 1).accepted
    assert plain.state.state_hash() == mixed.state.state_hash()
