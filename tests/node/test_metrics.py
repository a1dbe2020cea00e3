"""NodeMetrics: a registry per node, bounded labels, `/metrics` over real TCP."""

from __future__ import annotations

import functools
import urllib.error
import urllib.request

import prometheus_client
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from p2p_market.core.envelope import message_id
from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import Kind
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import ACCEPTED, Reason, ignore, reject
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market
from p2p_market.node.metrics import (
    JOB_OUTCOMES,
    PREFIX,
    PROVER_FAILURES,
    NodeMetrics,
    kind_label,
    serve_metrics,
)

NOW = GENESIS_MS + 60_000
MARKET = default_market()
MID = MarketState(MARKET).market_id
TIMEOUT = 15
LABEL_ORDER = ["market", "kind", "status", "reason", "state", "outcome", "le"]


def parse(text: str) -> dict[tuple[object, ...], float]:
    """Exposition text -> {(sample name, *sorted label pairs): value}."""
    return {
        (sample.name, *sorted(sample.labels.items(), key=lambda kv: LABEL_ORDER.index(kv[0]))):
            sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }  # fmt: skip


def value(m: NodeMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_counters_and_gauges_show_in_the_exposition_text() -> None:
    m = NodeMetrics([MID])
    m.message_in(MID, Kind.BID, ACCEPTED)
    m.message_in(MID, Kind.BID, ACCEPTED)
    m.message_in(MID, "ask", reject(Reason.BAD_SIGNATURE))
    m.message_out(MID, Kind.ASK)
    m.frame_out()
    m.frame_out(2)
    m.set_peers(3)
    m.sync_run("ok", envelopes=5)
    m.sync_run("failed")
    m.reorg(MID)
    text = m.render().decode()
    got = parse(text)
    mid = MID.hex()
    received = "p2p_market_messages_in_total"
    assert got[received, ("market", mid), ("kind", "bid"), ("status", "accept"),
               ("reason", "ok")] == 2  # fmt: skip
    assert got[received, ("market", mid), ("kind", "ask"), ("status", "reject"),
               ("reason", "bad_signature")] == 1  # fmt: skip
    assert got["p2p_market_messages_out_total", ("market", mid), ("kind", "ask")] == 1
    assert got["p2p_market_frames_out_total",] == 3
    assert got["p2p_market_peers",] == 3
    assert got["p2p_market_sync_runs_total", ("outcome", "ok")] == 1
    assert got["p2p_market_sync_runs_total", ("outcome", "failed")] == 1
    assert got["p2p_market_sync_envelopes_total",] == 5
    assert got["p2p_market_reorgs_total", ("market", mid)] == 1
    assert "# TYPE p2p_market_delivery_latency_seconds histogram" in text
    assert "# TYPE p2p_market_assignment_latency_seconds histogram" in text


def test_latencies_go_to_histograms_in_seconds() -> None:
    m = NodeMetrics([MID])
    m.delivered(received_ms=NOW + 40, signed_ms=NOW)
    m.delivered(received_ms=NOW, signed_ms=NOW + 500)  # signed "in the future": skew
    m.assigned(assigned_ms=NOW + 3_500, asked_ms=NOW)
    assert value(m, "p2p_market_delivery_latency_seconds_count") == 2
    assert value(m, "p2p_market_delivery_latency_seconds_sum") == pytest.approx(0.04)
    assert value(m, "p2p_market_delivery_latency_seconds_bucket", le="0.01") == 1
    assert value(m, "p2p_market_delivery_latency_seconds_bucket", le="0.05") == 2
    assert value(m, "p2p_market_assignment_latency_seconds_sum") == pytest.approx(3.5)
    assert value(m, "p2p_market_assignment_latency_seconds_bucket", le="3.0") == 0
    assert value(m, "p2p_market_assignment_latency_seconds_bucket", le="5.0") == 1


def test_labels_stay_bounded_whatever_peers_send() -> None:
    m = NodeMetrics([MID])
    stranger = bytes(range(32))
    m.message_in(stranger, Kind.BID, ignore(Reason.WRONG_MARKET))
    m.message_in(MID.hex().upper(), 99, ACCEPTED)
    m.reorg(stranger)
    received = "p2p_market_messages_in_total"
    assert value(
        m, received, market="other", kind="bid", status="ignore", reason="wrong_market"
    ) == 1  # fmt: skip
    assert value(
        m, received, market=MID.hex(), kind="unknown", status="accept", reason="ok"
    ) == 1  # fmt: skip
    assert stranger.hex() not in m.render().decode()
    assert [kind_label(k) for k in (Kind.INVALID_INPUTS, 3, "Commit", "nonsense")] == [
        "invalid_inputs",
        "ask",
        "commit",
        "unknown",
    ]


def test_two_nodes_in_one_process_do_not_share_values() -> None:
    a, b = NodeMetrics([MID]), NodeMetrics([MID])
    for _ in range(3):
        a.message_in(MID, Kind.BID, ACCEPTED)
    b.message_in(MID, Kind.BID, ACCEPTED)
    a.set_peers(7)
    labels = {"market": MID.hex(), "kind": "bid", "status": "accept", "reason": "ok"}
    assert value(a, "p2p_market_messages_in_total", **labels) == 3
    assert value(b, "p2p_market_messages_in_total", **labels) == 1
    assert (value(a, "p2p_market_peers"), value(b, "p2p_market_peers")) == (7, 0)
    # and nothing went to the process-wide default registry
    assert (
        prometheus_client.REGISTRY.get_sample_value("p2p_market_messages_in_total", labels) is None
    )


def test_book_gauges_from_a_real_market_state() -> None:
    state = MarketState(MARKET)
    alice, bob, carol = (Actor(n, MARKET) for n in ("alice", "bob", "carol"))
    for raw in (
        alice.bid(now=NOW, price=5, proof_time=1_000),
        bob.bid(now=NOW, price=6, proof_time=1_000),
        carol.ask(now=NOW, max_price=10, max_proof_time=5_000),
    ):
        assert state.apply(raw, NOW)[0].accepted
    cancelled = carol.ask(now=NOW, max_price=10, max_proof_time=5_000)
    assert state.apply(cancelled, NOW)[0].accepted
    cancel = carol.cancel(now=NOW + 1, ask=message_id(cancelled))
    assert state.apply(cancel, NOW + 1)[0].accepted

    m = NodeMetrics([MID])
    m.observe_market(state)
    assert value(m, "p2p_market_book_bids", market=MID.hex()) == 2
    assert value(m, "p2p_market_asks", market=MID.hex(), state="open") == 1
    assert value(m, "p2p_market_asks", market=MID.hex(), state="cancelled") == 1
    assert value(m, "p2p_market_asks", market=MID.hex(), state="expired") == 0
    # a state that empties goes back to zero rather than keeping its last value
    m.set_book(MID, 0, {AskState.EXPIRED: 2})
    assert value(m, "p2p_market_asks", market=MID.hex(), state="open") == 0
    assert value(m, "p2p_market_asks", market=MID.hex(), state="expired") == 2
    assert value(m, "p2p_market_book_bids", market=MID.hex()) == 0


def fetch(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def test_metrics_are_served_over_http_per_node(nursery: trio.Nursery) -> None:
    a, b = NodeMetrics([MID]), NodeMetrics([MID])
    port_a = await nursery.start(functools.partial(serve_metrics, a))
    port_b = await nursery.start(functools.partial(serve_metrics, b))
    assert port_a != port_b
    a.message_out(MID, Kind.BID)
    a.message_out(MID, Kind.BID)
    b.message_out(MID, Kind.BID)
    key = ("p2p_market_messages_out_total", ("market", MID.hex()), ("kind", "bid"))
    with trio.fail_after(TIMEOUT):
        status, ctype, body = await trio.to_thread.run_sync(
            fetch, f"http://127.0.0.1:{port_a}/metrics"
        )
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        assert parse(body.decode())[key] == 2
        body_b = (await trio.to_thread.run_sync(fetch, f"http://127.0.0.1:{port_b}/metrics"))[2]
        assert parse(body_b.decode())[key] == 1
        # counted between two scrapes: the next scrape shows it
        a.message_out(MID, Kind.BID)
        body = (await trio.to_thread.run_sync(fetch, f"http://127.0.0.1:{port_a}/metrics"))[2]
        assert parse(body.decode())[key] == 3

        status, ctype, body = await trio.to_thread.run_sync(
            fetch, f"http://127.0.0.1:{port_a}/other"
        )
        assert (status, ctype) == (404, "application/json")
        assert body == b'{"error":"no such route: GET /other"}\n'
        status, _, body = await trio.to_thread.run_sync(
            fetch, f"http://127.0.0.1:{port_a}/metrics", "POST"
        )
        assert status == 405 and b"use GET" in body


def test_every_name_has_the_prefix() -> None:
    m = NodeMetrics([MID])
    m.prover(MID)
    families = list(text_string_to_metric_families(m.render().decode()))
    assert families and all(f.name.startswith(PREFIX) for f in families)


def test_the_prover_series_start_at_zero_and_keep_their_labels_bounded() -> None:
    m = NodeMetrics([MID])
    mid = MID.hex()
    assert value(m, "p2p_market_prover_earned_total", market=mid) is None  # not a prover
    m.prover(MID)
    assert value(m, "p2p_market_prover_earned_total", market=mid) == 0
    for outcome in JOB_OUTCOMES:
        assert value(m, "p2p_market_prover_jobs_finished_total", market=mid, outcome=outcome) == 0
    for reason in PROVER_FAILURES:
        assert value(m, "p2p_market_prover_failures_total", market=mid, reason=reason) == 0
    m.job_started(MID)
    m.proved(MID, 0.3)
    m.job_finished(MID, "delivered")
    m.paid(MID, 28)
    m.prover_failed(MID, "a reason nobody listed")
    m.job_finished(bytes(range(32)), "whatever")
    assert value(m, "p2p_market_prover_jobs_started_total", market=mid) == 1
    assert value(m, "p2p_market_prover_proving_seconds_bucket", market=mid, le="0.25") == 0
    assert value(m, "p2p_market_prover_proving_seconds_bucket", market=mid, le="0.5") == 1
    assert value(m, "p2p_market_prover_accepted_total", market=mid) == 1
    assert value(m, "p2p_market_prover_earned_total", market=mid) == 28
    assert value(m, "p2p_market_prover_failures_total", market=mid, reason="other") == 1
    assert value(m, "p2p_market_prover_jobs_finished_total", market="other", outcome="other") == 1
