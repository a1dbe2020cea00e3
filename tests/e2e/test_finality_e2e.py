"""Finality with real node processes on 127.0.0.1: a requester node, two provers.

An ask is proven and paid (the requester awarded the winner, then accepted its
proof). A minute later three rewrites are tried, each submitted to every node:

- a commit held back by a third prover: signed inside the ask's first window at a
  lower price than the winner's (so without the award it would win), published
  with its bid only now;
- a twin of the paid ask: the requester's own key, same nonce, signed 1 ms earlier,
  allowing only a random key (before, it replaced the paid ask and took its commit,
  proof and receipt along);
- a twin of the winner's bid: same seq, earlier, another price (before, it replaced
  the bid and took the winning commit along).

Every node ignores each with its named reason, and the ask stays proven, with the
same winner and the same amount paid."""

from __future__ import annotations

import functools
import time
from contextlib import ExitStack
from pathlib import Path

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id, message_id
from p2p_market.markets.descriptor import read_descriptor
from p2p_market.markets.devnet import Actor
from tests.e2e.test_cli_e2e import quick_market, wait_state
from tests.e2e.test_market_e2e import PROVER_2, api_of, has_bids, node_config, wait_for
from tests.processes import ANY_LISTEN, process

HOLD_S = 60


def test_a_paid_ask_cannot_be_rewritten_a_minute_later(tmp_path: Path) -> None:
    descriptor = quick_market(tmp_path)
    market = read_descriptor(descriptor)
    mid = market_id(market).hex()
    config = node_config(tmp_path, "requester-1", descriptor, extra="[requester]\n")
    with ExitStack() as stack:
        _, requester = stack.enter_context(process("node", "run", "--config", str(config)))
        apis = {"requester-1": api_of(requester)}
        for name, price in (("prover-1", 9), ("prover-2", 4)):
            args = [
                "prover", "run", "--market", str(descriptor), "--price", str(price),
                "--proof-time", "3000", "--devnet-key", name,
                "--data-dir", str(tmp_path / name), "--bootstrap", requester["addr"], *ANY_LISTEN,
            ]  # fmt: skip
            _, ready = stack.enter_context(process(*args))
            apis[name] = api_of(ready)
        for name, api in apis.items():
            wait_for(f"both bids on {name}", functools.partial(has_bids, api, mid))

        placed = apis["requester-1"].place_ask(
            {"market": mid, "max_price": 20, "max_proof_time": 10_000, "inputs": b"pay me".hex()}
        )
        assert placed.status == "accept", placed
        ask = placed.id
        for name, api in apis.items():
            view = wait_state(api, ask, "proven", timeout=40)
            assert view["winners"] == [PROVER_2] and view["paid"] == 4, name
        proven_at = time.monotonic()
        view = apis["requester-1"].ask(ask)
        ask_ts, nonce = view["timestamp"], view["nonce"]
        winner_bid = next(
            b for b in apis["requester-1"].book(mid)["bids"] if b["prover"] == PROVER_2
        )

        sneak = Actor("prover-3", market)
        held_bid = sneak.bid(now=ask_ts - 10, price=1, proof_time=3_000, seq=1)
        held = sneak.commit(
            now=ask_ts + 100, ask=bytes.fromhex(ask), bid=message_id(held_bid), price=1,
            proof_time=3_000,
        )  # fmt: skip
        requester_actor = Actor("requester-1", market)
        ask_twin = requester_actor.ask(
            now=ask_ts - 1, max_price=20, max_proof_time=10_000, ttl=600_000, nonce=nonce,
            allow=(devnet_key("nobody").public_key,),
        )  # fmt: skip
        bid_twin = Actor("prover-2", market).bid(
            now=winner_bid["timestamp"] - 1, price=7, proof_time=3_000, seq=winner_bid["seq"]
        )
        time.sleep(max(0.0, proven_at + HOLD_S - time.monotonic()))

        for name, api in apis.items():
            assert api.submit(held_bid).status in ("accept", "ignore"), name  # a new bid
            got = api.submit(held)
            assert (got.status, got.reason) == ("ignore", "after_award"), (name, got)
            got = api.submit(ask_twin)
            assert (got.status, got.reason) == ("ignore", "equivocation"), (name, got)
            got = api.submit(bid_twin)
            assert (got.status, got.reason) == ("ignore", "equivocation"), (name, got)
        time.sleep(2)  # whatever gossip or sync does with them meanwhile
        for name, api in apis.items():
            view = api.ask(ask)
            assert view["state"] == "proven", name
            assert view["winners"] == [PROVER_2], name
            assert view["slot_states"] == ["accepted"], name
            assert view["paid"] == 4, name
