"""The control API's request and response bodies, as pydantic models: what FastAPI
checks requests against and what the OpenAPI document (`GET /openapi.json`) shows.

Request bodies are strict: known field names only (a typo is an error, not a
default), JSON types exact (no "7" for 7, no true for 1), hex strings well-formed.
Their failures are told in the API's one line (`explain`), the same words the
hand-written checks used before, so clients and scripts see no change. Which
fields an order needs and what their values may be is the node's judgement (the
facade): the models only say what the node reads.

Response models document the answers; the handlers render their JSON themselves
(node/api.py), and the schemathesis test checks the two agree on a real node.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    create_model,
)

from p2p_market.core import limits as L

HEX_PATTERN: Final = r"^(?:[0-9a-fA-F]{2})*$"
ID_PATTERN: Final = r"^[0-9a-fA-F]{64}$"
MAX_DIAL: Final = 64
"""Addresses one POST /v1/peers may ask the node to dial (it dials them at once)."""
MAX_INT: Final = 2**53
"""Integers the node reads: non-negative, and below what a JSON number carries
exactly everywhere (a millisecond time stays far below it for millennia)."""

Hex = Annotated[StrictStr, Field(pattern=HEX_PATTERN)]


def _integral(value: Any) -> Any:
    """A JSON number with no fraction (7.0) is the integer it names, as JSON Schema
    says; 7.5, "7" and true are still not integers."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


Count = Annotated[StrictInt, BeforeValidator(_integral)]

# What each field of an order is, by its name: the one table the models and the
# error messages come from.
_STR, _INT, _BOOL, _HEXSTR, _HEXLIST, _PREFER = "text", "integer", "boolean", "hex", "hexes", "p"
_TYPES: Final[dict[str, Any]] = {
    _STR: StrictStr,
    _INT: Count,
    _BOOL: StrictBool,
    _HEXSTR: Hex,
    _HEXLIST: list[Hex],
    _PREFER: Literal["cost", "time"],
}
_ARTICLE: Final = {
    _HEXSTR: "a hex string",
    _HEXLIST: "a list of hex strings",
    _INT: "an integer",
    _BOOL: "a boolean",
    _STR: "a text",
    _PREFER: "a text",
}

BID_FIELDS: Final[dict[str, str]] = {
    "market": _HEXSTR,
    "price": _INT,
    "proof_time": _INT,
    "capacity": _INT,
    "ttl_ms": _INT,
    "max_size": _INT,
}
ASK_FIELDS: Final[dict[str, str]] = {
    "market": _HEXSTR,
    "max_price": _INT,
    "max_proof_time": _INT,
    "prefer": _PREFER,
    "replicas": _INT,
    "size": _INT,
    "ttl_ms": _INT,
    "inputs": _HEXSTR,
    "inputs_hash": _HEXSTR,
    "confidential": _BOOL,
    "allow": _HEXLIST,
    "deny": _HEXLIST,
}
BID_UPDATE_FIELDS: Final[dict[str, str]] = {
    "price": _INT,
    "proof_time": _INT,
    "capacity": _INT,
    "max_size": _INT,
    "bid_ttl_ms": _INT,
}
_KEY_HEX: Final = {"min_length": 2 * L.KEY_BYTES, "max_length": 2 * L.KEY_BYTES}
BOUNDS: Final[dict[str, dict[str, Any]]] = {
    "market": {"min_length": 2 * L.HASH_BYTES, "max_length": 2 * L.HASH_BYTES},
    "inputs_hash": {"min_length": 2 * L.HASH_BYTES, "max_length": 2 * L.HASH_BYTES},
    "inputs": {"max_length": 2 * L.MAX_INLINE_INPUT_BYTES},
    "proof_time": {"ge": 1},
    "max_proof_time": {"ge": 1},
    "capacity": {"ge": 1, "le": L.MAX_CAPACITY},
    "replicas": {"ge": 1, "le": L.MAX_REPLICAS},
    "size": {"ge": 1, "le": L.MAX_SIZE},
    "max_size": {"ge": 1, "le": L.MAX_SIZE},
    "ttl_ms": {"ge": 1},
    "bid_ttl_ms": {"ge": 1_000, "le": L.MAX_LIFETIME_MS},
    "allow": {"max_length": L.MAX_LIST_ITEMS},
    "deny": {"max_length": L.MAX_LIST_ITEMS},
}
"""What the messages themselves allow of each field (core/messages.py, limits.py),
told in the document so that a client (and schemathesis) knows before asking. The
node still judges what depends on several fields (inputs against inputs_hash and
size) and on its state (an unknown market is a 404)."""
_STRICT: Final = ConfigDict(extra="forbid", strict=True)


def _no_default(schema: dict[str, Any]) -> None:
    """An optional field has no default in the document: the node's default applies
    when it is absent, and null is not a value it takes."""
    schema.pop("default", None)


def _unique_no_default(schema: dict[str, Any]) -> None:
    """A key list (allow, deny) without repeats, and no default."""
    _no_default(schema)
    schema["uniqueItems"] = True


def _field(name: str, kind: str, required: bool) -> tuple[Any, Any]:
    """(type, Field) of one order field: its JSON type, its bounds, required or not."""
    bounds = {k: v for k, v in BOUNDS.get(name, {}).items() if k != "json_schema_extra"}
    if kind == _INT:
        bounds = {"ge": 0, "le": MAX_INT, **bounds}
    kind_type = _TYPES[kind]
    extra: Any = _no_default
    if kind == _HEXLIST:
        kind_type = list[Annotated[Hex, Field(**_KEY_HEX)]]
        extra = _unique_no_default
    if required:
        return kind_type, Field(..., **bounds)
    return kind_type, Field(default=None, json_schema_extra=extra, **bounds)


def _order(
    name: str,
    fields: dict[str, str],
    required: tuple[str, ...],
    doc: str,
    config: ConfigDict = _STRICT,
) -> Any:
    spec: dict[str, Any] = {
        field: _field(field, kind, field in required) for field, kind in fields.items()
    }
    model = create_model(name, __config__=config, __doc__=doc, **spec)
    model.kinds = fields
    return model


BidFields = _order(
    "BidFields",
    BID_FIELDS,
    ("market", "price", "proof_time"),
    "A Bid for the node to sign with its key: market id hex, price, proof_time (ms),"
    " capacity, ttl_ms, max_size.",
)
AskFields = _order(
    "AskFields",
    ASK_FIELDS,
    ("market", "max_price", "max_proof_time"),
    "An Ask for the node to sign with its key; inputs hex (or only inputs_hash hex).",
)

BidUpdate = _order(
    "BidUpdate",
    BID_UPDATE_FIELDS,
    (),
    "New terms for the prover role's bid, any of: price (per unit of work), proof_time"
    " (ms), capacity (proofs at once), max_size, bid_ttl_ms; the others stay.",
    ConfigDict(**_STRICT, json_schema_extra={"minProperties": 1}),
)


class EnvelopeBody(BaseModel):
    """An envelope signed elsewhere, its bytes in hex."""

    model_config = _STRICT
    hex: Annotated[Hex, Field(min_length=2)]
    shape: ClassVar[str] = 'a JSON envelope must be {"hex": "<envelope bytes in hex>"}'


class EmptyBody(BaseModel):
    """No fields: the request says it all (pause, resume, withdraw)."""

    model_config = _STRICT
    shape: ClassVar[str] = "the body must be {}"


class PeersBody(BaseModel):
    """Full multiaddrs (with /p2p/<peer id>) for the node to dial now and keep."""

    model_config = _STRICT
    addrs: Annotated[list[StrictStr], Field(min_length=1, max_length=MAX_DIAL)]
    shape: ClassVar[str] = 'the body must be {"addrs": [multiaddr, ...]}'


# -- the one-line explanations -----------------------------------------------------
def explain(model: Any, errors: list[dict[str, Any]], body: Any) -> str:
    """The first failure of a body, in one line (the field the client wrote first)."""
    fields = body if isinstance(body, dict) else {}
    order = {name: i for i, name in enumerate(fields)}
    # Present fields in the client's order, then missing ones in the model's.
    in_body = [e for e in errors if len(e["loc"]) > 1 and e["loc"][1] in order]
    missing = [e for e in errors if e not in in_body]
    in_body.sort(key=lambda e: order[e["loc"][1]])
    for error in [*in_body, *missing]:
        loc = error["loc"]
        if len(loc) < 2:
            return "the body must be a JSON object"
        return _explain_one(model, str(loc[1]), error["type"], fields.get(loc[1]))
    return "bad request body"


def _explain_one(model: Any, name: str, kind: str, value: Any) -> str:
    shape = getattr(model, "shape", None)
    if model is PeersBody and kind not in ("missing", "extra_forbidden", "list_type"):
        return f"addrs must be 1 to {MAX_DIAL} multiaddr strings"
    if shape is not None and kind in ("missing", "extra_forbidden", "list_type"):
        return str(shape)
    if model is EnvelopeBody and value == "":
        return "empty envelope"
    kinds: dict[str, str] = getattr(model, "kinds", {"hex": _HEXSTR})
    if kind == "extra_forbidden":
        return f"unknown field: {name} (known: {', '.join(kinds)})"
    if kind == "missing":
        return f"missing field: {name}"
    if kind in ("greater_than_equal", "less_than_equal") and type(value) is int:
        bounds = BOUNDS.get(name, {})
        return f"{name}={value} outside [{bounds.get('ge', 0)}, {bounds.get('le', MAX_INT)}]"
    if kind == "too_long":  # a key list
        return f"{name} must be a list of at most {L.MAX_LIST_ITEMS} keys"
    if kind in ("string_too_short", "string_too_long") and _is_hex(value):
        bounds = BOUNDS.get(name, {})
        if bounds.get("min_length") == bounds.get("max_length") is not None:
            return f"{name} must be {bounds['min_length']} hex characters, not {len(value)}"
        return f"{name} must be at most {bounds.get('max_length')} hex characters"
    listed = isinstance(value, list) and all(_is_hex(v) for v in value)
    if kind in ("string_too_short", "string_too_long") and listed:
        return f"{name} must be a list of {2 * L.KEY_BYTES}-character hex keys"
    if kind == "literal_error" and type(value) is str:
        return f"{name} must be one of ['cost', 'time']"
    return f"{name} must be {_ARTICLE.get(kinds.get(name, _STR), 'valid')}, not {_shown(value)}"


def _is_hex(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(HEX_PATTERN, value) is not None


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- answers (documentation; handlers render them) ---------------------------------
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    """Every error: one line, naming what is wrong."""

    error: str


class SubmittedBody(BaseModel):
    """The node's verdict on a submission: 200 whatever it is (an ignored or rejected
    envelope is an answer, not an HTTP error); 507 or 503 with "error" when the node
    could not write it to its log."""

    id: str
    status: Literal["accept", "ignore", "reject"]
    reason: str
    detail: str
    error: str | None = None


class StatusBody(_Open):
    """Node identity, addresses, peers, markets, uptime, storage and what its roles
    tell (more keys than these, by role)."""

    public_key: str
    peers: int
    markets: list[str]


class MarketsBody(BaseModel):
    markets: list[dict[str, Any]]


class BidView(_Open):
    id: str
    prover: str
    price: int
    proof_time: int
    capacity: int
    max_size: int
    timestamp: int
    expires_at: int
    seq: int


class AskView(BaseModel):
    id: str
    market: str
    requester: str
    state: str
    timestamp: int
    max_price: int
    max_proof_time: int
    prefer: str
    replicas: int
    size: int
    expires_at: int
    inputs_hash: str
    inputs_size: int
    confidential: bool
    allow: list[str]
    deny: list[str]
    nonce: int
    winners: list[str]
    prices: list[int]
    slot_states: list[str]
    accepted: list[str]
    paid: int


class BookBody(BaseModel):
    bids: list[BidView]
    asks: list[AskView]


class ProofsBody(BaseModel):
    """Verified proofs of one of the node's asks: prover key hex -> proof hex."""

    proofs: dict[str, str]


class StatsBody(BaseModel):
    now: int
    admitted: int
    reasons: dict[str, int]
    peers: int
    gossip: dict[str, int]
    published: dict[str, int]


class CheckBody(BaseModel):
    market: str
    now: int
    state_hash: str
    violations: list[str]
    reorgs: int
    bids: int
    asks: dict[str, int]
    ask_envelopes: dict[str, int]
    fold: dict[str, int]
    """How the node's settlement fold kept up (MarketState.fold_stats): rebuilds
    from scratch (`refolds`, of which `conflicts`), windows `reopened`, asks
    `replayed` alone, items folded `in_place`. Local, not part of the agreement."""


class PeersDialled(BaseModel):
    dialled: int
    failed: dict[str, str]
    peers: int


# -- the console's reads (node/console_views.py) -------------------------------------
class TimelineStep(BaseModel):
    """One step of an ask's life: `t` the signed (or settled) time in ms, `step` its
    kind (placed, committed, assigned, delivered, verified, receipted, reassigned,
    attested, cancel, state), `who` the key it is about (hex, or empty), `detail`
    its figures (price, deadline, outcome, the new state, ...)."""

    t: int
    step: str
    who: str
    detail: dict[str, Any]


class AskTimeline(AskView):
    timeline: list[TimelineStep]


class AsksBody(BaseModel):
    """A market's asks, newest first, each with its timeline."""

    asks: list[AskTimeline]


class ProverEvidence(BaseModel):
    equivocations: int
    invalid_proofs: int
    penalised: bool


class ProverRow(_Open):
    """A prover's current bid (null without one), its load and earnings as the
    stored messages tell, and the evidence against it (`reputation`, when the node
    has a requester role: its receipts' view)."""

    prover: str
    bid: str | None
    price: int | None
    proof_time: int | None
    capacity: int | None
    expires_at: int | None
    load: int
    assigned: int
    accepted: int
    invalid: int
    timed_out: int
    earned: int
    evidence: ProverEvidence


class ProversBody(BaseModel):
    provers: list[ProverRow]


class PeerRow(BaseModel):
    peer: str
    addrs: list[str]
    rtt_ms: int | None
    rejected_frames: int


class PeersView(BaseModel):
    """Connected peers and gossip health: frame counters, liveness figures, event
    stream clients."""

    peers: list[PeerRow]
    gossip: dict[str, int]
    liveness: dict[str, int]
    event_clients: int


class ProverBid(BaseModel):
    """The prover role's bid: the terms it signs and re-posts, and its state."""

    market: str
    state: Literal["active", "paused", "withdrawn"]
    price: int
    proof_time: int
    capacity: int
    max_size: int
    bid_ttl_ms: int
    running: int
    """Proofs the prover runs at once now (its limiter: the capacity, or a larger
    one it lowered from, until the work committed under that is done)."""
    bid: str | None
    """The id of the prover's current bid in this node's book (a withdrawal bid while
    paused), if any."""


class ProverBidChanged(ProverBid):
    """The bid after a change; `submitted`: the node's verdict on the bid it signed
    for it (null if none was signed), `kept`: whether the change was written to the
    role store for the next start."""

    kept: bool
    submitted: SubmittedBody | None


class ProverJob(BaseModel):
    ask: str
    state: str
    price: int
    committed: int
    deadline: int | None
    started: int | None
    prove_ms: int | None
    earned: int


class ProverJobs(BaseModel):
    """The prover's latest jobs, the newest first (memory only: since the node
    started)."""

    market: str
    running: int
    jobs: list[ProverJob]


class MarketEarnings(BaseModel):
    market: str
    earned: int
    paid_proofs: int


class ProverEarnings(BaseModel):
    """What the requesters' receipts paid this prover since the node started
    (pay-as-bid: price per unit times size, for an accepted slot only)."""

    earned: int
    paid_proofs: int
    markets: list[MarketEarnings]
