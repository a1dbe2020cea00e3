"""The RTT by loss table of issue 13: one `p2p-market simulate --netns` run per cell
(the same scenario, only the links change), then asks placed and proven, assignment
latency p50/p99 and agreement, as JSON lines and a Markdown table.

    python -m p2p_market.localnet.wan.table [--rtt-ms 0.5,100,300] [--loss 0,0.01,0.03]
        [--duration 45] [--out reports/wan-table] [SCENARIO]

Each cell is a full run (about 90 s with simulations/local.toml); the runs are one
after another, never side by side, so that they do not slow each other down.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

COLUMNS = ("rtt_ms", "loss", "placed", "proven", "assign_p50_s", "assign_p99_s", "agreed", "rc")


def cell(
    scenario: Path, out: Path, rtt_ms: float, loss: float, duration: float | None
) -> dict[str, Any]:
    tag = f"rtt{rtt_ms:g}-loss{loss:g}"
    folder = out / tag
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "p2p_market.cli", "simulate", str(scenario), "--out", str(folder),
           "--rtt-ms", str(rtt_ms), "--loss", str(loss)]  # fmt: skip
    if duration is not None:
        cmd += ["--duration", str(duration)]
    began = time.monotonic()
    with (folder / "simulate.log").open("w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    row: dict[str, Any] = {"rtt_ms": rtt_ms, "loss": loss, "rc": rc}
    summaries = sorted(folder.glob("*/summary.json"))
    if summaries:
        s = json.loads(summaries[-1].read_text())
        lat = s["latency_s"]["assignment"]
        row |= {
            "placed": s["asks"]["placed"],
            "proven": s["asks"]["proven"],
            "assign_p50_s": lat["p50"],
            "assign_p99_s": lat["p99"],
            "agreed": bool(s["checks"]["ok"]),
            "frames_lost": ((s.get("network") or {}).get("switch") or {}).get("dropped_loss"),
        }
    row["wall_s"] = round(time.monotonic() - began, 1)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p2p_market.localnet.wan.table")
    parser.add_argument("scenario", nargs="?", type=Path, default=Path("simulations/local.toml"))
    parser.add_argument("--rtt-ms", type=floats, default=[0.5, 100.0, 300.0])
    parser.add_argument("--loss", type=floats, default=[0.0, 0.01, 0.03])
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/wan-table"))
    args = parser.parse_args(argv)
    rows = []
    for rtt in args.rtt_ms:
        for loss in args.loss:
            row = cell(args.scenario, args.out, rtt, loss, args.duration)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(markdown(rows))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
