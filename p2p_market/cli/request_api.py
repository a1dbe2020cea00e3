"""`p2p-market request --api URL`: buy a proof through a node that is already running.

The ephemeral path (no --api) starts a node of its own for one ask. A requester that
runs a long-lived node (with a [requester] section, so that its role verifies and
receipts what the node's key asks for) should not need a second node and a second
identity: here the ask is signed by that node's key, placed through its control API,
followed by polling the ask's view, and the proofs the role verified are fetched
and verified once more here before they are written. Placing (and cancelling) an ask
and reading its proofs need the node's API token (`--api-token-file`, or
P2P_MARKET_API_TOKEN): the command stops before anything is placed without one.
Confidential asks are not offered on this path: the control API places inline
inputs, and a confidential ask needs the role that holds its inputs (use the
ephemeral path, or the SDK).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

from p2p_market.cli.prover_specs import BadSpec, ProverSpecs
from p2p_market.cli.request_report import Report
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market
from p2p_market.node.api_client import ApiClient, ApiError

POLL_S: Final = 0.25
TERMINAL: Final = frozenset({"proven", "cancelled", "expired", "invalid_inputs"})


class RequestParams(Protocol):
    """What `request` checked from its flags (cli_roles._Request)."""

    market: Market
    inputs: bytes
    max_price: int
    max_proof_time: int
    prefer: str
    replicas: int
    ttl_ms: int
    timeout: float
    discover_timeout: float
    verify_cmd: str | None
    out: Path
    specs: ProverSpecs
    report: Report


def buy_via_api(
    client: ApiClient,
    p: RequestParams,
    *,
    who: Callable[[str], str],
    write_proofs: Callable[[Path, list[bytes]], list[tuple[Path, list[str]]]],
    verify: Callable[[bytes], bool],
) -> int:
    """Exit status: 0 with verified proofs on disk, 1 when the market (or the node)
    did not deliver; ApiError escapes for the caller to report."""
    report = p.report
    mid = market_id(p.market).hex()
    if mid not in {m.get("id") for m in client.markets()}:
        report.note(f"error: the node does not follow market {p.market.name} ({mid[:16]}…)")
        return 2
    found = _wait_for_provers(client, mid, p)
    if not found:
        report.fail(
            f"no prover within your caps (price ≤ {p.max_price}, proof time ≤"
            f" {p.max_proof_time} ms{', that the ask lets win' if p.specs else ''}) appeared"
            f" within {p.discover_timeout:g} s; nothing placed",
            "no_provers",
        )
        return 1
    try:
        allow, deny = p.specs.resolve(b["prover"] for b in client.book(mid).get("bids", []))
    except BadSpec as exc:  # bad input found late: nothing placed
        report.note(f"error: {exc}")
        return 2
    cheapest = min(found, key=lambda b: (b["price"], b["proof_time"]))
    report.note(
        f"found {len(found)} prover(s) within your caps; cheapest: {cheapest['price']} per"
        f" proof, {cheapest['proof_time']} ms"
    )
    report.result["found"] = {"provers": len(found), "cheapest_price": cheapest["price"]}
    lists = {k: v for k, v in (("allow", allow), ("deny", deny)) if v}
    placed = client.place_ask(
        {
            "market": mid,
            "max_price": p.max_price,
            "max_proof_time": p.max_proof_time,
            "prefer": p.prefer,
            "replicas": p.replicas,
            "ttl_ms": p.ttl_ms,
            "inputs": p.inputs.hex(),
            **lists,
        }
    )
    if placed.status != "accept":
        report.fail(f"ask refused: {placed.reason} {placed.detail}".rstrip(), "refused")
        return 1
    ask = placed.id
    report.placed(ask)
    report.line(
        "placed",
        f"ask {ask[:16]}…  max price {p.max_price}, max proof time {p.max_proof_time} ms,"
        f" prefer {p.prefer}" + (f", {p.replicas} replicas" if p.replicas > 1 else ""),
        ask=ask,
    )
    try:
        view = _follow(client, ask, p.timeout, report, who)
    except KeyboardInterrupt:
        view = client.ask(ask)
        note = _cancel_if_unwon(client, ask, view)
        report.fail(f"interrupted{note}", "interrupted")
        return 1
    if view["state"] not in TERMINAL:
        note = _cancel_if_unwon(client, ask, view)
        report.fail(
            f"no verified proof within {p.timeout:g} s (ask {view['state']}){note}", "timeout"
        )
        return 1
    if view["state"] != "proven":
        report.fail(f"the ask ended {view['state']} without a proof", view["state"])
        return 1
    proofs = client.proofs(ask)
    if len(proofs) < p.replicas:
        report.fail(f"the node holds {len(proofs)} of {p.replicas} verified proofs")
        return 1
    bad = [who(prover.hex()) for prover, proof in proofs.items() if not verify(proof)]
    if bad:
        report.fail(f"a proof the node accepted does not verify here: {bad[0]}", "invalid")
        return 1
    written = write_proofs(p.out, list(proofs.values()))
    prices = dict(zip(view["winners"], view["prices"], strict=False))
    report.proven(
        market=mid,
        market_name=p.market.name,
        prices=prices,
        paid=view["paid"],
        proofs=[
            (prover.hex(), str(path), len(proof), files)
            for (prover, proof), (path, files) in zip(proofs.items(), written, strict=True)
        ],
    )
    if report.as_json:
        return 0
    print(f"ask:        {ask}")
    for prover in proofs:
        print(f"prover:     {who(prover.hex())}  paid {prices.get(prover.hex(), '?')}")
    print(f"price paid: {view['paid']}")
    for (path, _), proof in zip(written, proofs.values(), strict=True):
        print(f"proof:      {path} ({len(proof)} bytes, verified)")
    return 0


def _wait_for_provers(client: ApiClient, mid: str, p: RequestParams) -> list[dict[str, Any]]:
    """The bids within the caps of provers the ask lets win, once there is one and
    every start of a key in --allow/--deny matches a bid seen (or at the timeout:
    `resolve` then says which start matched nothing)."""
    deadline = time.monotonic() + p.discover_timeout
    while True:
        book = client.book(mid).get("bids", [])
        bids = [
            b
            for b in book
            if b["price"] <= p.max_price
            and b["proof_time"] <= p.max_proof_time
            and p.specs.admits(b["prover"])
        ]
        seen_all = not p.specs.unmatched(b["prover"] for b in book)
        if (bids and seen_all) or time.monotonic() > deadline:
            return bids
        time.sleep(POLL_S)


def _follow(
    client: ApiClient,
    ask: str,
    timeout: float,
    report: Report,
    who: Callable[[str], str],
) -> dict[str, Any]:
    """Poll the ask's view until it ends or `timeout`; a line per slot change."""
    deadline = time.monotonic() + timeout
    told: dict[tuple[str, int], str] = {}
    while True:
        view = client.ask(ask)
        for i, (prover, price, slot) in enumerate(
            zip(view["winners"], view["prices"], view["slot_states"], strict=True)
        ):
            if told.get((prover, i)) == slot:
                continue
            facts = {"ask": ask, "prover": prover}
            if (prover, i) not in told and slot != "assigned":
                # Every slot was assigned first: a slot that went further between two
                # polls (a fast proof) still shows who won it and at what price.
                report.line("assigned", f"to {who(prover)} at price {price}", **facts, price=price)
            told[(prover, i)] = slot
            text = {
                "assigned": f"to {who(prover)} at price {price}",
                "delivered": f"proof from {who(prover)}",
                "accepted": f"proof from {who(prover)} verified by the node",
                "invalid": f"INVALID proof from {who(prover)}: next round",
                "timed_out": f"{who(prover)} missed its deadline: next round",
                "attested": f"{who(prover)} attests the inputs cannot be proven",
            }.get(slot, slot)
            report.line(slot, text, **facts, **({"price": price} if slot == "assigned" else {}))
        if view["state"] in TERMINAL or time.monotonic() > deadline:
            return view
        time.sleep(POLL_S)


def _cancel_if_unwon(client: ApiClient, ask: str, view: dict[str, Any]) -> str:
    if view["state"] != "open" or view["winners"]:
        return f"; the ask stays {view['state']}"
    try:
        result = client.cancel(ask)
    except ApiError as exc:
        return f"; cancel failed: {exc}"
    return "; the ask is cancelled" if result.status == "accept" else "; cancel refused"
