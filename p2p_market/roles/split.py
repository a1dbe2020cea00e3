"""Split proofs: N segment asks at once, then one aggregation ask over their proofs.

A long computation is cut into segments that different provers prove in parallel;
an aggregation step then proves "every segment proof verifies" and yields the one
proof the requester wanted. `request_segmented` places the N segment asks at once,
waits until every segment proof is verified (and receipted, which pays its prover),
and only then places the aggregation ask, whose inputs are derived canonically from
the segment proofs (`aggregation_inputs`). The aggregation's verified proof is the
final proof. If a segment fails for good (expired, cancelled, invalid inputs) the
aggregation is never placed: `SplitFailed` names the segment, and the segment asks
nobody has won yet are cancelled (nobody is paid for work that cannot be used).

Aggregation inputs: the canonical msgpack (core/codec.py: sorted keys, minimal
encodings) of the map

    {"domain": "p2p-market/aggregate/v1",
     "segments": [[H(inputs_0), proof_0], ..., [H(inputs_{n-1}), proof_{n-1}]]}

in segment order. Why this shape:

- the proofs themselves, not only their hashes: the aggregation prover must read
  them (a recursion circuit verifies each one inside), and the market has no way to
  fetch a proof by hash for a third party; inputs travel inline, or directly to the
  winner when large or confidential, like any ask's;
- each proof with the hash of the inputs it proves: a proof alone does not say
  what it is a proof of; the pair is the statement the recursion checks, and the
  hash keeps a segment's (possibly confidential) inputs out of the aggregation;
- no ask ids, timestamps or prover keys: the aggregate statement depends only on
  what was proven, so anyone holding the segment inputs and proofs recomputes the
  same bytes (and the same `inputs_hash`). The link to the market stays auditable
  all the same: each segment ask's signed `inputs_hash`, and the `proof_hash` of
  its accepted Proof, are in every node's log;
- a domain string, so these bytes cannot be mistaken for other inputs.

With the built-in ``pow`` back-end the aggregation is a pow proof over these
inputs. THIS IS A DEMO of the shape: a pow proof shows work, not that the segment
proofs verify. A real zkVM market would run a recursion (aggregation) program that
verifies each segment proof against its inputs hash and commits to the list; the
requester side is the same.

Why the core does not know the link (no `after`/parents field on Ask): the
aggregation ask cannot even be written before the segment proofs exist, because
its inputs are made of them, so its `inputs_hash` already commits to exactly those
proofs and an extra link would say nothing new. A parent field would also make an
ask's admission or opening depend on other asks' states, which the fold keeps
independent today (order-independence is the property everything rests on), and
would change the wire format and every implementation, for a decision only the
requester needs: provers price and prove an aggregation ask like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgpack
import trio

from p2p_market.core import codec
from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import sha256

if TYPE_CHECKING:
    from p2p_market.roles.requester import RequesterRole

log = logging.getLogger("p2p_market.split")

AGGREGATE_DOMAIN: Final = "p2p-market/aggregate/v1"
MAX_SEGMENTS: Final = 64
"""Segment asks placed at once by one call (the protocol's list bound): a requester
that wants more aggregates in a tree, one level per call."""
HASH_BYTES: Final = 32

_REASONS: Final = {
    AskState.EXPIRED: "expired",
    AskState.CANCELLED: "cancelled",
    AskState.INVALID_INPUTS: "invalid_inputs",
}


class SplitFailed(Exception):
    """A segment (or the aggregation) ended without a verified proof.

    `segment` is the failing segment's index, None when the aggregation failed;
    `ask` its ask id; `reason` is ``expired``, ``cancelled`` or ``invalid_inputs``
    (the SDK's RequestFailed reasons); `segment_asks` every segment ask placed."""

    def __init__(
        self,
        segment: int | None,
        ask: bytes,
        reason: str,
        message: str,
        segment_asks: tuple[bytes, ...],
    ) -> None:
        super().__init__(message)
        self.segment = segment
        self.ask = ask
        self.reason = reason
        self.segment_asks = segment_asks


@dataclass(frozen=True, slots=True)
class SplitProof:
    segment_asks: tuple[bytes, ...]
    """The segment asks' ids, in segment order."""
    segment_proofs: tuple[bytes, ...]
    """Each segment's verified proof, in segment order."""
    aggregation_ask: bytes
    aggregation_inputs: bytes
    """`aggregation_inputs(...)` of the segments: what the final proof is about."""
    proof: bytes
    """The aggregation's verified proof: the final proof."""


def aggregation_inputs(segments: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The aggregation ask's inputs for (inputs hash, proof) pairs in segment order
    (see the module docstring). ValueError for a malformed pair."""
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        raise ValueError(f"between 1 and {MAX_SEGMENTS} segments, not {len(segments)}")
    pairs = []
    for digest, proof in segments:
        if type(digest) is not bytes or len(digest) != HASH_BYTES or type(proof) is not bytes:
            raise ValueError("a segment is (32-byte inputs hash, proof bytes)")
        pairs.append([digest, proof])
    return codec.pack_map({"domain": AGGREGATE_DOMAIN, "segments": pairs})


def parse_aggregation_inputs(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (inputs hash, proof) pairs of canonical aggregation inputs; ValueError
    unless `data` is exactly what `aggregation_inputs` writes for them. For a
    verifier or an aggregation prover to read the statement it works on."""
    try:
        body = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_bin_len=len(data),
            max_str_len=len(AGGREGATE_DOMAIN),
            max_array_len=MAX_SEGMENTS,
            max_map_len=2,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not aggregation inputs: {exc}") from None
    if type(body) is not dict or set(body) != {"domain", "segments"}:
        raise ValueError("not aggregation inputs: want a map of domain and segments")
    if body["domain"] != AGGREGATE_DOMAIN or type(body["segments"]) is not tuple:
        raise ValueError("not aggregation inputs: wrong domain or segments")
    pairs = []
    for item in body["segments"]:
        if type(item) is not tuple or len(item) != 2:
            raise ValueError("not aggregation inputs: a segment is a pair")
        pairs.append((item[0], item[1]))
    if aggregation_inputs(pairs) != data:
        raise ValueError("not aggregation inputs: not canonically encoded")
    return pairs


def _failure(role: RequesterRole, market: bytes, ask: bytes) -> tuple[str, str]:
    """(reason, one line) for an ask of ours that ended without being proven."""
    view = role.node.states[market].view(ask)
    tracked = role.asks[ask]
    reason = _REASONS.get(view.state, view.state.value)
    if view.state is AskState.INVALID_INPUTS:
        why = next(iter(tracked.attested.values()), "")
        return reason, "a prover attested that the inputs cannot be proven" + (
            f": {why}" if why else ""
        )
    if view.state is AskState.CANCELLED:
        return reason, "the ask was cancelled"
    return reason, (
        f"the ask {view.state.value} before it was proven ({len(tracked.proofs)} of"
        f" {view.ask.replicas} proofs verified)"
    )


def _proof_of(role: RequesterRole, market: bytes, ask: bytes) -> bytes | None:
    """A proven ask's proof: that of its first accepted winner (assignment order,
    the same on every node), so replicas > 1 still give one definite proof."""
    view = role.node.states[market].view(ask)
    if view.state is not AskState.PROVEN:
        return None
    proofs = role.asks[ask].proofs
    return next((proofs[p] for p in view.accepted if p in proofs), None)


async def _cancel_unassigned(role: RequesterRole, market: bytes, asks: Sequence[bytes]) -> None:
    """Cancel the asks nobody has won yet; the rest cannot be cancelled any more
    (a cancel after an assignment has no effect) and run to their end."""
    state = role.node.states[market]
    for ask in asks:
        view = state.view(ask)
        if view.state is AskState.OPEN and not view.winners:
            await role.cancel(ask)


async def _first_done(role: RequesterRole, asks: Sequence[bytes]) -> list[int]:
    """Indexes of `asks` in the order they finish, stopping at the first that did
    not end PROVEN (the rest are then left running)."""
    send, receive = trio.open_memory_channel[int](len(asks))
    order: list[int] = []

    async def watch(i: int) -> None:
        await role.asks[asks[i]].done.wait()
        send.send_nowait(i)

    async with trio.open_nursery() as nursery:
        for i in range(len(asks)):
            nursery.start_soon(watch, i)
        for _ in asks:
            i = await receive.receive()
            order.append(i)
            market = role.asks[asks[i]].market
            if role.node.states[market].view(asks[i]).state is not AskState.PROVEN:
                break
        nursery.cancel_scope.cancel()
    return order


async def request_segmented(
    role: RequesterRole,
    fields: dict[str, Any],
    segments: Sequence[bytes],
    *,
    aggregate_fields: dict[str, Any] | None = None,
    on_placed: Callable[[bytes], None] | None = None,
) -> SplitProof:
    """Prove each of `segments` (inputs) under one ask each, all at once, then the
    aggregation over their proofs (see the module docstring). `fields` are those of
    `RequesterRole.request` and apply to every ask; `aggregate_fields` override them
    for the aggregation ask (e.g. a longer max_proof_time). `on_placed` is told each
    ask id as soon as it is placed (the SDK uses it to cancel on a timeout).

    SplitFailed if a segment or the aggregation ends unproven; ValueError if an ask
    is refused (the segment asks already placed are then cancelled if unassigned)."""
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        raise ValueError(f"between 1 and {MAX_SEGMENTS} segments, not {len(segments)}")
    market = bytes.fromhex(str(fields["market"]))
    placed: list[bytes] = []
    try:
        for inputs in segments:
            ask = await role.request(fields, inputs)
            placed.append(ask)
            if on_placed is not None:
                on_placed(ask)
    except ValueError:
        await _cancel_unassigned(role, market, placed)
        raise
    asks = tuple(placed)
    n = len(asks)
    order = await _first_done(role, asks)
    proofs = {i: _proof_of(role, market, asks[i]) for i in order}
    failed = next((i for i in order if proofs[i] is None), None)
    if failed is not None:
        await _cancel_unassigned(role, market, [a for i, a in enumerate(asks) if i not in order])
        reason, why = _failure(role, market, asks[failed])
        raise SplitFailed(
            failed,
            asks[failed],
            reason,
            f"segment {failed} of {n} (ask {asks[failed].hex()}): {why}",
            asks,
        )
    segment_proofs = tuple(proofs[i] or b"" for i in range(n))
    agg_inputs = aggregation_inputs(
        [(sha256(s), p) for s, p in zip(segments, segment_proofs, strict=True)]
    )
    log.info("%d segment proofs verified; placing the aggregation ask", n)
    agg = await role.request({**fields, **(aggregate_fields or {})}, agg_inputs)
    if on_placed is not None:
        on_placed(agg)
    await role.wait(agg)
    final = _proof_of(role, market, agg)
    if final is None:
        reason, why = _failure(role, market, agg)
        raise SplitFailed(None, agg, reason, f"aggregation (ask {agg.hex()}): {why}", asks)
    return SplitProof(asks, segment_proofs, agg, agg_inputs, final)
