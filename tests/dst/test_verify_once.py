"""Signatures are verified once per simulation, not once per node (node.py,
Validator): the cache is keyed by the exact signed bytes, so a tampered copy of an
envelope the cache holds as valid is checked on its own and refused at every node,
and the checks the nodes would have made are still counted."""

from __future__ import annotations

from dataclasses import replace

from p2p_market.core import codec
from p2p_market.core.envelope import message_id
from p2p_market.core.verdict import Reason, Status
from p2p_market.dst import SCENARIOS, simulate
from p2p_market.dst.node import Validator
from p2p_market.dst.run import build

BAD = (Status.REJECT, Reason.BAD_SIGNATURE)


def _tampered(raw: bytes) -> tuple[bytes, bytes]:
    """(a copy with one signature bit flipped, a copy with a changed body under the
    original signature): both well formed, both badly signed."""
    kind, body, signer, sig = codec.unpack(raw)
    flipped = codec.pack((kind, body, signer, bytes([sig[0] ^ 1]) + sig[1:]))
    other_body = codec.pack((kind, body[:-1] + bytes([body[-1] ^ 1]), signer, sig))
    return flipped, other_body


def test_a_tampered_copy_of_a_cached_envelope_is_checked_and_refused() -> None:
    world = build(replace(SCENARIOS["calm"], nodes=6), 1)
    actor = world.nodes[0].actor
    raw = actor.ask(now=world.start_ms, max_price=20, max_proof_time=3_000, ttl=10_000)
    v = Validator()
    assert v.check(raw)[0].accepted and v.signatures_verified == 1
    for copy in _tampered(raw):
        verdict, env = v.check(copy)
        if env is not None or verdict.reason is not Reason.BAD_SIGNATURE:
            raise AssertionError(f"a tampered copy passed as {verdict}")
    assert v.signatures_verified == 3 and v.check(raw)[0].accepted
    assert v.signatures_verified == 3  # the original again: from the cache


def test_a_planted_badly_signed_envelope_is_rejected_at_every_node() -> None:
    world = build(replace(SCENARIOS["calm"], nodes=8), 2)
    world.loop.run_until(world.start_ms + 3_000)
    raw = world.nodes[0].actor.ask(
        now=world.start_ms + 3_000, max_price=20, max_proof_time=3_000, ttl=10_000
    )
    assert world.validator.check(raw)[0].accepted  # the genuine one is in the cache
    for copy in _tampered(raw):
        before = world.stats.verdicts.get(BAD, 0)
        checks = world.validator.signature_checks
        for node in world.nodes:
            node.receive(copy, src=-1)
        assert world.stats.verdicts.get(BAD, 0) - before == len(world.nodes)
        assert world.validator.signature_checks - checks == len(world.nodes)
        assert not any(node.has(message_id(copy)) for node in world.nodes)
    world.nodes[1].receive(raw, src=-1)  # and the genuine one is still taken
    assert world.nodes[1].has(message_id(raw))


def test_the_checks_the_cache_saves_are_counted() -> None:
    r = simulate(replace(SCENARIOS["calm"], nodes=12, seconds=6, asks_per_s=2.0), 3)
    # every distinct envelope is verified once, yet each node takes it in (and would
    # have verified it): about one check per node per envelope
    assert r.signatures_verified > 0
    assert r.signature_checks >= 10 * r.signatures_verified
