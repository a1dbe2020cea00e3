"""The report folder of a run: `summary.json`, PNG plots (matplotlib, Agg backend: no
display needed) and an `index.html` that shows them.

Where each number comes from:
- asks placed / refused, latencies: the requesters' own event logs (roles/workload.py):
  assignment latency = first "assigned" seen by the requester node minus the ask's
  signed timestamp; completion latency = the ask turning PROVEN there, minus the same.
- final states, winners, prices, reassignments: the reference node's book (an honest
  node that was never faulted, a relay if there is one) after the run settled; for an
  ask the reference node does not hold, its requester's own log.
- the ask counts, each ask counted once from one view (the reference node's, else its
  requester's), so that they nest (placed >= assigned >= proven):
    placed    every ask a requester logged as placed;
    assigned  every ask that ever had a winner: a slot in its final view (a failed
              slot stays listed), an assignment its requester logged, or a final
              state that implies one (assigned, proven): so every proven ask;
    proven    final state PROVEN (k accepted proofs).
  (Before, "assigned" came from the reference node's book only and "proven" from
  either source: an ask the reference node lacked counted as proven, not assigned.)
- envelopes per completed ask: on the reference node, the ask plus every message
  about it that the market kept (commits, proof notices, receipts, attestations).
- frames/s, envelopes/frame: each node's gossip counters (/v1/stats), summed.
- CPU (% of one core) and memory: psutil, sampled every 2 s per node process.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from p2p_market.localnet.collect import AskTrack
    from p2p_market.localnet.rundata import RunData

FRAME_CAPACITY: Final = 56.0
"""Measured here: 10 node processes on 2 cores carried 56 one-envelope gossip frames/s
in total (`bench net --nodes 10`, its unbatched rate; 17-18 before the transport work
of docs/transport.md)."""
TRANSPORT_SHARE: Final = 0.8
"""A run whose busiest 10 s reached this share of the capacity is transport-bound."""
SLOT_WAIT_SHARE: Final = 0.05
"""A run whose provers stood back for want of a free slot in more attempts than this
share of the asks placed is bound by their capacity."""
CORES: Final = 2
WINDOW_S: Final = 10.0
STATES: Final = ("open", "assigned", "proven", "expired", "cancelled", "invalid_inputs")
COLOURS: Final = {
    "open": "#9ecae1",
    "assigned": "#fdae6b",
    "proven": "#74c476",
    "expired": "#bdbdbd",
    "cancelled": "#fb6a4a",
    "invalid_inputs": "#9e9ac8",
}
PLOTS: Final = (
    ("latency_cdf.png", "Latency CDFs: ask signed → assigned / proven, at the requester"),
    ("asks_over_time.png", "Asks over time, by state (as their requesters saw them)"),
    ("provers.png", "Prover utilisation and earnings"),
    ("price_vs_caps.png", "Price paid vs the ask's price cap"),
    ("transport.png", "Gossip frames/s and CPU per node"),
)


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def times_text(times: dict[str, Any]) -> str:
    """ "p50 / p99" of `_times`, or "-" when there were none."""
    return "-" if not times["n"] else f"{times['p50']} / {times['p99']}"


def _times(ms: list[int]) -> dict[str, Any]:
    """p50 / p99 (nearest rank, so whole ms) of some durations, and how many."""
    values: list[float] = list(ms)
    return {"p50": quantile(values, 0.5), "p99": quantile(values, 0.99), "n": len(ms)}


# -- summary ---------------------------------------------------------------------------


def reference(data: RunData) -> str | None:
    """The node whose book the summary reads: honest, never faulted, answered."""
    answered = {f.name for f in data.finals if f.book is not None and f.honest}
    candidates = [n for n in data.nodes if n.name in answered]
    for pick in (
        [n for n in candidates if not n.faulted and n.spec.role == "relay"],
        [n for n in candidates if not n.faulted],
        candidates,
    ):
        if pick:
            return pick[0].name
    return None


def _final_asks(data: RunData) -> dict[str, dict[str, Any]]:
    ref = reference(data)
    for f in data.finals:
        if f.name == ref and f.book is not None:
            return {a["id"]: a for a in f.book["asks"]}
    return {}


def _rates(data: RunData) -> dict[str, list[tuple[float, float, float]]]:
    """Per node: (t, frames/s, cpu %) between consecutive samples."""
    by_node: dict[str, list[Any]] = {}
    for s in data.samples:
        by_node.setdefault(s.node, []).append(s)
    out: dict[str, list[tuple[float, float, float]]] = {}
    for name, samples in by_node.items():
        series = []
        for a, b in itertools.pairwise(samples):
            dt = b.t - a.t
            if dt > 0:
                series.append((b.t, max(0, b.frames - a.frames) / dt, b.cpu))
        out[name] = series
    return out


def _windows(data: RunData, lo: float, hi: float) -> list[float]:
    """Network-wide frames/s in consecutive WINDOW_S windows within [lo, hi] (run s)."""
    by_node: dict[str, list[Any]] = {}
    for s in data.samples:
        by_node.setdefault(s.node, []).append(s)
    out = []
    t = lo
    while t + WINDOW_S <= hi + 1e-9:
        total = 0.0
        for samples in by_node.values():
            inside = [s for s in samples if t <= s.t <= t + WINDOW_S]
            if len(inside) >= 2 and inside[-1].t > inside[0].t:
                total += max(0, inside[-1].frames - inside[0].frames) / (inside[-1].t - inside[0].t)
        out.append(total)
        t += WINDOW_S / 2
    return out


def ever_assigned(state: str, view: dict[str, Any] | None, track: AskTrack) -> bool:
    """Whether an ask ever had a winner (see the module docstring): its final view
    lists a slot, its requester logged an assignment, or its final state implies one.
    A proven ask always counts, whichever view its state came from."""
    return (
        state in ("assigned", "proven", "invalid_inputs")  # each needs a winner
        or bool(view and view["winners"])
        or track.assigned_t is not None
        or bool(track.slots)
    )


def build_summary(data: RunData) -> dict[str, Any]:
    s = data.scenario
    tracks = list(data.asks.asks.values())
    final = _final_asks(data)

    def final_of(a: AskTrack) -> dict[str, Any] | None:
        return final.get(a.id)

    states: dict[str, int] = {}
    assigned = reassigned = timed_out = invalid = 0
    for a in tracks:
        view = final_of(a)
        state = view["state"] if view else a.state
        states[state] = states.get(state, 0) + 1
        assigned += ever_assigned(state, view, a)
        if view:
            reassigned += len(view["winners"]) > view["replicas"]
            timed_out += view["slot_states"].count("timed_out")
            invalid += view["slot_states"].count("invalid")
    proven = states.get("proven", 0)

    assign_lat = [(a.assigned_t - a.ts) / 1000 for a in tracks if a.assigned_t is not None]
    done_lat = [(a.proven_t - a.ts) / 1000 for a in tracks if a.proven_t is not None]

    # envelopes per completed ask, by replicas
    per_k: dict[int, list[int]] = {}
    ref = reference(data)
    ref_check = next((f.check for f in data.finals if f.name == ref and f.check), None)
    counts = (ref_check or {}).get("ask_envelopes", {})
    for a in tracks:
        view = final_of(a)
        if view and view["state"] == "proven" and a.id in counts:
            per_k.setdefault(int(view["replicas"]), []).append(int(counts[a.id]))
    all_counts = [c for v in per_k.values() for c in v]
    envelopes = {
        str(k): {
            "mean": _r(sum(v) / len(v), 2),
            "max": max(v),
            "asks": len(v),
            "target": 3 + 2 * k,
            "within_target": sum(v) / len(v) <= 3 + 2 * k,
        }
        for k, v in sorted(per_k.items())
    }

    # time spans (seconds since the run started)
    def rel(ms: int | None) -> float | None:
        return None if ms is None else (ms - data.t0_ms) / 1000

    start, end, settled = rel(data.start_ms), rel(data.end_ms), rel(data.settled_ms)
    duration = s.duration_s

    # transport
    rates = _rates(data)
    windows = _windows(data, start or 0.0, settled or end or 0.0) if start is not None else []
    frames_total = sum(st.get("frames", 0) for st in data.final_stats.values())
    envelopes_total = sum(st.get("envelopes", 0) for st in data.final_stats.values())
    waits = sum(st.get("outbound_waits", 0) for st in data.final_stats.values())
    span = (settled - start) if (settled is not None and start is not None) else 0.0
    workload_frames = _frames_between(data, start, settled)
    mean_fps = workload_frames / span if span > 0 else 0.0
    peak_fps = max(windows, default=0.0)
    per_frame = envelopes_total / frames_total if frames_total else 0.0
    cpu_all = [x.cpu for x in data.samples if x.up]
    cpu_by_t: dict[float, float] = {}
    for x in data.samples:
        if x.up and start is not None and x.t >= start:
            cpu_by_t[x.t] = cpu_by_t.get(x.t, 0.0) + x.cpu
    mean_cpu_total = sum(cpu_by_t.values()) / len(cpu_by_t) if cpu_by_t else 0.0
    notes = []
    if peak_fps >= TRANSPORT_SHARE * FRAME_CAPACITY:
        notes.append(
            f"busiest 10 s: {peak_fps:.1f} gossip frames/s in total, at least"
            f" {TRANSPORT_SHARE:.0%} of the ~{FRAME_CAPACITY:g} frames/s measured capacity"
        )
    if per_frame > 1.2:
        notes.append(
            f"{per_frame:.2f} envelopes per frame: frame budgets ran out and the nodes batched"
        )
    if waits > 100:
        notes.append(f"{waits} waits for full outbound queues (slow peers)")
    transport_bound = bool(notes)
    cpu_bound = mean_cpu_total >= 0.85 * CORES * 100
    if cpu_bound:
        notes.append(
            f"the nodes used {mean_cpu_total:.0f}% CPU on average, near all {CORES} cores:"
            " CPU-bound (gossip included)"
        )
    slot_waits = sum(st.get("slot_waits", 0) for st in data.final_stats.values())
    placed_asks = len(data.asks.asks)
    slots_bound = slot_waits > SLOT_WAIT_SHARE * placed_asks
    if slots_bound:
        notes.append(
            f"provers found every slot held for {slot_waits} attempts they would have"
            f" entered ({placed_asks} asks placed): bound by the provers' capacity"
        )

    # per node
    nodes = []
    for n in data.nodes:
        mine = [x for x in data.samples if x.node == n.name and x.up]
        fin = next((f for f in data.finals if f.name == n.name), None)
        stats = data.final_stats.get(n.name, {})
        series = rates.get(n.name, [])
        nodes.append(
            {
                "name": n.name,
                "console": n.console_url,
                "role": n.spec.role,
                "behaviour": n.spec.behaviour,
                "starts": n.starts,
                "faulted": n.faulted,
                "cpu_mean_percent": _r(sum(x.cpu for x in mine) / len(mine), 1) if mine else None,
                "cpu_max_percent": _r(max(x.cpu for x in mine), 1) if mine else None,
                "rss_max_mb": _r(max(x.rss for x in mine) / 2**20, 1) if mine else None,
                "frames_published": stats.get("frames", 0),
                "envelopes_published": stats.get("envelopes", 0),
                "frames_per_s_peak": _r(max((r[1] for r in series), default=0.0), 2),
                "published_by_kind": {
                    k.removeprefix("published_"): v
                    for k, v in sorted(stats.items())
                    if k.startswith("published_")
                },
                "state_hash": (fin.check or {}).get("state_hash") if fin else None,
                "reorgs": (fin.check or {}).get("reorgs") if fin else None,
                "violations": len((fin.check or {}).get("violations", [])) if fin else None,
            }
        )

    # provers: utilisation (slot-seconds busy / capacity x span) and earnings
    provers = []
    busy: dict[str, float] = {}
    for a in tracks:
        for slot in a.slots.values():
            stop = slot.end_t if slot.end_t is not None else (data.settled_ms or slot.assigned_t)
            busy[slot.prover] = busy.get(slot.prover, 0.0) + max(0, stop - slot.assigned_t) / 1000
    for spec in s.provers:
        node = next(n for n in data.nodes if n.name == spec.name)
        key = node.public_key
        won = accepted = earned = 0
        for a in tracks:
            view = final_of(a)
            if not view:
                continue
            for w, price, st in zip(
                view["winners"], view["prices"], view["slot_states"], strict=True
            ):
                if w == key:
                    won += 1
                    if st == "accepted":
                        accepted += 1
                        earned += int(price)
        capacity = int(spec.prover.get("capacity", 1))
        proved = data.prove_times.of(spec.name)
        verified = [
            slot.verify_ms
            for a in tracks
            for slot in a.slots.values()
            if slot.prover == key and slot.verify_ms is not None
        ]
        provers.append(
            {
                "name": spec.name,
                "behaviour": spec.behaviour,
                "price": spec.prover["price"],
                "proof_time": spec.prover["proof_time"],
                "capacity": capacity,
                "slots_won": won,
                "accepted": accepted,
                "earned": earned,
                "utilisation": _r(busy.get(key, 0.0) / (capacity * span), 3) if span else None,
                "proofs": len(proved),
                "prove_ms": _times(proved),
                "verify_ms": _times(verified),
            }
        )

    paid = [(a.max_price, sum(_accepted_prices(final_of(a)))) for a in tracks if final_of(a)]
    ag = data.agreement
    reorgs = sum(int((f.check or {}).get("reorgs", 0)) for f in data.finals if f.honest and f.check)
    checks_ok = ag is not None and ag.ok and data.error is None
    return {
        "scenario": s.name,
        "source": str(s.source),
        "market": data.market,
        "nodes": len(data.nodes),
        "duration_s": duration,
        "wall_s": _r(((data.stopped_ms or data.t0_ms) - data.t0_ms) / 1000, 1),
        "timeline_s": {
            "formed": rel(data.formed_ms),
            "workload_start": start,
            "workload_end": end,
            "settled": settled,
            "agreed": rel(data.agreed_ms),
            "stopped": rel(data.stopped_ms),
            "last_fault_healed": rel(data.healed_ms),
        },
        "network": _network(data),
        "asks": {
            "placed": len(tracks),
            "refused": data.asks.refused,
            "assigned": assigned,
            "proven": proven,
            "expired": states.get("expired", 0),
            "cancelled": states.get("cancelled", 0),
            "invalid_inputs": states.get("invalid_inputs", 0),
            "open_at_end": states.get("open", 0) + states.get("assigned", 0),
            "missing_at_reference": sum(1 for a in tracks if final_of(a) is None),
            "timed_out": timed_out,
            "invalid_proofs": invalid,
            "reassigned": reassigned,
            "confidential": sum(1 for a in tracks if a.confidential),
        },
        "reorgs": reorgs,
        "nodes_disagreeing": ag.nodes_disagreeing if ag else None,
        "latency_s": {
            "assignment": {
                "p50": _r(quantile(assign_lat, 0.5)),
                "p99": _r(quantile(assign_lat, 0.99)),
                "n": len(assign_lat),
            },
            "completion": {
                "p50": _r(quantile(done_lat, 0.5)),
                "p99": _r(quantile(done_lat, 0.99)),
                "n": len(done_lat),
            },
        },
        "orders_per_s": _r(len(tracks) / duration, 3),
        "completed_per_s": _r(proven / span, 3) if span else None,
        "price": {
            "paid_total": sum(p for _, p in paid),
            "paid_mean_per_proven": _r(sum(p for _, p in paid) / proven, 2) if proven else None,
            "cap_mean": _r(sum(c for c, _ in paid) / len(paid), 2) if paid else None,
        },
        "envelopes_per_completed_ask": _r(sum(all_counts) / len(all_counts), 2)
        if all_counts
        else None,
        "envelopes_per_completed_ask_by_replicas": envelopes,
        "gossip": {
            "frames_published": frames_total,
            "envelopes_published": envelopes_total,
            "envelopes_per_frame": _r(per_frame, 2),
            "frames_per_s_mean": _r(mean_fps, 2),
            "frames_per_s_peak_10s": _r(peak_fps, 2),
            "capacity_frames_per_s": FRAME_CAPACITY,
            "outbound_waits": waits,
        },
        "cpu": {
            "mean_total_percent": _r(mean_cpu_total, 1),
            "cores": CORES,
            "max_node_percent": _r(max(cpu_all, default=0.0), 1),
        },
        "transport_bound": transport_bound,
        "cpu_bound": cpu_bound,
        "slots_bound": slots_bound,
        "slot_waits": slot_waits,
        "bound_notes": notes,
        "node_stats": nodes,
        "provers": provers,
        "faults": data.faults,
        "checks": {
            "ok": checks_ok,
            "agree_attempts": data.agree_attempts,
            "agreed_after_s": (
                _r((data.agreed_ms - data.settled_ms) / 1000)
                if data.agreed_ms is not None and data.settled_ms is not None
                else None
            ),
            "catch_up": data.catch_up,
            "agreed_after_heal_s": (
                _r((data.agreed_ms - data.healed_ms) / 1000)
                if data.agreed_ms is not None and data.healed_ms is not None
                else None
            ),
            **(ag.to_json() if ag else {"ok": False, "failures": ["no final states"]}),
            **({"ok": False} if not checks_ok else {}),
        },
        "error": data.error,
    }


def _network(data: RunData) -> dict[str, Any] | None:
    """What the links were (a [network] run): the shape asked for and the switch's
    counters, so a reader sees how many frames the loss and the cuts really took."""
    n = data.scenario.network
    if n is None:
        return None
    return {"rtt_ms": n.rtt_ms, "jitter_ms": n.jitter_ms, "loss": n.loss, "switch": data.switch}


def _frames_between(data: RunData, lo: float | None, hi: float | None) -> int:
    if lo is None or hi is None:
        return 0
    total = 0
    by_node: dict[str, list[Any]] = {}
    for s in data.samples:
        by_node.setdefault(s.node, []).append(s)
    for samples in by_node.values():
        inside = [s for s in samples if lo <= s.t <= hi]
        if inside:
            before = [s for s in samples if s.t < lo]
            base = before[-1].frames if before else inside[0].frames
            total += max(0, inside[-1].frames - base)
    return total


def _accepted_prices(view: dict[str, Any] | None) -> list[int]:
    if not view:
        return []
    return [
        int(p)
        for p, st in zip(view["prices"], view["slot_states"], strict=True)
        if st == "accepted"
    ]


# -- plots -----------------------------------------------------------------------------


def write_plots(data: RunData, summary: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tracks = list(data.asks.asks.values())
    t0 = data.start_ms or data.t0_ms
    final = _final_asks(data)

    # 1. latency CDFs
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in (
        ("assigned", [(a.assigned_t - a.ts) / 1000 for a in tracks if a.assigned_t]),
        ("proven", [(a.proven_t - a.ts) / 1000 for a in tracks if a.proven_t]),
    ):
        if values:
            xs = sorted(values)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
    ax.set_xlabel("seconds after the ask's signed timestamp")
    ax.set_ylabel("share of asks")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    _legend(ax, loc="lower right")
    ax.set_title("Latency CDFs (at the requester node)")
    written.append(_save(fig, out / "latency_cdf.png"))

    # 2. asks over time by state
    fig, ax = plt.subplots(figsize=(8, 4))
    end = max([data.settled_ms or t0, *(t for a in tracks for t, _ in a.timeline)], default=t0)
    grid = [t0 + i * 500 for i in range(int((end - t0) / 500) + 2)]
    stacks = {st: [0] * len(grid) for st in STATES}
    for a in tracks:
        for i, t in enumerate(grid):
            state = None
            for when, st in a.timeline:
                if when <= t:
                    state = st
            if state in stacks:
                stacks[state][i] += 1
    xs = [(t - t0) / 1000 for t in grid]
    ax.stackplot(
        xs,
        *(stacks[st] for st in STATES),
        labels=list(STATES),
        colors=[COLOURS[st] for st in STATES],
    )
    for f in data.faults:
        if f["event"] == "begin":
            x = f["t_s"] - (t0 - data.t0_ms) / 1000
            ax.axvline(x, color="black", lw=0.8, ls="--")
            ax.text(x, ax.get_ylim()[1] * 0.95, f" {f['kind']} {f['node']}", fontsize=7)
    ax.set_xlabel("seconds since the workload started")
    ax.set_ylabel("asks")
    _legend(ax, loc="upper left", fontsize=8)
    ax.set_title("Asks by state over time")
    written.append(_save(fig, out / "asks_over_time.png"))

    # 3. provers
    provers = summary["provers"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{p['name']}\n{p['price']}/{p['proof_time']}ms/x{p['capacity']}" for p in provers]
    colours = ["#d62728" if p["behaviour"] != "honest" else "#1f77b4" for p in provers]
    ax1.bar(labels, [100 * (p["utilisation"] or 0) for p in provers], color=colours)
    ax1.set_ylabel("busy slot time, % of capacity")
    ax1.set_title("Utilisation (red: byzantine)")
    ax2.bar(labels, [p["earned"] for p in provers], color=colours)
    ax2.set_ylabel("earned (accepted proofs x price)")
    ax2.set_title("Earnings")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelsize=7)
    written.append(_save(fig, out / "provers.png"))

    # 4. price paid vs caps
    fig, ax = plt.subplots(figsize=(6, 5))
    for prefer, marker in (("cost", "o"), ("time", "^")):
        pts = [
            (a.max_price, p)
            for a in tracks
            if a.prefer == prefer and a.id in final
            for p in _accepted_prices(final[a.id])
        ]
        if pts:
            ax.scatter(
                [x for x, _ in pts],
                [y for _, y in pts],
                marker=marker,
                alpha=0.6,
                label=f"prefer {prefer} ({len(pts)} proofs)",
            )
    caps = [a.max_price for a in tracks] or [1]
    ax.plot([0, max(caps)], [0, max(caps)], color="grey", lw=0.8, ls="--", label="price = cap")
    ax.set_xlabel("ask's price cap (max_price)")
    ax.set_ylabel("price paid per accepted proof")
    _legend(ax, fontsize=8)
    ax.set_title("Price paid vs caps")
    written.append(_save(fig, out / "price_vs_caps.png"))

    # 5. transport: frames/s and CPU per node
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    rates = _rates(data)
    offset = (t0 - data.t0_ms) / 1000
    totals: dict[int, float] = {}
    for name, series in rates.items():
        if not series:
            continue
        ts = [at - offset for at, _, _ in series]
        ax1.plot(ts, [fps for _, fps, _ in series], lw=0.8, label=name)
        ax2.plot(ts, [c for _, _, c in series], lw=0.8, label=name)
        for at, fps, _ in series:
            key = round(at - offset)
            totals[key] = totals.get(key, 0.0) + fps
    if totals:
        keys = sorted(totals)
        ax1.plot(keys, [totals[k] for k in keys], color="black", lw=1.5, label="total")
    ax1.axhline(FRAME_CAPACITY, color="red", ls="--", lw=0.8, label="~capacity (10 nodes)")
    ax1.set_ylabel("gossip frames/s published")
    _legend(ax1, fontsize=6, ncol=4, loc="upper right")
    ax2.set_ylabel("CPU, % of one core")
    ax2.set_xlabel("seconds since the workload started (negative: start-up)")
    ax1.set_title("Transport: frames/s and CPU per node")
    written.append(_save(fig, out / "transport.png"))
    return written


def _legend(ax: Any, **options: Any) -> None:
    """A legend when something is labelled (a run without data has nothing to show)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


# -- index.html ----------------------------------------------------------------------


def write_index(summary: dict[str, Any], out: Path) -> None:
    e = html.escape
    checks = summary["checks"]
    verdict = (
        '<p class="ok">All checks passed: every honest node agrees.</p>'
        if checks["ok"]
        else '<p class="bad">CHECKS FAILED: '
        + e("; ".join(checks.get("failures", [])) or str(summary.get("error")))
        + "</p>"
    )
    a, lat, g = summary["asks"], summary["latency_s"], summary["gossip"]
    rows = [
        (
            "asks placed / ever assigned / proven",
            f"{a['placed']} / {a['assigned']} / {a['proven']}",
        ),
        (
            "expired / cancelled / still open",
            f"{a['expired']} / {a['cancelled']} / {a['open_at_end']}",
        ),
        (
            "slots timed out / invalid proofs / asks reassigned",
            f"{a['timed_out']} / {a['invalid_proofs']} / {a['reassigned']}",
        ),
        (
            "assignment latency p50 / p99 (s)",
            f"{lat['assignment']['p50']} / {lat['assignment']['p99']}",
        ),
        (
            "completion latency p50 / p99 (s)",
            f"{lat['completion']['p50']} / {lat['completion']['p99']}",
        ),
        (
            "orders/s placed, asks/s completed",
            f"{summary['orders_per_s']}, {summary['completed_per_s']}",
        ),
        ("envelopes per completed ask", str(summary["envelopes_per_completed_ask"])),
        ("reorgs, nodes disagreeing", f"{summary['reorgs']}, {summary['nodes_disagreeing']}"),
        (
            "gossip frames/s mean / peak 10 s",
            f"{g['frames_per_s_mean']} / {g['frames_per_s_peak_10s']}"
            f" (capacity ~{g['capacity_frames_per_s']})",
        ),
        ("envelopes per frame", str(g["envelopes_per_frame"])),
        ("CPU, all nodes (% of one core)", str(summary["cpu"]["mean_total_percent"])),
        (
            "transport-bound",
            ("yes: " + "; ".join(summary["bound_notes"])) if summary["transport_bound"] else "no",
        ),
        (
            "provers' slots all held",
            f"{summary['slot_waits']} attempts"
            + (" (bound by their capacity)" if summary["slots_bound"] else ""),
        ),
    ]
    net = summary.get("network")
    if net:
        sw = net.get("switch") or {}
        rows.append(
            (
                "network (namespaces, userspace switch)",
                f"{net['rtt_ms']:g} ms RTT, ±{net['jitter_ms']:g} ms, {net['loss'] * 100:g} % loss;"
                f" {sw.get('frames_in')} frames, {sw.get('dropped_loss')} lost,"
                f" {sw.get('dropped_cut')} cut",
            )
        )
    catch_up = checks.get("catch_up")
    if catch_up:
        after = catch_up.get("after_heal_s")
        rows.append(
            (
                "caught up after the heal (asks that ended before it)",
                f"{after} s ({catch_up.get('asks')} asks)"
                if after is not None
                else f"not by the checks; lacking {catch_up.get('lacking')}",
            )
        )
    table = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    node_rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{e(str(n[k]))}</td>"
            for k in (
                "name",
                "role",
                "behaviour",
                "starts",
                "cpu_mean_percent",
                "rss_max_mb",
                "frames_published",
                "reorgs",
                "violations",
            )
        )
        + f"<td>{_console_link(n.get('console'))}</td>"
        + "</tr>"
        for n in summary["node_stats"]
    )
    prover_rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{e(str(v))}</td>"
            for v in (
                p["name"],
                p["behaviour"],
                f"{p['price']} / {p['proof_time']} ms / x{p['capacity']}",
                f"{p['slots_won']} / {p['accepted']}",
                p["earned"],
                p["utilisation"],
                p["proofs"],
                times_text(p["prove_ms"]),
                f"{times_text(p['verify_ms'])} ({p['verify_ms']['n']})",
            )
        )
        + "</tr>"
        for p in summary["provers"]
    )
    figures = "\n".join(
        f'<figure><img src="{e(name)}" alt="{e(title)}">'
        f"<figcaption>{e(title)}</figcaption></figure>"
        for name, title in PLOTS
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>p2p-market simulate: {e(summary["scenario"])}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 14px; }}
.ok {{ color: #1a7f37; font-weight: bold; }} .bad {{ color: #c62828; font-weight: bold; }}
figure {{ display: inline-block; margin: 1em 1em 0 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Simulation report: {e(summary["scenario"])}</h1>
<p>{summary["nodes"]} real node processes on 127.0.0.1, a {summary["duration_s"]:g} s workload,
market <code>{e(summary["market"][:16])}…</code>; run took {summary["wall_s"]} s.
Numbers in <a href="summary.json">summary.json</a>; node logs in <code>nodes/</code>.</p>
{verdict}
<table>{table}</table>
<h2>Plots</h2>
{figures}
<h2>Provers</h2>
<p>Proofs made and how long the prover's back-end took (its own timing); how long the
requesters' verifier took over its proofs (how many were judged, in brackets).
Times in ms, p50 / p99.</p>
<table><tr><th>prover</th><th>behaviour</th><th>price / proof time / capacity</th>
<th>slots won / accepted</th><th>earned</th><th>utilisation</th><th>proofs</th>
<th>prove ms</th><th>verify ms</th></tr>
{prover_rows}</table>
<h2>Nodes</h2>
<table><tr><th>node</th><th>role</th><th>behaviour</th><th>starts</th><th>CPU %</th>
<th>max RSS MB</th><th>frames out</th><th>reorgs</th><th>violations</th>
<th>console (live while the run ran)</th></tr>
{node_rows}</table>
</body></html>
"""
    (out / "index.html").write_text(page, encoding="utf-8")


def _console_link(url: str | None) -> str:
    if not url:
        return ""
    return f'<a href="{html.escape(url)}">{html.escape(url)}</a>'


def write_live_index(data: RunData) -> None:
    """index.html while the run goes on: each node's console (live while it runs).
    The report's own index.html replaces it at the end."""
    e = html.escape
    items = "\n".join(
        f'<li>{e(n.name)} ({e(n.spec.role)}): <a href="{e(url)}">{e(url)}</a></li>'
        for n in data.nodes
        if (url := n.console_url) is not None
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>p2p-market simulate: {e(data.scenario.name)} (running)</title></head>
<body style="font-family: sans-serif; max-width: 1100px; margin: 2em auto">
<h1>Simulation running: {e(data.scenario.name)}</h1>
<p>The report replaces this page when the run ends. Meanwhile each node's web
console shows its markets, book, asks, provers and peers live:</p>
<ul>
{items}
</ul></body></html>
"""
    (data.run_dir / "index.html").write_text(page, encoding="utf-8")


def write_report(data: RunData) -> dict[str, Any]:
    """summary.json, the plots and index.html in the run's folder; returns the summary."""
    out = data.run_dir
    summary = build_summary(data)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    summary["plots"] = write_plots(data, summary, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_index(summary, out)
    return summary
