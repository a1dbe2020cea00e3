"""The nine message kinds of protocol v1, as frozen, slotted, keyword-only dataclasses.

A message that exists is well-formed: every field is checked on construction
(types, ranges, lengths, canonical list order), so nothing downstream re-checks
shapes. Integers only: prices in base units, times in milliseconds since the Unix
epoch, durations in milliseconds. The signer is not a field: it is the envelope's.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from p2p_market.core import limits as L


class MessageError(ValueError):
    """A field is missing, of the wrong type or out of range."""


class Kind(enum.IntEnum):
    MARKET = 1
    BID = 2
    ASK = 3
    CANCEL = 4
    COMMIT = 5
    PROOF = 6
    RECEIPT = 7
    INVALID_INPUTS = 8
    AWARD = 9


class Prefer(enum.Enum):
    COST = "cost"
    TIME = "time"


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    INVALID = "invalid"
    TIMED_OUT = "timed_out"


PROOF_SYSTEMS: frozenset[str] = frozenset({"pow", "external", "groth16", "plonk"})
MAX_ATTEMPT = 1_000_000
"""The largest commit-window number a Commit or an Award may name."""


def _uint(name: str, v: object, lo: int = 0, hi: int = L.MAX_UINT) -> None:
    if type(v) is not int:
        raise MessageError(f"{name} must be an integer")
    if not lo <= v <= hi:
        raise MessageError(f"{name}={v} outside [{lo}, {hi}]")


def _raw(name: str, v: object, size: int) -> None:
    if type(v) is not bytes or len(v) != size:
        raise MessageError(f"{name} must be {size} bytes")


def _blob(name: str, v: object, limit: int) -> None:
    if type(v) is not bytes or len(v) > limit:
        raise MessageError(f"{name} must be bytes of at most {limit}")


def _text(name: str, v: object, limit: int, *, allow_empty: bool = False) -> None:
    if type(v) is not str or len(v) > limit or (not v and not allow_empty):
        raise MessageError(f"{name} must be text of 1..{limit} characters")


def _choice(name: str, v: object, allowed: frozenset[str] | set[str]) -> None:
    if type(v) is not str or v not in allowed:
        raise MessageError(f"{name} must be one of {sorted(allowed)}")


def _key_set(name: str, v: object) -> None:
    """A set of public keys, encoded one way only: strictly increasing."""
    if type(v) is not tuple or len(v) > L.MAX_LIST_ITEMS:
        raise MessageError(f"{name} must be a list of at most {L.MAX_LIST_ITEMS} keys")
    prev = b""
    for item in v:
        _raw(name, item, L.KEY_BYTES)
        if item <= prev:
            raise MessageError(f"{name} must be sorted and without repeats")
        prev = item


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


_PREFERS = frozenset(p.value for p in Prefer)
_OUTCOMES = frozenset(o.value for o in Outcome)

M = TypeVar("M", bound="Message")
_new = object.__new__
_set = object.__setattr__


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    KIND: ClassVar[Kind]
    FIELD_NAMES: ClassVar[tuple[str, ...]] = ()
    FIELD_SET: ClassVar[frozenset[str]] = frozenset()

    def to_map(self) -> dict[str, Any]:
        """Field map in canonical (sorted) key order."""
        return {name: getattr(self, name) for name in self.FIELD_NAMES}

    @classmethod
    def from_map(cls: type[M], body: object) -> M:
        if type(body) is not dict:
            raise MessageError("body must be a map")
        if body.keys() != cls.FIELD_SET:
            missing = sorted(set(cls.FIELD_NAMES) - set(body))
            extra = sorted(str(k) for k in set(body) - set(cls.FIELD_NAMES))
            raise MessageError(f"{cls.__name__}: missing {missing}, unexpected {extra}")
        # Every field is present, so this is `cls(**body)` without the generated
        # __init__'s per-field frozen-setattr overhead (about half the cost of a
        # message); __post_init__ still checks every field.
        message = _new(cls)
        for name, value in body.items():
            _set(message, name, value)
        message.__post_init__()  # type: ignore[attr-defined]
        return message


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketScoped(Message):
    market: bytes
    timestamp: int

    def __post_init__(self) -> None:
        _raw("market", self.market, L.HASH_BYTES)
        _uint("timestamp", self.timestamp)


@dataclass(frozen=True, slots=True, kw_only=True)
class Market(Message):
    """A market descriptor; its id is the SHA-256 of its canonical body."""

    KIND = Kind.MARKET
    name: str
    proof_system: str
    verifier: str
    difficulty: int
    commit_window_ms: int = L.DEFAULT_COMMIT_WINDOW_MS
    stage_ms: int = L.DEFAULT_STAGE_MS
    skew_ms: int = L.DEFAULT_SKEW_MS
    max_lifetime_ms: int = L.DEFAULT_MAX_LIFETIME_MS
    created_at: int
    nonce: int = 0

    def __post_init__(self) -> None:
        _text("name", self.name, L.MAX_NAME_CHARS)
        _choice("proof_system", self.proof_system, PROOF_SYSTEMS)
        _text("verifier", self.verifier, L.MAX_TEXT_CHARS, allow_empty=True)
        _uint("difficulty", self.difficulty, 0, 64)
        _uint(
            "commit_window_ms",
            self.commit_window_ms,
            L.MIN_COMMIT_WINDOW_MS,
            L.MAX_COMMIT_WINDOW_MS,
        )
        _uint("stage_ms", self.stage_ms, 1, self.commit_window_ms)
        _uint("skew_ms", self.skew_ms, 0, L.MAX_SKEW_MS)
        _uint("max_lifetime_ms", self.max_lifetime_ms, self.commit_window_ms, L.MAX_LIFETIME_MS)
        _uint("created_at", self.created_at)
        _uint("nonce", self.nonce)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bid(MarketScoped):
    """A prover's standing offer; a higher seq from the same prover replaces it.

    `price` is per unit of work (an ask of size s costs s x price), `proof_time` the
    promise for any ask it takes, and it takes asks of size <= `max_size` only
    (core/work.py)."""

    KIND = Kind.BID
    price: int
    proof_time: int
    capacity: int
    expires_at: int
    seq: int
    max_size: int = 1

    def __post_init__(self) -> None:
        MarketScoped.__post_init__(self)
        _uint("price", self.price)
        _uint("proof_time", self.proof_time, 1)
        _uint("capacity", self.capacity, 1, L.MAX_CAPACITY)
        _uint("expires_at", self.expires_at, self.timestamp + 1)
        _uint("seq", self.seq)
        _uint("max_size", self.max_size, 1, L.MAX_SIZE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ask(MarketScoped):
    """A request for a proof. Inputs travel inline, or by hash over a direct stream
    (always so when confidential: then only the winners ever receive them). `size`
    declares the work in the market's units (core/work.py); `max_price` caps the total."""

    KIND = Kind.ASK
    max_price: int
    max_proof_time: int
    prefer: str
    replicas: int = 1
    size: int = 1
    expires_at: int
    inputs: bytes = b""
    inputs_hash: bytes
    confidential: bool = False
    allow: tuple[bytes, ...] = ()
    deny: tuple[bytes, ...] = ()
    nonce: int

    def __post_init__(self) -> None:
        MarketScoped.__post_init__(self)
        _uint("max_price", self.max_price)
        _uint("max_proof_time", self.max_proof_time, 1)
        _choice("prefer", self.prefer, _PREFERS)
        _uint("replicas", self.replicas, 1, L.MAX_REPLICAS)
        _uint("size", self.size, 1, L.MAX_SIZE)
        _uint("expires_at", self.expires_at, self.timestamp + 1)
        _blob("inputs", self.inputs, L.MAX_INLINE_INPUT_BYTES)
        _raw("inputs_hash", self.inputs_hash, L.HASH_BYTES)
        if type(self.confidential) is not bool:
            raise MessageError("confidential must be a boolean")
        if self.confidential and self.inputs:
            raise MessageError("confidential inputs must not travel inline")
        if self.inputs and sha256(self.inputs) != self.inputs_hash:
            raise MessageError("inputs_hash does not match inputs")
        _key_set("allow", self.allow)
        _key_set("deny", self.deny)
        _uint("nonce", self.nonce)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel(MarketScoped):
    KIND = Kind.CANCEL
    ask: bytes

    def __post_init__(self) -> None:
        MarketScoped.__post_init__(self)
        _raw("ask", self.ask, L.HASH_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit(MarketScoped):
    """A prover's signed claim on one attempt of one round of an ask.

    `round` is the id of the message that opened the round (the ask itself, or a
    failure receipt); `attempt` counts commit windows since that round opened."""

    KIND = Kind.COMMIT
    ask: bytes
    round: bytes
    attempt: int
    bid: bytes
    price: int
    proof_time: int

    def __post_init__(self) -> None:
        MarketScoped.__post_init__(self)
        _raw("ask", self.ask, L.HASH_BYTES)
        _raw("round", self.round, L.HASH_BYTES)
        _uint("attempt", self.attempt, 0, MAX_ATTEMPT)
        _raw("bid", self.bid, L.HASH_BYTES)
        _uint("price", self.price)
        _uint("proof_time", self.proof_time, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Proof(MarketScoped):
    """A winner's delivery notice; the proof travels inline when small, else directly."""

    KIND = Kind.PROOF
    ask: bytes
    proof_hash: bytes
    proof: bytes = b""
    size: int

    def __post_init__(self) -> None:
        MarketScoped.__post_init__(self)
        _raw("ask", self.ask, L.HASH_BYTES)
        _raw("proof_hash", self.proof_hash, L.HASH_BYTES)
        _blob("proof", self.proof, L.MAX_INLINE_PROOF_BYTES)
        _uint("size", self.size)
        if self.proof and (len(self.proof) != self.size or sha256(self.proof) != self.proof_hash):
            raise MessageError("inline proof does not match proof_hash and size")


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt(MarketScoped):
    """The requester's verdict on one winner's work."""

    KIND = Kind.RECEIPT
    ask: bytes
    prover: bytes
    outcome: str

    def __post_init__(self) -> None:
        MarketScoped.__post_init__(self)
        _raw("ask", self.ask, L.HASH_BYTES)
        _raw("prover", self.prover, L.KEY_BYTES)
        _choice("outcome", self.outcome, _OUTCOMES)


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidInputs(MarketScoped):
    """A winner's attestation that the ask's inputs fail the market's input check."""

    KIND = Kind.INVALID_INPUTS
    ask: bytes
    reason: str

    def __post_init__(self) -> None:
        MarketScoped.__post_init__(self)
        _raw("ask", self.ask, L.HASH_BYTES)
        _text("reason", self.reason, L.MAX_TEXT_CHARS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Award(MarketScoped):
    """The requester's signed word on who won one attempt of one round of its ask:
    the commits it names win, whatever commits turn up later (finality, see
    protocols/market-v1.md). `commits` are commit ids, strictly increasing; empty
    means nobody won that attempt."""

    KIND = Kind.AWARD
    ask: bytes
    round: bytes
    attempt: int
    commits: tuple[bytes, ...]

    def __post_init__(self) -> None:
        MarketScoped.__post_init__(self)
        _raw("ask", self.ask, L.HASH_BYTES)
        _raw("round", self.round, L.HASH_BYTES)
        _uint("attempt", self.attempt, 0, MAX_ATTEMPT)
        if type(self.commits) is not tuple or len(self.commits) > L.MAX_REPLICAS:
            raise MessageError(f"commits must be a list of at most {L.MAX_REPLICAS} ids")
        prev = b""
        for item in self.commits:
            _raw("commits", item, L.HASH_BYTES)
            if item <= prev:
                raise MessageError("commits must be sorted and without repeats")
            prev = item


AnyMessage = Market | Bid | Ask | Cancel | Commit | Proof | Receipt | InvalidInputs | Award
AskScoped = Cancel | Commit | Proof | Receipt | InvalidInputs | Award

MESSAGE_TYPES: dict[int, type[Message]] = {}
for _cls in (Market, Bid, Ask, Cancel, Commit, Proof, Receipt, InvalidInputs, Award):
    _cls.FIELD_NAMES = tuple(sorted(f.name for f in fields(_cls)))
    _cls.FIELD_SET = frozenset(_cls.FIELD_NAMES)
    MESSAGE_TYPES[int(_cls.KIND)] = _cls
