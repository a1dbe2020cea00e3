"""Joining a market known only by its id: fetch its descriptor and artifacts from
peers before the node starts (protocols/market-v1.md §25).

A node's markets are fixed when it starts (its core states, gossip topics, roles
and their proof back-ends are built from them), so a market id the node has no
descriptor for is resolved first, here: a short-lived host with a throwaway key
(the fetch need not say who is about to join) dials the bootstrap peers, asks them
for the descriptor by its hash (the id) and for every artifact it pins that is
not found locally, writes the descriptor to `<data dir>/markets/<id>.toml` (so the
next start needs no network) and the artifacts to `<data dir>/artifacts/` (on the
node's artifact search path, runtime.py), and stops. Nothing fetched is believed:
each file is checked against the hash the id commits to (node/artifacts.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio
from libp2p.abc import IHost

from p2p_market.core.crypto import SigningKey
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market
from p2p_market.markets.descriptor import MarketSpecError, read_descriptor, write_descriptor
from p2p_market.net.host import connect_all, make_host
from p2p_market.node import peers
from p2p_market.node.artifacts import ArtifactFetcher, FetchError, FetchLimits, FetchReport

log = logging.getLogger(__name__)

DEFAULT_JOIN_TIMEOUT_S: Final = 600.0
"""Everything a join fetches, at most (64 MiB artifacts at the minimum rate: 256 s)."""


REQUESTER_ARTIFACTS: Final = ("wasm", "vkey")
"""What a requester needs of a circuit market: the witness generator (its input
check) and the verification key; not the proving key, often the largest."""


def markets_dir(data_dir: Path) -> Path:
    """Where a node keeps the descriptors it fetched by id."""
    return data_dir / "markets"


def store_dir(data_dir: Path) -> Path:
    """Where a node keeps the artifacts it fetched (runtime.artifacts_path)."""
    return data_dir / "artifacts"


def fetched_descriptor(data_dir: Path, mid: bytes) -> Market | None:
    """The descriptor of `mid` an earlier join wrote, if any (and if it still reads
    back as that market)."""
    path = markets_dir(data_dir) / f"{mid.hex()}.toml"
    try:
        market = read_descriptor(path)
    except MarketSpecError:
        return None
    return market if market_id(market) == mid else None


@dataclass
class Joined:
    market: Market
    artifacts: dict[str, Path]
    report: FetchReport
    descriptor: Path


class JoinError(Exception):
    """The market could not be resolved from the peers; the message says why."""


async def join_market(
    mid: bytes,
    bootstrap: Sequence[str],
    data_dir: Path,
    *,
    search: Sequence[Path] = (),
    listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
    limits: FetchLimits | None = None,
    timeout_s: float = DEFAULT_JOIN_TIMEOUT_S,
    known: Market | None = None,
    kinds: Collection[str] | None = None,
) -> Joined:
    """Resolve market `mid` from the peers at `bootstrap`: its descriptor (unless an
    earlier join wrote it) and each pinned artifact not already in `data_dir`'s
    artifacts/ or `search`; `known`: the descriptor is at hand, only the artifacts
    are wanted; `kinds`: only those artifacts (a requester verifies and checks
    inputs with the vkey and wasm: it needs no proving key). JoinError if no peer
    serves them right."""
    host, addrs = make_host(SigningKey(os.urandom(32)), listen)
    report = FetchReport()
    started = trio.current_time()
    outcome: tuple[Market, dict[str, Path]] | JoinError | None = None
    with trio.move_on_after(timeout_s):
        async with host.run(addrs):
            try:
                outcome = await _resolve(
                    host, mid, bootstrap, data_dir, search, limits, report, known, kinds
                )
            finally:
                with trio.move_on_after(5) as scope:
                    scope.shield = True
                    await host.close()
    if outcome is None:
        raise JoinError(f"market {mid.hex()[:16]}… not resolved within {timeout_s:g} s")
    if isinstance(outcome, JoinError):
        raise outcome
    market, files = outcome
    report.elapsed_s = trio.current_time() - started
    path = markets_dir(data_dir) / f"{mid.hex()}.toml"
    if not path.exists():
        write_descriptor(path, market)
    return Joined(market, files, report, path)


async def _resolve(
    host: IHost,
    mid: bytes,
    bootstrap: Sequence[str],
    data_dir: Path,
    search: Sequence[Path],
    limits: FetchLimits | None,
    report: FetchReport,
    known: Market | None,
    kinds: Collection[str] | None,
) -> tuple[Market, dict[str, Path]] | JoinError:
    """The descriptor and artifacts, or the JoinError to raise (returned, not raised,
    so that it leaves the host's nursery as itself, not inside an exception group)."""
    failed = await connect_all(host, list(bootstrap))
    linked = peers.connected_peers(host)
    if not linked:
        why = "; ".join(f"{a}: {e!r}"[:160] for a, e in failed.items())
        return JoinError(f"no bootstrap peer answered ({why or 'none given'})")
    fetcher = ArtifactFetcher(host, store_dir(data_dir), limits or FetchLimits())
    try:
        market = known or fetched_descriptor(data_dir, mid)
        if market is None:
            market = await fetcher.descriptor(mid, linked, report)
        return market, await fetcher.artifacts(market, linked, search, report, kinds)
    except FetchError as exc:
        return JoinError(f"market {mid.hex()[:16]}… not resolved from peers: {exc}")
