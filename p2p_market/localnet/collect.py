"""What a run observes: the requesters' ask events (their workload logs), samples of
every node's counters (control API /v1/stats) and of its CPU and memory (psutil),
and at the end every node's view of the market (book and /check)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from p2p_market.node.api_client import ApiClient, ApiError

TERMINAL = frozenset({"proven", "expired", "cancelled", "invalid_inputs"})


@dataclass
class SlotTrack:
    prover: str
    price: int
    assigned_t: int
    end_t: int | None = None
    outcome: str = "assigned"  # assigned | delivered | verified | rejected | timed_out
    verify_ms: int | None = None
    """How long the requester's verifier took over this slot's proof, if it judged one."""


@dataclass
class AskTrack:
    """One ask, as its requester saw it (times are wall-clock ms)."""

    id: str
    requester: str
    placed_t: int
    ts: int
    """The ask's signed timestamp."""
    max_price: int
    max_proof_time: int
    prefer: str
    replicas: int
    confidential: bool
    ttl_ms: int
    state: str = "open"
    timeline: list[tuple[int, str]] = field(default_factory=list)
    assigned_t: int | None = None
    proven_t: int | None = None
    slots: dict[str, SlotTrack] = field(default_factory=dict)

    @property
    def expires_t(self) -> int:
        return self.ts + self.ttl_ms


class EventTail:
    """New complete lines of a JSONL file, from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out


class AskBook:
    """Every ask of the run, from the requesters' event logs."""

    def __init__(self) -> None:
        self.asks: dict[str, AskTrack] = {}
        self.refused = 0
        self.verified: list[int] = []
        """Times of accepted proofs (for proofs/s)."""
        self._early: dict[str, list[dict[str, Any]]] = {}

    def feed(self, requester: str, records: list[dict[str, Any]]) -> None:
        for r in records:
            kind = r.get("kind")
            if kind == "refused":
                self.refused += 1
                continue
            ask = r.get("ask")
            if not isinstance(ask, str) or not isinstance(r.get("t"), int):
                continue
            if kind == "placed":
                if ask in self.asks:
                    continue
                track = AskTrack(
                    id=ask,
                    requester=requester,
                    placed_t=r["t"],
                    ts=int(r.get("ts") or r["t"]),
                    max_price=int(r.get("max_price", 0)),
                    max_proof_time=int(r.get("max_proof_time", 0)),
                    prefer=str(r.get("prefer", "cost")),
                    replicas=int(r.get("replicas", 1)),
                    confidential=bool(r.get("confidential", False)),
                    ttl_ms=int(r.get("ttl_ms", 0)),
                )
                track.timeline.append((track.ts, "open"))
                self.asks[ask] = track
                for early in self._early.pop(ask, []):
                    self._event(track, early)
            elif ask in self.asks:
                self._event(self.asks[ask], r)
            else:  # an event logged before its ask's line (a restart): keep for later
                self._early.setdefault(ask, []).append(r)

    def _event(self, a: AskTrack, r: dict[str, Any]) -> None:
        t, kind = int(r["t"]), r["kind"]
        prover = str(r.get("prover", ""))
        if kind == "assigned":
            if a.assigned_t is None:
                a.assigned_t = t
            if prover not in a.slots:
                a.slots[prover] = SlotTrack(prover, int(r.get("price", 0)), t)
        elif kind in ("delivered", "verified", "rejected", "timed_out"):
            slot = a.slots.get(prover)
            if slot is not None and slot.outcome in ("assigned", "delivered"):
                slot.outcome = kind
                if kind != "delivered":
                    slot.end_t = t
                if type(r.get("verify_ms")) is int:
                    slot.verify_ms = r["verify_ms"]
            if kind == "verified":
                self.verified.append(t)
        elif kind == "state":
            state = str(r.get("state", ""))
            if state and state != a.state and a.state not in TERMINAL:
                a.state = state
                a.timeline.append((t, state))
                if state == "proven" and a.proven_t is None:
                    a.proven_t = t

    def by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self.asks.values():
            counts[a.state] = counts.get(a.state, 0) + 1
        return counts

    def unfinished(self, now_ms: int) -> int:
        """Asks not ended that still could: an ask its requester saw no end of (it was
        down at the time, say) counts until its expiry plus its proof-time cap."""
        return sum(
            1
            for a in self.asks.values()
            if a.state not in TERMINAL and now_ms < a.expires_t + a.max_proof_time
        )


@dataclass
class Sample:
    t: float
    """Seconds since the run started."""
    node: str
    up: bool
    cpu: float = 0.0
    """Percent of one core since the previous sample."""
    rss: int = 0
    frames: int = 0
    """Gossip frames published, cumulative over the node's restarts."""
    envelopes: int = 0
    """Envelopes published in those frames, cumulative."""
    outbound_waits: int = 0
    peers: int = 0


class Counters:
    """Cumulative counters of one node across restarts (each process starts at 0)."""

    def __init__(self) -> None:
        self.carried: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.pid: int | None = None

    def update(self, pid: int, values: dict[str, int]) -> dict[str, int]:
        if pid != self.pid:
            for k, v in self.last.items():
                self.carried[k] = self.carried.get(k, 0) + v
            self.last = {}
            self.pid = pid
        self.last.update(values)
        return self.total()

    def total(self) -> dict[str, int]:
        keys = set(self.carried) | set(self.last)
        return {k: self.carried.get(k, 0) + self.last.get(k, 0) for k in keys}


class ProcessStats:
    """CPU and memory of each node's current process (psutil)."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def measure(self, pid: int | None) -> tuple[float, int]:
        if pid is None:
            return 0.0, 0
        try:
            proc = self._procs.get(pid)
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
                proc.cpu_percent(None)  # the first call starts the interval
                return 0.0, proc.memory_info().rss
            return proc.cpu_percent(None), proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._procs.pop(pid, None)
            return 0.0, 0


def fetch_stats(api: ApiClient) -> dict[str, Any] | None:
    try:
        return api._object(api.request("GET", "/v1/stats"))
    except ApiError:
        return None


class ProveTimes:
    """The proofs each prover node made and how long its back-end took (ms), from
    the timings its status shows (the prover role keeps its latest ones). Keyed by
    (ask, start), so that polling again, or a restart, counts no proof twice."""

    def __init__(self) -> None:
        self.by_node: dict[str, dict[tuple[str, int], int]] = {}

    def feed(self, node: str, status: dict[str, Any] | None) -> None:
        prover = (status or {}).get("prover")
        times = prover.get("prove_times") if isinstance(prover, dict) else None
        mine = self.by_node.setdefault(node, {})
        for t in times if isinstance(times, list) else []:
            if not isinstance(t, dict):
                continue
            ask, started, ms = t.get("ask"), t.get("started"), t.get("ms")
            if isinstance(ask, str) and type(started) is int and type(ms) is int:
                mine[(ask, started)] = ms

    def of(self, node: str) -> list[int]:
        return list(self.by_node.get(node, {}).values())


def fetch_status(api: ApiClient) -> dict[str, Any] | None:
    try:
        return api.status()
    except ApiError:
        return None


def fetch_check(api: ApiClient, market: str) -> dict[str, Any] | None:
    try:
        return api._object(api.request("GET", f"/v1/markets/{market}/check"))
    except ApiError:
        return None


def fetch_book(api: ApiClient, market: str) -> dict[str, Any] | None:
    try:
        return api.book(market)
    except ApiError:
        return None
