"""`request --allow/--deny`: a start of a key is waited for, not refused, while the
bid it names has not come yet (CI run of f25074b: `--deny c9b26afe179f` was refused
because the dearer prover's bid, enough to end discovery, came first)."""

from __future__ import annotations

import pytest

from p2p_market.cli.prover_specs import BadSpec, ProverSpecs

CHEAP = "c9b26afe179f" + "0" * 52
DEAR = "d40741af378d" + "1" * 52


def test_a_start_of_a_key_is_unmatched_until_its_bid_is_seen() -> None:
    specs = ProverSpecs(deny=(CHEAP[:12],))
    assert specs.unmatched([DEAR]) == [CHEAP[:12]]  # only the other bid so far
    with pytest.raises(BadSpec):  # what resolving then did
        specs.resolve([DEAR])
    assert specs.unmatched([DEAR, CHEAP]) == []
    assert specs.resolve([DEAR, CHEAP]) == ([], [CHEAP])


def test_full_keys_need_no_bid_and_no_specs_wait_for_nothing() -> None:
    assert ProverSpecs(allow=(DEAR,)).unmatched([]) == []
    assert ProverSpecs().unmatched([]) == []
