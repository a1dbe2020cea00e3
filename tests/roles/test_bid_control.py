"""The checks and the start-up rule of roles/bid_control.py: an update is checked
as a config is, and a stored update applies at the next start only while the
config's terms are those it was made from."""

from __future__ import annotations

import dataclasses

import pytest

from p2p_market.core import limits as L
from p2p_market.roles.bid_control import BidTerms, StoredBid, at_start, updated

CONFIG = BidTerms(price=7, proof_time=10_000, capacity=1, max_size=1, bid_ttl_ms=600_000)
LIFETIME = 3_600_000


def test_an_update_is_checked_field_by_field() -> None:
    assert updated(CONFIG, {"price": 9, "capacity": 4}, LIFETIME) == dataclasses.replace(
        CONFIG, price=9, capacity=4
    )
    for changes, words in (
        ({"capacity": 0}, "capacity must be between 1 and 1024, not 0"),
        ({"capacity": L.MAX_CAPACITY + 1}, "capacity must be between 1 and 1024"),
        ({"proof_time": 0}, "proof time must be at least 1 ms"),
        ({"price": -1}, "price must be a non-negative integer"),
        ({"max_size": 0}, "max size must be between 1"),
        ({"bid_ttl_ms": 999}, "bid ttl must be 1000..3600000 ms"),
        ({"bid_ttl_ms": LIFETIME + 1}, "the market's max lifetime"),
        ({"colour": 1}, "unknown bid setting 'colour'"),
    ):
        with pytest.raises(ValueError, match=words):
            updated(CONFIG, changes, LIFETIME)


def test_a_stored_update_applies_while_the_config_is_unchanged() -> None:
    mine = dataclasses.replace(CONFIG, price=9)
    assert at_start(CONFIG, None) == (CONFIG, "active", "")
    terms, state, _ = at_start(CONFIG, StoredBid(mine, CONFIG, "active"))
    assert (terms, state) == (mine, "active")
    edited = dataclasses.replace(CONFIG, price=11)  # the operator edited the config
    terms, state, note = at_start(edited, StoredBid(mine, CONFIG, "paused"))
    assert (terms, state) == (edited, "paused") and "config" in note


def test_a_stored_row_reads_back_or_is_ignored() -> None:
    row = StoredBid(dataclasses.replace(CONFIG, capacity=3), CONFIG, "withdrawn")
    assert StoredBid.loads(row.dumps()) == row
    for bad in ("", "{}", "[]", '{"terms": 1, "base": 2, "state": "active"}', "nonsense"):
        assert StoredBid.loads(bad) is None
    assert StoredBid.loads(row.dumps().replace("withdrawn", "asleep")) is None
