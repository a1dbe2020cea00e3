"""Peer penalties decay, graylist, ban for a stated time, and forget (net/scores.py).
Pure: time is a parameter."""

from __future__ import annotations

from p2p_market.net.scores import PeerScores, ScoreConfig

CONFIG = ScoreConfig(hold_s=5.0, half_life_s=10.0, graylist_at=3.0, ban_at=5.0, ban_s=60.0)


def test_five_rejects_in_a_row_ban_the_peer() -> None:
    scores = PeerScores(CONFIG)
    banned = [scores.invalid("p", 100.0 + i * 0.1) for i in range(5)]
    assert banned == [False, False, False, False, True]
    assert scores.banned("p") and scores.graylisted("p", 101.0) and scores.bans == 1
    assert not scores.invalid("p", 101.0)  # banned once, not again


def test_rejects_spread_out_never_ban() -> None:
    """The old counter never decayed: one bad frame an hour banned an honest peer
    after five hours (a clock skew, a bug fixed in a later version)."""
    scores = PeerScores(CONFIG)
    for i in range(100):
        assert not scores.invalid("p", 100.0 + i * 35.0)  # three half-lives apart
    assert not scores.banned("p") and scores.penalty("p", 100.0 + 99 * 35.0) < 1.2


def test_the_graylist_comes_before_the_ban_and_lifts_as_penalties_decay() -> None:
    scores = PeerScores(CONFIG)
    for _ in range(3):
        scores.invalid("p", 0.0)
    assert scores.graylisted("p", 0.0) and not scores.banned("p")
    assert scores.graylisted("p", 5.0)  # held...
    assert not scores.graylisted("p", 15.0)  # ...then one half-life: 1.5
    assert not scores.graylisted("q", 0.0)


def test_a_ban_runs_out_and_the_record_is_forgotten() -> None:
    scores = PeerScores(CONFIG)
    for _ in range(5):
        scores.invalid("p", 0.0)
    assert scores.expired_bans(59.9) == []
    assert scores.expired_bans(60.0) == ["p"]
    assert not scores.banned("p") and scores.penalty("p", 60.0) == 0.0


def test_stale_frames_are_free_up_to_an_allowance() -> None:
    scores = PeerScores(ScoreConfig(stale_per_second=2.0, stale_burst=50, stale_weight=0.125))
    assert not any(scores.stale("p", 0.0) for _ in range(50))
    assert scores.penalty("p", 0.0) == 0.0
    banned = [scores.stale("p", 0.0) for _ in range(40)]
    assert banned[-1] and not any(banned[:-1])  # 40 over the allowance: 5.0
    # an honest trickle stays inside the allowance forever
    calm = PeerScores(ScoreConfig(stale_per_second=2.0, stale_burst=50, stale_weight=0.125))
    assert not any(calm.stale("p", i * 0.6) for i in range(10_000))
    assert calm.penalty("p", 6_000.0) == 0.0


def test_quiet_peers_are_forgotten() -> None:
    scores = PeerScores(CONFIG)
    scores.invalid("p", 0.0)
    scores.stale("q", 0.0)
    scores.forget_quiet(200.0)
    assert scores.snapshot(200.0) == {}
