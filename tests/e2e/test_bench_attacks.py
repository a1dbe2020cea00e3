"""`p2p-market bench attacks` on real node processes: two of its rows, short.

The figures that can flake on a busy machine (latency ratios) are the benchmark's to
report; here only what must hold whatever the machine: the cross-site POST is refused
and writes nothing, and phantom bids do not stop honest asks from being proven."""

from __future__ import annotations

from pathlib import Path

from p2p_market.bench.attackers import ATTACKS
from p2p_market.bench.attacks import run_attacks


def test_phantom_bids_and_a_cross_site_post_against_real_nodes(tmp_path: Path) -> None:
    result = run_attacks(ATTACKS, ["cross-site-post", "phantom-bids"], 12.0, tmp_path)
    quiet = result["quiet"]
    assert quiet["error"] is None and quiet["placed"] > 0 and quiet["agreed"]
    rows = {row["attack"]: row for row in result["rows"]}
    post = rows["cross-site-post"]["figures"]
    assert post["codes"] == {"foreign_origin": 403, "no_origin": 401, "rebinding_host": 421}
    assert post["bids_at_price_1"] == 0
    phantom = rows["phantom-bids"]
    assert "attacker_error" not in phantom["figures"], phantom["figures"]
    assert phantom["figures"]["phantom_bids"] >= 6
    attacked = phantom["attacked"]
    assert attacked["error"] is None and attacked["agreed"]
    assert attacked["placed"] > 0 and attacked["proven"] >= 0.9 * attacked["placed"], attacked
