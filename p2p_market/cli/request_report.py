"""What `p2p-market request` tells, for people and (--json) for programs.

People read the progress lines on stderr as the ask moves (placed, assigned,
delivered, verified...) and the result on stdout. With --json the stderr lines
stay as they are, and stdout holds exactly one JSON document, written when the
request ends, whenever the command got as far as the market (exit 0 or 1):

    {"ok": true, "ask": "<id>", "market": "<id>", "market_name": "...",
     "state": "proven", "paid": 7,
     "winners": [{"prover": "<key>", "name": "prover-1", "price": 7}],
     "proofs": [{"prover": "<key>", "path": "proof.bin", "bytes": 123,
                 "files": ["out/proof.bin"]}],
     "timings_ms": {"discover": 812, "placed_to_proven": 4210, "total": 5030},
     "events": [{"t_ms": 0, "event": "placed", "ask": "<id>"},
                {"t_ms": 1300, "event": "assigned", "prover": "<key>", "price": 7}, ...]}

`t_ms` counts from the moment the (first) ask was placed. A failure is
`{"ok": false, "error": "<the one line>", "reason": "...", "ask": "<id>" or null,
"events": [...]}`; a split request adds `"split": {"segment_asks": [...],
"aggregation_ask": "<id>"}`. Bad input (exit 2) is the one `error:` line on
stderr, as for every command, and nothing on stdout; so is a node at --api that
stops answering (exit 1). Why one final document and
not a line per event: a script wants the outcome; the events are in it, with their
times, and stderr still shows progress to whoever watches.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console

from p2p_market.cli.common import devnet_names


class Report:
    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.started = time.monotonic()
        self.placed_at: float | None = None
        self.events: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {"ask": None}
        self.error: str | None = None
        self.reason: str | None = None
        self.names = devnet_names()

    # -- while it runs -----------------------------------------------------------------
    def now_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)

    def placed(self, ask: str) -> None:
        """The first ask is out: event times count from here."""
        if self.placed_at is None:
            self.placed_at = time.monotonic()
            self.result.setdefault("timings_ms", {})["discover"] = self.now_ms()
        if self.result.get("ask") is None:
            self.result["ask"] = ask

    def line(self, kind: str, text: str, **data: Any) -> None:
        """A progress line on stderr, and the event with its time for --json."""
        base = self.placed_at if self.placed_at is not None else self.started
        elapsed = time.monotonic() - base
        self.err.print(f"{elapsed:6.1f}s  {kind:<10} {text}", markup=False)
        self.events.append({"t_ms": round(elapsed * 1000), "event": kind, **data})

    def note(self, text: str) -> None:
        self.err.print(text, markup=False)

    def fail(self, message: str, reason: str = "failed") -> None:
        """The one error line (stderr), kept for the JSON document."""
        self.err.print(f"error: {message}", markup=False)
        if self.error is None:
            self.error, self.reason = message, reason

    def name(self, key: str) -> str | None:
        return self.names.get(bytes.fromhex(key))

    # -- the end -----------------------------------------------------------------------
    def proven(
        self,
        *,
        market: str,
        market_name: str,
        prices: dict[str, int],
        paid: int,
        proofs: list[tuple[str, str, int, list[str]]],
    ) -> None:
        """The outcome: (prover, path, bytes, files) per proof, in replica order."""
        timings = self.result.setdefault("timings_ms", {})
        if self.placed_at is not None:
            timings["placed_to_proven"] = round((time.monotonic() - self.placed_at) * 1000)
        self.result.update(
            market=market,
            market_name=market_name,
            state="proven",
            paid=paid,
            winners=[
                {"prover": p, "name": self.name(p), "price": prices.get(p)} for p, *_ in proofs
            ],
            proofs=[
                {"prover": p, "path": path, "bytes": size, "files": files}
                for p, path, size, files in proofs
            ],
        )

    def finish(self, code: int) -> int:
        """Print the JSON document (--json, exit 0 or 1); the exit status."""
        if not self.as_json or code not in (0, 1):
            return code
        self.result.setdefault("timings_ms", {})["total"] = self.now_ms()
        doc: dict[str, Any] = {"ok": code == 0, **self.result}
        if code != 0:
            doc = {
                "ok": False,
                "error": self.error or "no verified proof",
                "reason": self.reason or "failed",
                **self.result,
            }
        doc["events"] = self.events
        print(json.dumps(doc), flush=True)
        return code
