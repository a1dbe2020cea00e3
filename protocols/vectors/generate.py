"""Generate the golden test vectors of protocol v1: protocols/vectors/market-v1.json.

    .venv/bin/python protocols/vectors/generate.py

Everything is deterministic: devnet keys (derived from public names), the devnet
market, fixed timestamps, and Ed25519 (whose signatures are deterministic). Running
this twice writes byte-identical JSON; tests/core/test_vectors.py checks that the
committed file is exactly what `render()` produces and that the core gives every
vector its expected verdict.

Each vector is applied to a fresh `MarketState(default_market())`: first every
envelope of `setup`, in order, at time `now`, then `envelope_hex` at time `now`; the
verdict of that last envelope must equal `expected`. Setup envelopes are always
well-formed and validly signed; their own verdicts are not part of the vector (some
are orphans or losing equivocations on purpose). `id_hex` is the message id, the
SHA-256 of the envelope bytes, or null when the bytes are not a canonical envelope
(reasons oversized, undecodable, not_canonical).

The expectations below are written by hand from protocols/market-v1.md; they are
not computed by running the core, so a change in the core's behaviour shows up as a
failing vector rather than as a silently rewritten file. Valid messages are sealed
by p2p_market.markets.devnet.Actor; broken ones are encoded by hand with the independent
helpers below (re-signed, so that the check under test is the one that fails).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from p2p_market.core.crypto import SigningKey
from p2p_market.core.statements import pow_ok
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market

OUT = Path(__file__).resolve().parent / "market-v1.json"

# -- protocol constants, restated from protocols/market-v1.md (not imported) ---------
DOMAIN = b"p2p-market/v1\x00"
MARKET, BID, ASK, CANCEL, COMMIT, PROOF, RECEIPT, INVALID_INPUTS, AWARD = range(1, 10)
MAX_ENVELOPE_BYTES = 65_536
LIFETIME = 86_400_000  # the devnet market's max_lifetime_ms
SKEW = 2_000  # the devnet market's skew_ms
WINDOW = 3_000  # the devnet market's commit_window_ms

# Every Reason value is either claimed as covered (some vector expects it) or listed
# as unreachable with the reason why; the test checks both lists against the enum.
COVERED_REASONS: tuple[str, ...] = (
    "ok",
    "oversized",
    "undecodable",
    "not_canonical",
    "unknown_kind",
    "bad_fields",
    "bad_signature",
    "duplicate",
    "wrong_market",
    "expired",
    "stale",
    "expiry_too_far",
    "from_future",
    "equivocation",
    "invalid_proof",
    "not_ask_owner",
    "not_bid_owner",
    "commit_mismatch",
    "commit_over_caps",
    "commit_over_size",
    "misdeclared_size",
    "bid_not_live",
    "orphan",
    "cancel_after_assignment",
    "bad_award",
    "after_award",
)
UNREACHABLE_REASONS: dict[str, str] = {
    "rate_limited": "returned by the network shell (per-signer and per-peer token "
    "buckets), never by the core: a node-local policy, not part of the protocol",
    "graylisted": "returned by the network shell for a frame from a peer whose recent "
    "penalties put it on the graylist: a node-local policy, not part of the protocol",
    "storage_full": "returned by the node when its log cannot take a message the core "
    "would keep (disk full): a local fault, not part of the protocol",
    "storage_failed": "returned by the node when writing a message the core would keep "
    "to its log failed otherwise (an I/O error): a local fault, not part of the protocol",
}

# -- actors and times ----------------------------------------------------------------
M = default_market()
OTHER_MARKET = default_market(name="devnet-other")
P1 = Actor("prover-1", M)
P2 = Actor("prover-2", M)
P3 = Actor("prover-3", M)
R1 = Actor("requester-1", M)
R2 = Actor("requester-2", M)

T = GENESIS_MS + 3_600_000
"""Base time of the vectors: one hour after the devnet market's creation."""
NOW = T + 1_000


# -- independent encoding helpers ------------------------------------------------------
def enc(value: object) -> bytes:
    """msgpack of one value as the canonical encoder writes it (smallest form)."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def raw_map(items: list[tuple[str, bytes]]) -> bytes:
    """A map from (key, already encoded value) pairs, exactly in the order given."""
    assert len(items) < 16
    return bytes((0x80 | len(items),)) + b"".join(enc(k) + v for k, v in items)


def canon_map(fields: dict[str, object]) -> bytes:
    return raw_map([(k, enc(v)) for k, v in sorted(fields.items())])


def sign(key: SigningKey, kind: int, body: bytes) -> bytes:
    return key.sign(DOMAIN + bytes((kind,)) + body)


def envelope(kind: int, body: bytes, signer: bytes, signature: bytes) -> bytes:
    return enc([kind, body, signer, signature])


def sealed(actor: Actor, kind: int, body: bytes) -> bytes:
    """A canonical envelope around any body bytes, validly signed by `actor`."""
    return envelope(kind, body, actor.public_key, sign(actor.key, kind, body))


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def body_of(env: bytes) -> bytes:
    _, body, _, _ = msgpack.unpackb(env, raw=False)
    assert isinstance(body, bytes)
    return body


MID = sha(
    canon_map(
        {
            "name": "devnet-pow",
            "proof_system": "pow",
            "verifier": "sha256-leading-zero-bits",
            "difficulty": 16,
            "commit_window_ms": 3_000,
            "stage_ms": 500,
            "skew_ms": 2_000,
            "max_lifetime_ms": 86_400_000,
            "created_at": GENESIS_MS,
            "nonce": 0,
        }
    )
)
assert P1.market_id == MID, "the market id rule of market-v1.md disagrees with the core"


def bid_fields(**over: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "market": MID,
        "timestamp": T,
        "price": 100,
        "proof_time": 10_000,
        "capacity": 1,
        "expires_at": T + 3_600_000,
        "seq": 1,
        "max_size": 1,
    }
    fields.update(over)
    return fields


INPUTS = b"vector inputs"


def ask_fields(**over: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "market": MID,
        "timestamp": T + 100,
        "max_price": 200,
        "max_proof_time": 60_000,
        "prefer": "cost",
        "replicas": 1,
        "size": 1,
        "expires_at": T + 100 + 600_000,
        "inputs": INPUTS,
        "inputs_hash": sha(INPUTS),
        "confidential": False,
        "allow": [],
        "deny": [],
        "nonce": 1,
    }
    fields.update(over)
    return fields


def id_of(env: bytes) -> bytes:
    """The message id: SHA-256 of the whole envelope."""
    return sha(env)


# -- the standard scenario -------------------------------------------------------------
# P1 bids (price 100, proof_time 10 s, 1 slot); R1 asks at T+100 (cap 200, 60 s);
# P1 commits at T+200 in attempt 0 of round 0, whose window is [T+100, T+3100).
# The window settles at T+3100 + skew = T+5100; P1's deadline is T+3100+10 000.
BID1 = P1.bid(now=T, price=100, proof_time=10_000, capacity=1, ttl=3_600_000, seq=1)
ASK1 = R1.ask(now=T + 100, max_price=200, max_proof_time=60_000, inputs=INPUTS, nonce=1)
ASK1_ID = id_of(ASK1)
BID1_ID = id_of(BID1)
COMMIT1 = P1.commit(now=T + 200, ask=ASK1_ID, bid=BID1_ID, price=100, proof_time=10_000)
BID2 = P2.bid(now=T, price=50, proof_time=10_000, capacity=1, ttl=3_600_000, seq=1)
WINDOW_END = T + 100 + WINDOW
PROOF_BYTES = bytes.fromhex("0000000000001368")
"""A valid pow proof of INPUTS in the devnet market (difficulty 16): the first nonce."""
assert pow_ok(INPUTS, 16, PROOF_BYTES)
PROOF1 = P1.proof(now=T + 6_000, ask=ASK1_ID, proof=PROOF_BYTES)

assert body_of(BID1) == canon_map(bid_fields()), "hand encoder disagrees with devnet.Actor"
assert body_of(ASK1) == canon_map(ask_fields()), "hand encoder disagrees with devnet.Actor"


@dataclass(frozen=True)
class Vector:
    name: str
    description: str
    envelope: bytes
    status: str
    reason: str
    now: int = NOW
    setup: tuple[bytes, ...] = ()

    def to_json(self) -> dict[str, Any]:
        undecodable = self.reason in ("oversized", "undecodable", "not_canonical")
        return {
            "name": self.name,
            "description": self.description,
            "envelope_hex": self.envelope.hex(),
            "id_hex": None if undecodable else sha(self.envelope).hex(),
            "now": self.now,
            "setup": [s.hex() for s in self.setup],
            "expected": {"status": self.status, "reason": self.reason},
        }


VECTORS: list[Callable[[], Vector]] = []


def vector(fn: Callable[[], Vector]) -> Callable[[], Vector]:
    VECTORS.append(fn)
    return fn


def accept(name: str, description: str, env: bytes, **kw: Any) -> Vector:
    return Vector(name, description, env, "accept", "ok", **kw)


def reject(name: str, reason: str, description: str, env: bytes, **kw: Any) -> Vector:
    return Vector(name, description, env, "reject", reason, **kw)


def ignore(name: str, reason: str, description: str, env: bytes, **kw: Any) -> Vector:
    return Vector(name, description, env, "ignore", reason, **kw)


# == valid messages ====================================================================
@vector
def _() -> Vector:
    return accept("accept/bid", "A well-formed, validly signed bid.", BID1)


@vector
def _() -> Vector:
    return accept("accept/ask", "A well-formed ask with inline inputs and prefer=cost.", ASK1)


@vector
def _() -> Vector:
    allow = sorted((P1.public_key, P2.public_key))
    env = R1.ask(
        now=T + 100,
        max_price=500,
        max_proof_time=30_000,
        prefer="time",
        replicas=2,
        confidential=True,
        inputs=INPUTS,
        allow=tuple(allow),
        deny=(P3.public_key,),
        nonce=2,
    )
    return accept(
        "accept/ask_confidential_allow_deny",
        "An ask with prefer=time, 2 replicas, confidential inputs (empty inline inputs, "
        "inputs_hash only), a sorted allow list and a deny list.",
        env,
    )


@vector
def _() -> Vector:
    return accept(
        "accept/commit",
        "P1 commits its bid to R1's ask in attempt 0 of round 0 (round = the ask's id); "
        "the commit's timestamp lies in the bid's lifetime and price and proof_time "
        "equal the bid's and fit the ask's caps.",
        COMMIT1,
        setup=(BID1, ASK1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/cancel",
        "The ask's owner cancels it before any assignment.",
        R1.cancel(now=T + 500, ask=ASK1_ID),
        setup=(ASK1,),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/cancel_signed_before_window_end",
        "A cancel signed at T+3099, one ms before the window end that would assign P1, "
        "arriving at T+6000 after the window settled: signed order decides, so the cancel "
        "comes first, is accepted, and the ask is cancelled instead of assigned.",
        R1.cancel(now=WINDOW_END - 1, ask=ASK1_ID),
        now=T + 6_000,
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/proof",
        "The winner P1 delivers an inline proof before its deadline.",
        PROOF1,
        now=T + 6_000,
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/receipt",
        "The requester accepts P1's delivered proof.",
        R1.receipt(now=T + 7_000, ask=ASK1_ID, prover=P1.public_key, outcome="accepted"),
        now=T + 7_000,
        setup=(BID1, ASK1, COMMIT1, PROOF1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/receipt_without_effect",
        "A timed_out receipt before the winner's deadline is admitted (admission checks "
        "only the signer is the ask's owner); the settlement fold records it as having "
        "no effect.",
        R1.receipt(now=T + 7_000, ask=ASK1_ID, prover=P1.public_key, outcome="timed_out"),
        now=T + 7_000,
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/invalid_inputs",
        "The winner P1 attests that the ask's inputs fail the market's input check.",
        P1.invalid_inputs(now=T + 6_000, ask=ASK1_ID, reason="inputs fail the input check"),
        now=T + 6_000,
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/invalid_inputs_reason_256_code_points",
        "Text bounds count Unicode code points, not bytes: a reason of 256 'é' (512 UTF-8 "
        "bytes) is within MAX_TEXT_CHARS. Admission does not require the signer to be a "
        "winner.",
        P2.invalid_inputs(now=T + 500, ask=ASK1_ID, reason="\u00e9" * 256),
        setup=(ASK1,),
    )


@vector
def _() -> Vector:
    return Vector(
        "accept/invalid_proof",
        "The winner P1 delivers an inline proof that fails the pow statement for the ask's "
        "public inputs (a nonce without 16 leading zero bits): kept as evidence against "
        "P1, which may win nothing in this market for one max_lifetime (§7); accepted with "
        "the reason named, so forwarded: the evidence must reach every node.",
        P1.proof(now=T + 6_000, ask=ASK1_ID, proof=bytes(8)),
        "accept",
        "invalid_proof",
        now=T + 6_000,
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/proof_from_non_winner",
        "Admission does not check that a proof's signer won: the proof is stored and the "
        "settlement fold records it as having no effect.",
        P2.proof(now=T + 500, ask=ASK1_ID, proof=PROOF_BYTES),
        setup=(ASK1,),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/bid_higher_seq",
        "A bid with a higher seq from the same prover is accepted and replaces the older one.",
        P1.bid(now=T + 10, price=90, proof_time=10_000, seq=2),
        setup=(BID1,),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/bid_lower_seq",
        "A bid with a lower seq than the prover's current bid is accepted (there is no "
        "rejection); it is kept in the prover's history but does not become "
        "current.",
        BID1,
        setup=(P1.bid(now=T + 10, price=90, proof_time=10_000, seq=2),),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/orphans_released_by_parent",
        "An ask arrives after a commit that referred to it (held as an orphan) and the "
        "commit's bid: the ask is accepted and the held commit is admitted with it.",
        ASK1,
        setup=(COMMIT1, BID1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/timestamp_at_skew_limit",
        "A timestamp exactly skew_ms (2000) ahead of `now` is not from the future.",
        P1.bid(now=NOW + SKEW, price=100, proof_time=10_000, seq=1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/expiry_one_ms_ahead",
        "expires_at = now + 1 is not expired.",
        P1.bid(now=T, price=100, proof_time=10_000, ttl=NOW + 1 - T, seq=1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/lifetime_at_limit",
        "expires_at - timestamp = max_lifetime_ms exactly is allowed.",
        P1.bid(now=T, price=100, proof_time=10_000, ttl=LIFETIME, seq=1),
    )


# == size, decoding, canonical form =====================================================
def proof_body_of_size(n: int) -> bytes:
    """A proof body whose inline proof is n bytes (too large for a valid Proof)."""
    blob = b"\x00" * n
    return canon_map(
        {
            "ask": ASK1_ID,
            "market": MID,
            "proof": blob,
            "proof_hash": sha(blob),
            "size": n,
            "timestamp": T,
        }
    )


def proof_envelope_of_length(total: int) -> bytes:
    n = total - 300
    while True:
        env = sealed(P1, PROOF, proof_body_of_size(n))
        if len(env) == total:
            return env
        assert len(env) < total
        n += total - len(env)


@vector
def _() -> Vector:
    return reject(
        "reject/oversized",
        "oversized",
        "65537 bytes, one more than MAX_ENVELOPE_BYTES: rejected before any decoding "
        "(otherwise a canonical, signed proof envelope).",
        proof_envelope_of_length(MAX_ENVELOPE_BYTES + 1),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/size_limit_is_inclusive",
        "bad_fields",
        "Exactly 65536 bytes is not oversized: the envelope is decoded, and then fails "
        "because its inline proof exceeds MAX_INLINE_PROOF_BYTES.",
        proof_envelope_of_length(MAX_ENVELOPE_BYTES),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/undecodable_garbage",
        "undecodable",
        "0xc1 is never used by msgpack.",
        bytes.fromhex("c1") + b"garbage",
    )


@vector
def _() -> Vector:
    return reject("reject/undecodable_empty", "undecodable", "Zero bytes.", b"")


@vector
def _() -> Vector:
    return reject(
        "reject/undecodable_truncated",
        "undecodable",
        "A valid bid envelope without its last byte.",
        BID1[:-1],
    )


@vector
def _() -> Vector:
    return reject(
        "reject/undecodable_trailing_bytes",
        "undecodable",
        "A valid bid envelope followed by one extra byte (0x00).",
        BID1 + b"\x00",
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    return reject(
        "reject/envelope_three_items",
        "undecodable",
        "An envelope array of 3 items [kind, body, signer]: an envelope is exactly 4 items "
        "(reported as undecodable).",
        enc([BID, body, P1.public_key]),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    return reject(
        "reject/envelope_five_items",
        "undecodable",
        "An envelope array of 5 items (a valid envelope plus a trailing 0).",
        enc([BID, body, P1.public_key, sign(P1.key, BID, body), 0]),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    sig = sign(P1.key, BID, body)
    return reject(
        "reject/envelope_is_a_map",
        "undecodable",
        "The envelope is a map instead of an array.",
        enc({"body": body, "kind": BID, "signature": sig, "signer": P1.public_key}),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    return reject(
        "reject/envelope_kind_is_text",
        "undecodable",
        'The kind is the string "bid" instead of an integer.',
        enc(["bid", body, P1.public_key, sign(P1.key, BID, body)]),
    )


@vector
def _() -> Vector:
    body = canon_map(bid_fields())
    return reject(
        "reject/envelope_body_is_a_map",
        "undecodable",
        "The body is embedded as a msgpack map instead of bin-wrapped bytes.",
        enc([BID, bid_fields(), P1.public_key, sign(P1.key, BID, body)]),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    return reject(
        "reject/envelope_short_signer",
        "undecodable",
        "The signer is 31 bytes.",
        enc([BID, body, P1.public_key[:31], sign(P1.key, BID, body)]),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    return reject(
        "reject/envelope_short_signature",
        "undecodable",
        "The signature is 63 bytes.",
        enc([BID, body, P1.public_key, sign(P1.key, BID, body)[:63]]),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/body_not_a_map",
        "undecodable",
        "The body bytes decode to an array, not a map.",
        sealed(P1, BID, enc([1, 2, 3])),
    )


@vector
def _() -> Vector:
    items = [(k, enc(v)) for k, v in sorted(bid_fields().items())]
    body = bytes((0x80 | len(items),)) + b"".join(
        (enc(k.encode()) if k == "capacity" else enc(k)) + v for k, v in items
    )
    return reject(
        "reject/body_bin_key",
        "undecodable",
        'The body map key "capacity" is encoded as bin, not str: keys must be strings.',
        sealed(P1, BID, body),
    )


@vector
def _() -> Vector:
    items = [(k, enc(v)) for k, v in sorted(bid_fields().items())]
    items[0] = ("capacity", bytes.fromhex("d40100"))  # fixext1, type 1
    return reject(
        "reject/body_ext_type",
        "undecodable",
        "The body holds a msgpack extension value (fixext 1): no ext types, ever.",
        sealed(P1, BID, raw_map(items)),
    )


@vector
def _() -> Vector:
    items = [(k, enc(v)) for k, v in sorted(ask_fields().items())]
    items = [(k, bytes.fromhex("a4636fff74") if k == "prefer" else v) for k, v in items]
    return reject(
        "reject/body_invalid_utf8",
        "undecodable",
        'The "prefer" string holds the invalid UTF-8 byte 0xff.',
        sealed(R1, ASK, raw_map(items)),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/body_trailing_bytes",
        "undecodable",
        "A canonical bid body followed by one extra byte inside the body bin.",
        sealed(P1, BID, canon_map(bid_fields()) + b"\xc0"),
    )


@vector
def _() -> Vector:
    keys = tuple(sorted(sha(b"key %d" % i) for i in range(65)))
    return reject(
        "reject/list_over_decoder_limit",
        "undecodable",
        "An allow list of 65 keys: arrays above 64 items (MAX_LIST_ITEMS) are refused by "
        "the decoder itself, so this is undecodable rather than bad_fields.",
        sealed(R1, ASK, canon_map(ask_fields(allow=list(keys), nonce=9))),
    )


@vector
def _() -> Vector:
    items = [(k, enc(v)) for k, v in sorted(bid_fields().items(), reverse=True)]
    return reject(
        "reject/not_canonical_unsorted_keys",
        "not_canonical",
        "The bid body's keys in descending order (validly signed over those bytes).",
        sealed(P1, BID, raw_map(items)),
    )


@vector
def _() -> Vector:
    items = [(k, enc(v)) for k, v in sorted(bid_fields().items())]
    items = [(k, b"\xcf" + (100).to_bytes(8, "big") if k == "price" else v) for k, v in items]
    return reject(
        "reject/not_canonical_uint64_for_small_int",
        "not_canonical",
        "price 100 written as uint64 (0xcf + 8 bytes) instead of a positive fixint.",
        sealed(P1, BID, raw_map(items)),
    )


@vector
def _() -> Vector:
    items = [(k, enc(v)) for k, v in sorted(bid_fields().items())]
    items = [(k, b"\xd3" + T.to_bytes(8, "big") if k == "timestamp" else v) for k, v in items]
    return reject(
        "reject/not_canonical_int64_for_unsigned",
        "not_canonical",
        "A non-negative timestamp written as int64 (0xd3) instead of uint64 (0xcf).",
        sealed(P1, BID, raw_map(items)),
    )


@vector
def _() -> Vector:
    items = [(k, enc(v)) for k, v in sorted(ask_fields().items())]
    items = [(k, b"\xd9\x04cost" if k == "prefer" else v) for k, v in items]
    return reject(
        "reject/not_canonical_str8_for_short_string",
        "not_canonical",
        '"cost" written as str8 (0xd9 0x04) instead of fixstr.',
        sealed(R1, ASK, raw_map(items)),
    )


@vector
def _() -> Vector:
    items = [(k, enc(v)) for k, v in sorted(bid_fields().items())]
    items = [(k, b"\xca" + bytes.fromhex("3fc00000") if k == "price" else v) for k, v in items]
    return reject(
        "reject/not_canonical_float32",
        "not_canonical",
        "price 1.5 as float32: it decodes, but the canonical encoder writes floats as "
        "float64, so the bytes differ (a float64 price is bad_fields instead).",
        sealed(P1, BID, raw_map(items)),
    )


@vector
def _() -> Vector:
    items = [(k, enc(v)) for k, v in sorted(bid_fields().items())]
    idx = [k for k, _ in items].index("price")
    items.insert(idx + 1, ("price", enc(90)))
    return reject(
        "reject/not_canonical_duplicate_key",
        "not_canonical",
        'The body map holds "price" twice (100, then 90).',
        sealed(P1, BID, raw_map(items)),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    sig = sign(P1.key, BID, body)
    return reject(
        "reject/not_canonical_envelope_kind_uint8",
        "not_canonical",
        "The envelope's kind 2 written as uint8 (0xcc 0x02) instead of a fixint; body and "
        "signature are otherwise valid.",
        b"\x94\xcc\x02" + enc(body) + enc(P1.public_key) + enc(sig),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    sig = sign(P1.key, BID, body)
    return reject(
        "reject/not_canonical_envelope_bin16_body",
        "not_canonical",
        "The envelope's body written with a bin16 header though it fits bin8.",
        b"\x94\x02\xc5" + len(body).to_bytes(2, "big") + body + enc(P1.public_key) + enc(sig),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/not_canonical_envelope_array16",
        "not_canonical",
        "The envelope array written with an array16 header (0xdc 0x0004).",
        b"\xdc\x00\x04" + BID1[1:],
    )


# == kind and fields ==================================================================
# A kind code v1 does not define is IGNOREd, not REJECTed: it may be a later
# version's (market-v1.md, Protocol evolution). Codes are one byte, 0..255.
@vector
def _() -> Vector:
    return ignore(
        "ignore/unknown_kind_10",
        "unknown_kind",
        "Kind 10, the first code v1 leaves to later versions (body: a valid bid body, "
        "signed with kind byte 10): ignored without blame, never stored nor forwarded.",
        sealed(P1, 10, canon_map(bid_fields())),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/unknown_kind_0",
        "unknown_kind",
        "Kind 0 is not a v1 kind: ignored like every code v1 does not define.",
        sealed(P1, 0, canon_map(bid_fields())),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/unknown_kind_255",
        "unknown_kind",
        "Kind 255, the largest kind code (a kind is signed as one byte).",
        sealed(P1, 255, canon_map(bid_fields())),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/unknown_kind_body_and_signature_not_checked",
        "unknown_kind",
        "Kind 200, with a body that is not msgpack at all and an all-zero signature: "
        "the kind is checked before the body is decoded, and an unknown kind's "
        "signature is never verified.",
        envelope(200, b"\xc1", P1.public_key, bytes(64)),
    )


@vector
def _() -> Vector:
    body = canon_map(bid_fields())
    return reject(
        "reject/envelope_kind_256",
        "undecodable",
        "Kind 256 does not fit the byte it is signed as, so no version of the protocol "
        "can sign it: a malformed envelope, not an unknown kind.",
        envelope(256, body, P1.public_key, bytes(64)),
    )


@vector
def _() -> Vector:
    body = canon_map(bid_fields())
    return reject(
        "reject/envelope_kind_negative",
        "undecodable",
        "Kind -1: kind codes are 0..255.",
        envelope(-1, body, P1.public_key, bytes(64)),
    )


@vector
def _() -> Vector:
    body = canon_map(bid_fields())
    sig = sign(P1.key, 10, body)
    return reject(
        "order/canonical_before_unknown_kind",
        "not_canonical",
        "Kind 10 written as uint8 (0xcc 0x0a) instead of a positive fixint: the envelope "
        "form is checked, and blamed, before the kind.",
        b"\x94\xcc\x0a" + enc(body) + enc(P1.public_key) + enc(sig),
    )


@vector
def _() -> Vector:
    fields = bid_fields()
    del fields["seq"]
    return reject(
        "reject/bad_fields_missing_field",
        "bad_fields",
        'A bid without "seq". Every field is required on the wire, even those with a '
        "default in messages.py.",
        sealed(P1, BID, canon_map(fields)),
    )


@vector
def _() -> Vector:
    fields = ask_fields()
    del fields["deny"]
    return reject(
        "reject/bad_fields_missing_defaulted_field",
        "bad_fields",
        'An ask without "deny" (which has a default, but must still be present).',
        sealed(R1, ASK, canon_map(fields)),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_unexpected_field",
        "bad_fields",
        'A bid with an extra field "note".',
        sealed(P1, BID, canon_map(bid_fields(note="hi"))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_float64",
        "bad_fields",
        "price 100.0 as float64 (canonical as msgpack, but integers only).",
        sealed(P1, BID, canon_map(bid_fields(price=100.0))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_negative",
        "bad_fields",
        "price -1.",
        sealed(P1, BID, canon_map(bid_fields(price=-1))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_bool_for_int",
        "bad_fields",
        "price true: a boolean is not an integer.",
        sealed(P1, BID, canon_map(bid_fields(price=True))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_nil_for_int",
        "bad_fields",
        "price nil.",
        sealed(P1, BID, canon_map(bid_fields(price=None))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_uint_above_max",
        "bad_fields",
        "price 2^63, one above MAX_UINT (2^63 - 1).",
        sealed(P1, BID, canon_map(bid_fields(price=2**63))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_capacity_zero",
        "bad_fields",
        "capacity 0 (must be 1..1024).",
        sealed(P1, BID, canon_map(bid_fields(capacity=0))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_expiry_not_after_timestamp",
        "bad_fields",
        "expires_at = timestamp (must be at least timestamp + 1).",
        sealed(P1, BID, canon_map(bid_fields(expires_at=T))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_short_market",
        "bad_fields",
        "market is 31 bytes.",
        sealed(P1, BID, canon_map(bid_fields(market=MID[:31]))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_text_for_bytes",
        "bad_fields",
        "market given as a str (its hex) instead of bin.",
        sealed(P1, BID, canon_map(bid_fields(market=MID.hex()))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_bytes_for_text",
        "bad_fields",
        'prefer given as bin b"cost" instead of str.',
        sealed(R1, ASK, canon_map(ask_fields(prefer=b"cost"))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_unknown_prefer",
        "bad_fields",
        'prefer "speed" (must be "cost" or "time").',
        sealed(R1, ASK, canon_map(ask_fields(prefer="speed"))),
    )


@vector
def _() -> Vector:
    allow = sorted((P1.public_key, P2.public_key), reverse=True)
    return reject(
        "reject/bad_fields_unsorted_allow",
        "bad_fields",
        "An allow list in descending order: key lists must be strictly increasing.",
        sealed(R1, ASK, canon_map(ask_fields(allow=allow))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_repeated_deny",
        "bad_fields",
        "A deny list naming the same key twice.",
        sealed(R1, ASK, canon_map(ask_fields(deny=[P3.public_key, P3.public_key]))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_inputs_hash_mismatch",
        "bad_fields",
        "Inline inputs whose SHA-256 is not inputs_hash.",
        sealed(R1, ASK, canon_map(ask_fields(inputs_hash=sha(b"other")))),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_fields_confidential_inline",
        "bad_fields",
        "confidential = true with inline inputs.",
        sealed(R1, ASK, canon_map(ask_fields(confidential=True))),
    )


@vector
def _() -> Vector:
    fields = {"ask": ASK1_ID, "market": MID, "reason": "x" * 257, "timestamp": T + 500}
    return reject(
        "reject/bad_fields_text_too_long",
        "bad_fields",
        "An invalid-inputs reason of 257 characters (MAX_TEXT_CHARS is 256).",
        sealed(P1, INVALID_INPUTS, canon_map(fields)),
    )


@vector
def _() -> Vector:
    fields = {
        "ask": ASK1_ID,
        "market": MID,
        "proof": PROOF_BYTES,
        "proof_hash": sha(PROOF_BYTES),
        "size": len(PROOF_BYTES) + 1,
        "timestamp": T + 6_000,
    }
    return reject(
        "reject/bad_fields_inline_proof_size",
        "bad_fields",
        "An inline proof whose size field is one more than its length.",
        sealed(P1, PROOF, canon_map(fields)),
    )


@vector
def _() -> Vector:
    fields: dict[str, object] = {
        "ask": ASK1_ID,
        "market": MID,
        "outcome": "ok",
        "prover": P1.public_key,
        "timestamp": T + 7_000,
    }
    return reject(
        "reject/bad_fields_unknown_outcome",
        "bad_fields",
        'A receipt outcome "ok" (must be accepted, invalid or timed_out).',
        sealed(R1, RECEIPT, canon_map(fields)),
    )


# == signature ========================================================================
@vector
def _() -> Vector:
    body = body_of(BID1)
    sig = bytearray(sign(P1.key, BID, body))
    sig[0] ^= 0x01
    return reject(
        "reject/bad_signature_flipped_bit",
        "bad_signature",
        "The valid bid with the lowest bit of the signature's first byte flipped.",
        envelope(BID, body, P1.public_key, bytes(sig)),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    return reject(
        "reject/bad_signature_other_key",
        "bad_signature",
        "Signer is P1 but the signature was made by P2's key.",
        envelope(BID, body, P1.public_key, sign(P2.key, BID, body)),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    return reject(
        "reject/bad_signature_no_domain",
        "bad_signature",
        "Signed over kind byte + body, without the protocol domain prefix.",
        envelope(BID, body, P1.public_key, P1.key.sign(bytes((BID,)) + body)),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    return reject(
        "reject/bad_signature_wrong_kind_byte",
        "bad_signature",
        "Signed with kind byte 3 (ask) while the envelope says kind 2 (bid).",
        envelope(BID, body, P1.public_key, sign(P1.key, ASK, body)),
    )


@vector
def _() -> Vector:
    body = body_of(BID1)
    return reject(
        "reject/bad_signature_ascii_kind",
        "bad_signature",
        'Signed over domain + the ASCII digit "2" + body: the kind is one raw byte.',
        envelope(BID, body, P1.public_key, P1.key.sign(DOMAIN + b"2" + body)),
    )


ED25519_L = 2**252 + 27742317777372353535851937790883648493
"""The order of the Ed25519 base point."""


@vector
def _() -> Vector:
    body = body_of(BID1)
    sig = sign(P1.key, BID, body)
    s = int.from_bytes(sig[32:], "little") + ED25519_L
    return reject(
        "reject/bad_signature_non_canonical_s",
        "bad_signature",
        "A valid signature with S replaced by S + L (same value mod L, non-canonical "
        "encoding): refused, as libsodium refuses it.",
        envelope(BID, body, P1.public_key, sig[:32] + s.to_bytes(32, "little")),
    )


@vector
def _() -> Vector:
    identity = bytes((1,)) + bytes(31)
    return reject(
        "reject/bad_signature_small_order_key",
        "bad_signature",
        "Signer = the identity point (small order), signature R = identity, S = 0: it "
        "satisfies the cofactored verification equation for any message (ZIP-215 would "
        "accept it), but libsodium refuses small-order keys and R.",
        envelope(BID, body_of(BID1), identity, identity + bytes(32)),
    )


# == order of the checks ===============================================================
@vector
def _() -> Vector:
    items = [(k, enc(v)) for k, v in sorted(bid_fields().items(), reverse=True)]
    return reject(
        "order/canonical_before_signature",
        "not_canonical",
        "Unsorted body keys and an all-zero signature: form is checked first.",
        envelope(BID, raw_map(items), P1.public_key, bytes(64)),
    )


@vector
def _() -> Vector:
    return reject(
        "order/fields_before_signature",
        "bad_fields",
        "A negative price and an all-zero signature: fields are checked before the signature.",
        envelope(BID, canon_map(bid_fields(price=-1)), P1.public_key, bytes(64)),
    )


@vector
def _() -> Vector:
    other = sha(canon_map(OTHER_MARKET.to_map()))
    body = canon_map(bid_fields(market=other))
    return reject(
        "order/signature_before_market",
        "bad_signature",
        "A bid for another market with an all-zero signature: the signature is checked "
        "before the market.",
        envelope(BID, body, P1.public_key, bytes(64)),
    )


@vector
def _() -> Vector:
    other = sha(canon_map(OTHER_MARKET.to_map()))
    return reject(
        "order/market_before_time",
        "wrong_market",
        "A bid for another market, timestamped far in the future.",
        sealed(P1, BID, canon_map(bid_fields(market=other, timestamp=NOW + 60_000))),
    )


@vector
def _() -> Vector:
    return ignore(
        "order/time_before_parents",
        "from_future",
        "A commit from the future whose ask is unknown: from_future, not orphan.",
        P1.commit(now=NOW + SKEW + 1, ask=ASK1_ID, bid=BID1_ID, price=100, proof_time=10_000),
    )


# == the seen cache ====================================================================
@vector
def _() -> Vector:
    return ignore(
        "ignore/duplicate",
        "duplicate",
        "The same bid envelope a second time.",
        BID1,
        setup=(BID1,),
    )


@vector
def _() -> Vector:
    loser = P1.bid(now=T + 10, price=90, proof_time=10_000, seq=1)
    return ignore(
        "ignore/duplicate_of_evidence",
        "duplicate",
        "The second twin of an equivocation, sent again: it is stored too, so seen.",
        loser,
        setup=(BID1, loser),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/own_market_descriptor",
        "duplicate",
        "This market's own descriptor (kind 1; the SHA-256 of its body is the market id): "
        "ignored as a duplicate, never stored.",
        sealed(R1, MARKET, canon_map(M.to_map())),
    )


# == meaning: market, time ==============================================================
@vector
def _() -> Vector:
    return ignore(
        "ignore/other_market_descriptor",
        "wrong_market",
        "Another market's descriptor.",
        sealed(R1, MARKET, canon_map(OTHER_MARKET.to_map())),
    )


@vector
def _() -> Vector:
    other = sha(canon_map(OTHER_MARKET.to_map()))
    return reject(
        "reject/wrong_market",
        "wrong_market",
        "A valid bid for another market (its market field is another descriptor's hash).",
        sealed(P1, BID, canon_map(bid_fields(market=other))),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/from_future",
        "from_future",
        "A bid timestamped skew_ms + 1 ahead of `now` (ignored: it may be our clock).",
        P1.bid(now=NOW + SKEW + 1, price=100, proof_time=10_000, seq=1),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/expired_bid",
        "expired",
        "A bid whose expires_at equals `now`.",
        P1.bid(now=T, price=100, proof_time=10_000, ttl=NOW - T, seq=1),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/expired_ask",
        "expired",
        "An ask that expired before `now`.",
        R1.ask(now=T, max_price=200, max_proof_time=60_000, ttl=500, nonce=1),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/expiry_too_far_bid",
        "expiry_too_far",
        "A bid living max_lifetime_ms + 1.",
        P1.bid(now=T, price=100, proof_time=10_000, ttl=LIFETIME + 1, seq=1),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/expiry_too_far_ask",
        "expiry_too_far",
        "An ask living max_lifetime_ms + 1.",
        R1.ask(now=T, max_price=200, max_proof_time=60_000, ttl=LIFETIME + 1, nonce=1),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/expiry_too_far_proof_time",
        "expiry_too_far",
        "An ask whose max_proof_time is above max_lifetime_ms.",
        R1.ask(now=T, max_price=200, max_proof_time=LIFETIME + 1, nonce=1),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/stale",
        "stale",
        "A cancel signed more than 3 x max_lifetime_ms before `now` (its ask is unknown, "
        "but staleness is checked first).",
        R1.cancel(now=T, ask=ASK1_ID),
        now=T + 3 * LIFETIME + 1,
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/stale_limit_is_inclusive",
        "orphan",
        "A cancel signed exactly 3 x max_lifetime_ms before `now` is not stale; its ask is "
        "unknown, so it is held as an orphan.",
        R1.cancel(now=T, ask=ASK1_ID),
        now=T + 3 * LIFETIME,
    )


# == meaning: parents, ownership ===========================================================
@vector
def _() -> Vector:
    return ignore(
        "ignore/orphan_commit_unknown_ask",
        "orphan",
        "A commit whose ask is unknown: held until the ask arrives.",
        COMMIT1,
        setup=(BID1,),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/orphan_commit_unknown_bid",
        "orphan",
        "A commit whose ask is known but whose bid is unknown: held until the bid arrives.",
        COMMIT1,
        setup=(ASK1,),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/orphan_resent",
        "orphan",
        "An orphan sent again while held: not a duplicate (held orphans are not in the "
        "seen cache), it is held again.",
        PROOF1,
        now=T + 6_000,
        setup=(PROOF1,),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/not_ask_owner_cancel",
        "not_ask_owner",
        "R2 cancels R1's ask.",
        R2.cancel(now=T + 500, ask=ASK1_ID),
        setup=(ASK1,),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/not_ask_owner_receipt",
        "not_ask_owner",
        "R2 sends a receipt on R1's ask.",
        R2.receipt(now=T + 7_000, ask=ASK1_ID, prover=P1.public_key, outcome="invalid"),
        now=T + 7_000,
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/not_bid_owner",
        "not_bid_owner",
        "P2 commits with P1's bid (same price and proof_time).",
        P2.commit(now=T + 200, ask=ASK1_ID, bid=BID1_ID, price=100, proof_time=10_000),
        setup=(BID1, ASK1),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/commit_mismatch_price",
        "commit_mismatch",
        "P1 commits at price 101 with a bid at 100.",
        P1.commit(now=T + 200, ask=ASK1_ID, bid=BID1_ID, price=101, proof_time=10_000),
        setup=(BID1, ASK1),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/commit_mismatch_proof_time",
        "commit_mismatch",
        "P1 commits with proof_time 9000 and a bid of 10000.",
        P1.commit(now=T + 200, ask=ASK1_ID, bid=BID1_ID, price=100, proof_time=9_000),
        setup=(BID1, ASK1),
    )


@vector
def _() -> Vector:
    bid = P1.bid(now=T, price=300, proof_time=10_000, seq=1)
    return reject(
        "reject/commit_over_caps_price",
        "commit_over_caps",
        "P1's bid and commit at price 300 on an ask capped at 200.",
        P1.commit(now=T + 200, ask=ASK1_ID, bid=id_of(bid), price=300, proof_time=10_000),
        setup=(bid, ASK1),
    )


@vector
def _() -> Vector:
    bid = P1.bid(now=T, price=100, proof_time=70_000, seq=1)
    return reject(
        "reject/commit_over_caps_proof_time",
        "commit_over_caps",
        "P1's bid and commit with proof_time 70000 on an ask capped at 60000.",
        P1.commit(now=T + 200, ask=ASK1_ID, bid=id_of(bid), price=100, proof_time=70_000),
        setup=(bid, ASK1),
    )


# -- declared work (§5.3, core/work.py): the market's difficulty is 16, so inputs naming
# difficulty 18 are 2**(18-16) = 4 units of work.
SIZED_INPUTS = b"difficulty=18\nvector inputs"
SIZED_ASK = R1.ask(
    now=T + 100, max_price=800, max_proof_time=60_000, size=4, inputs=SIZED_INPUTS, nonce=9
)


@vector
def _() -> Vector:
    return accept(
        "accept/ask_sized",
        "An ask whose inline inputs name difficulty 18 in a difficulty-16 market, "
        "declaring size 4 (2**(18-16) units of work): the size its inputs need.",
        SIZED_ASK,
    )


@vector
def _() -> Vector:
    return reject(
        "reject/misdeclared_size",
        "misdeclared_size",
        "The same inputs (difficulty 18 in a difficulty-16 market: size 4) declared as "
        "size 1: every node can see the understatement, so it is provable misbehaviour.",
        R1.ask(
            now=T + 100, max_price=800, max_proof_time=60_000, size=1, inputs=SIZED_INPUTS, nonce=10
        ),
    )


@vector
def _() -> Vector:
    bid = P1.bid(now=T, price=100, proof_time=10_000, seq=1, max_size=2)
    return reject(
        "reject/commit_over_size",
        "commit_over_size",
        "P1's bid takes asks of at most 2 units; its commit to an ask of size 4.",
        P1.commit(now=T + 200, ask=id_of(SIZED_ASK), bid=id_of(bid), price=100, proof_time=10_000),
        setup=(bid, SIZED_ASK),
    )


@vector
def _() -> Vector:
    bid = P1.bid(now=T, price=250, proof_time=10_000, seq=1, max_size=8)
    return reject(
        "reject/commit_over_caps_sized",
        "commit_over_caps",
        "P1 prices a unit at 250; for an ask of size 4 that is 1000, above its cap of 800 "
        "(the cap is a total, the price per unit).",
        P1.commit(now=T + 200, ask=id_of(SIZED_ASK), bid=id_of(bid), price=250, proof_time=10_000),
        setup=(bid, SIZED_ASK),
    )


@vector
def _() -> Vector:
    bid = P1.bid(now=T + 500, price=100, proof_time=10_000, seq=1)
    return reject(
        "reject/bid_not_live_before",
        "bid_not_live",
        "A commit signed at T+200 referring to a bid signed at T+500.",
        P1.commit(now=T + 200, ask=ASK1_ID, bid=id_of(bid), price=100, proof_time=10_000),
        setup=(bid, ASK1),
    )


@vector
def _() -> Vector:
    bid = P1.bid(now=T, price=100, proof_time=10_000, ttl=1_000, seq=1)
    return reject(
        "reject/bid_not_live_after",
        "bid_not_live",
        "A commit signed at T+1000, the very ms its bid expires (a bid is live on "
        "[timestamp, expires_at)).",
        P1.commit(now=T + 1_000, ask=ASK1_ID, bid=id_of(bid), price=100, proof_time=10_000),
        now=T + 900,
        setup=(bid, ASK1),
    )


# == equivocation ========================================================================
@vector
def _() -> Vector:
    return ignore(
        "ignore/equivocation_bid",
        "equivocation",
        "A second bid from P1 with the same seq and another price, signed later: both are "
        "stored and recorded as evidence; the twin is not forwarded and nobody is blamed; "
        "the book's current offer is the first in signed order (timestamp, then id).",
        P1.bid(now=T + 10, price=90, proof_time=10_000, seq=1),
        setup=(BID1,),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/equivocation_bid_earlier_wins",
        "equivocation",
        "The equivocating bid arrives second but is signed earlier: it becomes the book's "
        "current offer, nothing is removed (the first stays stored, with what cites it), "
        "and the verdict is still ignore:equivocation (the forwarder is not blamed).",
        BID1,
        setup=(P1.bid(now=T + 10, price=90, proof_time=10_000, seq=1),),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/equivocation_ask",
        "equivocation",
        "A second ask from R1 with the same nonce and another max_price.",
        R1.ask(now=T + 150, max_price=250, max_proof_time=60_000, inputs=INPUTS, nonce=1),
        setup=(ASK1,),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/equivocation_commit",
        "equivocation",
        "A second commit by P1 on the same (ask, round, attempt), signed later.",
        P1.commit(now=T + 300, ask=ASK1_ID, bid=BID1_ID, price=100, proof_time=10_000),
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/equivocation_cancel",
        "equivocation",
        "A second cancel by R1 of the same ask, with another timestamp.",
        R1.cancel(now=T + 600, ask=ASK1_ID),
        setup=(ASK1, R1.cancel(now=T + 500, ask=ASK1_ID)),
    )


@vector
def _() -> Vector:
    twin = P1.bid(now=T + 10, price=90, proof_time=10_000, seq=1)
    return accept(
        "accept/commit_citing_a_bid_twin",
        "A commit citing the later twin of an equivocating bid: both twins are stored, "
        "so it is judged by the bid it cites, like any commit.",
        P1.commit(now=T + 200, ask=ASK1_ID, bid=id_of(twin), price=90, proof_time=10_000),
        setup=(BID1, ASK1, twin),
    )


# == awards ================================================================================
# R1 awards attempt 0 of round 0 to COMMIT1 once the window ended (T+3100) and settled.
AWARD1 = R1.award(now=WINDOW_END + SKEW, ask=ASK1_ID, commits=[id_of(COMMIT1)])


@vector
def _() -> Vector:
    return accept(
        "accept/award",
        "R1 awards attempt 0 of its ask to P1's commit (kind 9): from now on that "
        "attempt's winners are final.",
        AWARD1,
        now=WINDOW_END + SKEW,
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return accept(
        "accept/award_empty",
        "An award naming no commit: the requester says nobody won that attempt.",
        R1.award(now=WINDOW_END + SKEW, ask=ASK1_ID, commits=[]),
        now=WINDOW_END + SKEW,
        setup=(ASK1,),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/award_not_ask_owner",
        "not_ask_owner",
        "An award signed by someone other than the ask's requester.",
        R2.award(now=WINDOW_END + SKEW, ask=ASK1_ID, commits=[id_of(COMMIT1)]),
        now=WINDOW_END + SKEW,
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return reject(
        "reject/bad_award_other_attempt",
        "bad_award",
        "An award of attempt 1 naming a commit of attempt 0: provable misbehaviour by "
        "the requester.",
        R1.award(now=WINDOW_END + WINDOW, ask=ASK1_ID, commits=[id_of(COMMIT1)], attempt=1),
        now=WINDOW_END + WINDOW,
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/award_waits_for_its_commits",
        "orphan",
        "An award naming a commit this node does not hold yet: held until it arrives "
        "(the fold needs its terms).",
        AWARD1,
        now=WINDOW_END + SKEW,
        setup=(BID1, ASK1),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/after_award",
        "after_award",
        "P2 commits at T+3000, inside the window of attempt 0, but the envelope arrives "
        "after R1's award of that attempt, which does not name it: too late to count. "
        "Stored without effect, not forwarded, the forwarder not blamed.",
        P2.commit(now=T + 3_000, ask=ASK1_ID, bid=id_of(BID2), price=50, proof_time=10_000),
        now=NOW + 60_000,
        setup=(BID1, BID2, ASK1, COMMIT1, AWARD1),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/cancel_after_award",
        "cancel_after_assignment",
        "A cancel dated before the window ended, arriving after the award: an award "
        "cannot be undone by a backdated cancel.",
        R1.cancel(now=T + 1_000, ask=ASK1_ID),
        now=WINDOW_END + SKEW,
        setup=(BID1, ASK1, COMMIT1, AWARD1),
    )


# == cancel after assignment ===============================================================
@vector
def _() -> Vector:
    return ignore(
        "ignore/cancel_after_assignment",
        "cancel_after_assignment",
        "R1 cancels at T+6000; P1 won the window that ended at T+3100, so the ask was "
        "assigned before the cancel in signed order. Ignored, not rejected (the requester "
        "may not have seen the commits yet) and kept without effect.",
        R1.cancel(now=T + 6_000, ask=ASK1_ID),
        now=T + 6_000,
        setup=(BID1, ASK1, COMMIT1),
    )


@vector
def _() -> Vector:
    return ignore(
        "ignore/cancel_at_window_end",
        "cancel_after_assignment",
        "A cancel signed exactly at the window end (T+3100): the window's end is processed "
        "before messages of the same ms, so the assignment comes first.",
        R1.cancel(now=WINDOW_END, ask=ASK1_ID),
        now=WINDOW_END,
        setup=(BID1, ASK1, COMMIT1),
    )


# -- output ---------------------------------------------------------------------------
def build() -> list[dict[str, Any]]:
    vectors = [make().to_json() for make in VECTORS]
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names)), "vector names must be unique"
    return vectors


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=True) + "\n"


def main() -> int:
    text = render()
    OUT.write_text(text, encoding="ascii")
    print(f"wrote {len(json.loads(text))} vectors to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
