"""The console's views (node/console_views.py) of one core state driven through a
whole life: an ask whose first winner proves an invalid proof, is failed by the
requester's receipt, and whose new round goes to the other prover, who proves and is
paid. The timeline tells each step in order; the provers' table tells who earned
what, and the evidence against the prover of the invalid proof."""

from __future__ import annotations

from p2p_market.core.envelope import message_id
from p2p_market.node.console_views import asks, provers, timeline
from tests.core.world import SKEW, T0, WINDOW, World


def test_a_reassigned_ask_tells_its_whole_life_and_the_provers_their_record() -> None:
    w = World()
    cheap = w.bid("cheap-slow", price=10, proof_time=9_000, capacity=4)
    fast = w.bid("fast-dear", price=50, proof_time=1_000, capacity=4)
    ask = w.ask("req", max_price=100, max_proof_time=10_000)
    w.commit("cheap-slow", ask, cheap, T0 + 10)
    w.tick(T0 + WINDOW + SKEW + 1)
    t = T0 + 3_000
    w.send(w.actor("cheap-slow").proof(now=t, ask=ask, proof=b"badprf"), t)
    bad = w.actor("req").receipt(now=t + 100, ask=ask, prover=w.pk("cheap-slow"), outcome="invalid")
    w.send(bad, t + 100)
    w.commit("fast-dear", ask, fast, t + 210, round=message_id(bad))
    w.tick(t + 100 + WINDOW + SKEW + 1)
    t2 = t + 3_000
    w.send(w.actor("fast-dear").proof(now=t2, ask=ask, proof=b"goodprf!"), t2)
    ok = w.actor("req").receipt(now=t2 + 100, ask=ask, prover=w.pk("fast-dear"), outcome="accepted")
    w.send(ok, t2 + 100)

    cheap_pk, fast_pk = w.pk("cheap-slow").hex(), w.pk("fast-dear").hex()
    steps = [(s["step"], s["who"], s["detail"].get("state")) for s in timeline(w.state, ask)]
    assert steps == [
        ("placed", w.pk("req").hex(), None),  # open from here
        ("committed", cheap_pk, None),
        ("assigned", cheap_pk, None),
        ("state", "", "assigned"),
        ("delivered", cheap_pk, None),
        ("verified", cheap_pk, None),
        ("receipted", cheap_pk, None),
        ("reassigned", cheap_pk, None),
        ("state", "", "open"),
        ("committed", fast_pk, None),
        ("assigned", fast_pk, None),
        ("state", "", "assigned"),
        ("delivered", fast_pk, None),
        ("verified", fast_pk, None),
        ("receipted", fast_pk, None),
        ("state", "", "proven"),
    ]
    times = [s["t"] for s in timeline(w.state, ask)]
    assert times == sorted(times)
    verdicts = [s["detail"] for s in timeline(w.state, ask) if s["step"] == "verified"]
    assert verdicts == [{"valid": False}, {"valid": True}]

    (listed,) = asks(w.state, 10)
    assert listed["id"] == ask.hex() and listed["state"] == "proven" and listed["paid"] == 50

    rows = {row["prover"]: row for row in provers(w.state)}
    assert rows[fast_pk]["earned"] == 50 and rows[fast_pk]["accepted"] == 1
    assert rows[cheap_pk]["earned"] == 0 and rows[cheap_pk]["invalid"] == 1
    assert rows[cheap_pk]["price"] == 10 and rows[cheap_pk]["capacity"] == 4
    assert rows[cheap_pk]["load"] == rows[fast_pk]["load"] == 0
    # The market's pure verifier shows the bad proof invalid: evidence anyone can
    # check, which bars its prover from winning for a while (core/penalties.py).
    assert rows[cheap_pk]["evidence"] == {
        "equivocations": 0,
        "invalid_proofs": 1,
        "penalised": True,
    }
    assert rows[fast_pk]["evidence"] == {
        "equivocations": 0,
        "invalid_proofs": 0,
        "penalised": False,
    }
