"""Prometheus metrics of one node, in a registry of its own.

Every name starts with `p2p_market_` (`PREFIX`); docs/metrics.md lists them all with
their types, labels and meaning, and docs/grafana-dashboard.json graphs them (both
checked against a running node by tests/test_docs_metrics.py).

Each `NodeMetrics` owns a `CollectorRegistry`, never the process-wide default, so
several nodes can live in one process (tests, simulations) without sharing values.
`/metrics` is served by the same trio HTTP server as the control API, on its own
local port (`serve_metrics`); prometheus_client's own server is not used (threads).

Label values are bounded, whatever peers send: markets are the followed ones (any
other id counts as "other"), kinds and verdicts come from enums.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

import trio
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import Kind
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Verdict
from p2p_market.node.http import Limits, Request, Response, error_response, serve_http

if TYPE_CHECKING:
    from prometheus_client.metrics import Counter as CounterChild
    from trio_typing import TaskStatus

    from p2p_market.node.sync import SyncReport

OTHER: Final = "other"
BIND_ERRORS: Final = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})
PREFIX: Final = "p2p_market_"

JOB_OUTCOMES: Final = ("delivered", "attested", "failed", "stopped")
"""How a prover's job ends: its proof notice accepted by its node; an invalid-inputs
attestation instead of a proof; a failure (`PROVER_FAILURES`); or stopped because a
reorg took the slot (or the ask is unknown here)."""
PROVER_FAILURES: Final = (
    "inputs_missing",
    "check_error",
    "prove_error",
    "delivery_error",
    "notice_refused",
    "invalid",
    "timed_out",
)
"""Why a prover failed: the first five in its own job (the inputs never came, the
input or size check could not be made, the back-end failed or ran out of time, the
proof could not be sent directly, its node refused the proof notice); the last two
are the requester's receipts about its slot (`invalid`: the proof, or a disputed
attestation; `timed_out`: no proof by the deadline)."""

DELIVERY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ASSIGNMENT_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)
PROVING_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Proofs from a tenth of a second (the example circuits) to ten minutes (zkVMs)."""


def kind_label(kind: Kind | int | str) -> str:
    """ "bid", "ask", ...; "unknown" for anything that is not a protocol kind."""
    if isinstance(kind, str):
        return kind.lower() if kind.upper() in Kind.__members__ else "unknown"
    try:
        return Kind(kind).name.lower()
    except ValueError:
        return "unknown"


def _inc(
    children: dict[tuple[str, ...], CounterChild], counter: Counter, labels: tuple[str, ...]
) -> None:
    """Count one under `labels`, through a cache of the counter's labelled children:
    prometheus_client's `labels` checks and looks up its labels on every call (1.6 %
    of a relay's samples at 640 orders/s, 0.9 % with the cache). The labels are
    bounded (the module's docstring), so the cache is too."""
    child = children.get(labels)
    if child is None:
        child = children[labels] = counter.labels(*labels)
    child.inc()


class NodeMetrics:
    def __init__(self, markets: Iterable[bytes] = ()) -> None:
        self.registry = CollectorRegistry()
        self._markets: set[str] = set()
        self._in_children: dict[tuple[str, ...], CounterChild] = {}
        """The labelled children of `messages_in` (`_inc`); `_out_children` the same
        for `messages_out`."""
        self._out_children: dict[tuple[str, ...], CounterChild] = {}
        r = self.registry
        self.messages_in = Counter(
            "p2p_market_messages_in",
            "Envelopes received, by verdict",
            ["market", "kind", "status", "reason"],
            registry=r,
        )
        self.messages_out = Counter(
            "p2p_market_messages_out", "Envelopes published", ["market", "kind"], registry=r
        )
        self.frames_out = Counter("p2p_market_frames_out", "Gossip frames published", registry=r)
        self.book_bids = Gauge(
            "p2p_market_book_bids", "Current bids in the book", ["market"], registry=r
        )
        self.asks = Gauge(
            "p2p_market_asks", "Stored asks, by state", ["market", "state"], registry=r
        )
        self.peers = Gauge("p2p_market_peers", "Connected peers", registry=r)
        self.sync_runs = Counter(
            "p2p_market_sync_runs", "Sync runs, by outcome", ["outcome"], registry=r
        )
        self.sync_envelopes = Counter(
            "p2p_market_sync_envelopes", "Envelopes fetched by sync", registry=r
        )
        self.sync_bytes = Counter(
            "p2p_market_sync_bytes", "Bytes of the bodies fetched by sync", registry=r
        )
        self.sync_refused = Counter(
            "p2p_market_sync_refused", "Bodies fetched by sync and refused for good", registry=r
        )
        self.sync_refetched = Counter(
            "p2p_market_sync_refetched",
            "Bodies fetched by sync that had been refused for good before (should stay 0)",
            registry=r,
        )
        self.sync_skipped = Counter(
            "p2p_market_sync_skipped",
            "Ids a peer listed that were refused before: not fetched",
            registry=r,
        )
        self.sync_catch_up = Gauge(
            "p2p_market_sync_catch_up_seconds",
            "From the first connection after a time with no peer to the end of the first"
            " sync that reached a peer",
            registry=r,
        )
        self.delivery_latency = Histogram(
            "p2p_market_delivery_latency_seconds",
            "Receive time minus the message's signed timestamp",
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.assignment_latency = Histogram(
            "p2p_market_assignment_latency_seconds",
            "Time from an ask's signed timestamp to its assignment",
            buckets=ASSIGNMENT_BUCKETS,
            registry=r,
        )
        self.reorgs = Counter(
            "p2p_market_reorgs", "Winners changed after settlement", ["market"], registry=r
        )
        # the prover role's (prover()): zero everywhere else
        self.prover_jobs_started = Counter(
            "p2p_market_prover_jobs_started",
            "Slots won that this node's prover started working on",
            ["market"],
            registry=r,
        )
        self.prover_jobs_finished = Counter(
            "p2p_market_prover_jobs_finished",
            "The prover's jobs that ended, by outcome (delivered, attested, failed, stopped)",
            ["market", "outcome"],
            registry=r,
        )
        self.prover_proving = Histogram(
            "p2p_market_prover_proving_seconds",
            "How long the prover's back-end took for each proof it made",
            ["market"],
            buckets=PROVING_BUCKETS,
            registry=r,
        )
        self.prover_failures = Counter(
            "p2p_market_prover_failures",
            "The prover's failures, by reason: its own jobs', and the requester's"
            " invalid and timed_out receipts about its slots",
            ["market", "reason"],
            registry=r,
        )
        self.prover_accepted = Counter(
            "p2p_market_prover_accepted",
            "The prover's slots the requester accepted (paid)",
            ["market"],
            registry=r,
        )
        self.prover_earned = Counter(
            "p2p_market_prover_earned",
            "What the prover earned, in the market's price units: its price times the"
            " ask's size for each accepted slot (pay-as-bid)",
            ["market"],
            registry=r,
        )
        for market in markets:
            self.follow(market)

    # -- label hygiene ----------------------------------------------------------------
    def follow(self, market: bytes) -> None:
        """Count this market under its own label (hex id) from now on; its reorg
        count exists from now on, at zero."""
        self._markets.add(market.hex())
        self.reorgs.labels(market.hex())

    def market_label(self, market: bytes | str) -> str:
        label = market.hex() if isinstance(market, bytes) else market.lower()
        return label if label in self._markets else OTHER

    # -- recording ----------------------------------------------------------------------
    def message_in(self, market: bytes | str, kind: Kind | int | str, verdict: Verdict) -> None:
        labels = (
            self.market_label(market),
            kind_label(kind),
            verdict.status.value,
            verdict.reason.value,
        )
        _inc(self._in_children, self.messages_in, labels)

    def message_out(self, market: bytes | str, kind: Kind | int | str) -> None:
        _inc(self._out_children, self.messages_out, (self.market_label(market), kind_label(kind)))

    def frame_out(self, count: int = 1) -> None:
        self.frames_out.inc(count)

    def set_peers(self, count: int) -> None:
        self.peers.set(count)

    def sync_run(self, outcome: str, envelopes: int = 0) -> None:
        """One sync run ended ("ok", "failed", "timeout", ...: callers use a fixed set)."""
        self.sync_runs.labels(outcome).inc()
        if envelopes:
            self.sync_envelopes.inc(envelopes)

    def sync_report(self, report: SyncReport) -> None:
        self.sync_bytes.inc(report.body_bytes)
        self.sync_refused.inc(report.refused)
        self.sync_refetched.inc(report.refetched)
        self.sync_skipped.inc(report.skipped)

    def caught_up(self, seconds: float) -> None:
        self.sync_catch_up.set(seconds)

    def delivered(self, received_ms: int, signed_ms: int) -> None:
        """A message arrived; a signed time ahead of ours (skew) counts as zero."""
        self.delivery_latency.observe(max(0, received_ms - signed_ms) / 1000)

    def assigned(self, assigned_ms: int, asked_ms: int) -> None:
        self.assignment_latency.observe(max(0, assigned_ms - asked_ms) / 1000)

    def reorg(self, market: bytes | str, count: int = 1) -> None:
        self.reorgs.labels(self.market_label(market)).inc(count)

    # -- the prover role ---------------------------------------------------------------
    def prover(self, market: bytes) -> None:
        """A prover works in `market` here: its series exist from now on, at zero, so
        that rates and sums see them before the first job."""
        self.follow(market)
        label = self.market_label(market)
        self.prover_jobs_started.labels(label)
        self.prover_proving.labels(label)
        self.prover_accepted.labels(label)
        self.prover_earned.labels(label)
        for outcome in JOB_OUTCOMES:
            self.prover_jobs_finished.labels(label, outcome)
        for reason in PROVER_FAILURES:
            self.prover_failures.labels(label, reason)

    def job_started(self, market: bytes | str) -> None:
        self.prover_jobs_started.labels(self.market_label(market)).inc()

    def job_finished(self, market: bytes | str, outcome: str) -> None:
        """A job ended (`JOB_OUTCOMES`; anything else counts as "other")."""
        label = outcome if outcome in JOB_OUTCOMES else OTHER
        self.prover_jobs_finished.labels(self.market_label(market), label).inc()

    def proved(self, market: bytes | str, seconds: float) -> None:
        self.prover_proving.labels(self.market_label(market)).observe(seconds)

    def prover_failed(self, market: bytes | str, reason: str) -> None:
        """A failure (`PROVER_FAILURES`; anything else counts as "other")."""
        label = reason if reason in PROVER_FAILURES else OTHER
        self.prover_failures.labels(self.market_label(market), label).inc()

    def paid(self, market: bytes | str, amount: int) -> None:
        """An accepted slot, paid `amount` (price times size) in the market's units."""
        label = self.market_label(market)
        self.prover_accepted.labels(label).inc()
        self.prover_earned.labels(label).inc(amount)

    def set_book(self, market: bytes | str, bids: int, asks: Mapping[AskState | str, int]) -> None:
        """The book's size now; every ask state is set (absent ones to 0), so a state
        that emptied does not keep its last value."""
        label = self.market_label(market)
        self.book_bids.labels(label).set(bids)
        counts = {(s.value if isinstance(s, AskState) else s): n for s, n in asks.items()}
        for state in AskState:
            self.asks.labels(label, state.value).set(counts.get(state.value, 0))

    def observe_market(self, state: MarketState) -> None:
        """set_book from a core state (call it now and then, e.g. every few ticks)."""
        counts: dict[AskState | str, int] = {}
        for ask_id in state.asks:
            s = state.ask_state(ask_id)
            counts[s] = counts.get(s, 0) + 1
        self.set_book(state.market_id, len(state.book), counts)

    # -- exposition ---------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text exposition format (0.0.4) of this node's registry."""
        return generate_latest(self.registry)

    async def handle(self, request: Request) -> Response:
        """A serve_http handler: `GET /metrics`, nothing else."""
        if request.path != "/metrics":
            return error_response(404, f"no such route: {request.method} {request.path}")
        if request.method != "GET":
            message = f"{request.method} not allowed on /metrics (use GET)"
            return error_response(405, message, headers=(("allow", "GET"),))
        return Response(200, self.render(), CONTENT_TYPE_PLAIN_0_0_4)


async def serve_metrics(
    metrics: NodeMetrics,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: Limits | None = None,
    token: str | None = None,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `GET /metrics`. With `token`, every scrape must carry it as `Authorization:
    Bearer` (Prometheus: `authorization: {credentials_file: …}`): required to bind
    off loopback, where the counters would tell anyone what the node trades.
    ValueError for a non-loopback `host` without a token."""
    from p2p_market.node.api import check_bearer, is_loopback

    handler = metrics.handle
    if token is not None:
        secret = token.encode("ascii")

        async def guarded(request: Request) -> Response:
            refused = check_bearer(request, secret)
            return refused if refused is not None else await metrics.handle(request)

        handler = guarded
    elif not is_loopback(host):
        raise ValueError(f"metrics bind a loopback address only, not {host!r}, without a token")
    try:
        await serve_http(handler, host=host, port=port, limits=limits, task_status=task_status)
    except OSError as exc:
        if exc.errno not in BIND_ERRORS:
            raise
        raise OSError(
            f"cannot serve the metrics on {host}:{port} ({exc.strerror}): choose another"
            " metrics port, or stop what uses it"
        ) from None
