"""Markets named by id alone, on the command line or in a config: resolved from what
this machine holds, else fetched from the bootstrap peers (node/join.py) before
anything starts. Shared by `prover run`, `node run` and `request`, so that each of
them needs nothing but a market's id and a peer's address.

Blocking (one short trio run per market): for the CLI, before a node starts.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from p2p_market.cli.common import fail
from p2p_market.core.messages import Market

if TYPE_CHECKING:
    from p2p_market.node.config import NodeConfig


def on_artifact_path(data_dir: Path) -> None:
    """Put `data_dir`'s artifacts/ (where fetched artifacts go) first on the
    artifact search path ($P2P_MARKET_ARTIFACTS), so the back-ends find them."""
    from p2p_market.node.join import store_dir
    from p2p_market.proving import snark

    store = str(store_dir(data_dir))
    current = [p for p in os.environ.get(snark.ARTIFACTS_ENV, "").split(os.pathsep) if p]
    if store not in current:
        os.environ[snark.ARTIFACTS_ENV] = os.pathsep.join([store, *current])


def resolve_or_join(
    spec: str,
    *,
    data_dir: Path,
    bootstrap: Sequence[str],
    base: Path = Path(),
    also: Iterable[Market] = (),
    kinds: Collection[str] | None = None,
) -> Market | None:
    """The market `spec` names if it is a 64-hex market id: found locally (`also`,
    `<base>/markets`, an earlier join into `data_dir`) with every artifact it pins,
    else fetched from `bootstrap` into `data_dir`. None if `spec` is not an id (the
    caller resolves it as usual). `kinds`: only these artifacts are needed (a
    requester's: wasm and vkey). Fails (one line, exit 2) if it cannot be had."""
    import trio

    from p2p_market.markets.descriptor import MarketSpecError, is_market_id, resolve_market
    from p2p_market.node.artifacts import artifact_name, pinned
    from p2p_market.node.join import JoinError, fetched_descriptor, join_market
    from p2p_market.proving import snark

    on_artifact_path(data_dir)
    spec = spec.strip()
    if not is_market_id(spec):
        return None
    mid = bytes.fromhex(spec)
    fetched = fetched_descriptor(data_dir, mid)
    try:
        known: Market | None = resolve_market(
            spec, base=base, also=(*also, *([fetched] if fetched else []))
        )
    except MarketSpecError as exc:
        if not bootstrap:
            fail(f"{exc}; or give --bootstrap to fetch it from peers")
        known = None
    dirs = snark.artifact_dirs()
    missing = known is None or any(
        not any((d / artifact_name(sha, kind)).is_file() for d in dirs)
        for sha, kind in pinned(known).items()
        if kinds is None or kind in kinds
    )
    if not missing or not bootstrap:
        return known
    quiet = logging.getLogger("libp2p")  # failed dials: the JoinError names them once
    level = quiet.level
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        quiet.setLevel(logging.CRITICAL)
    try:
        joined = trio.run(
            functools.partial(
                join_market, mid, bootstrap, data_dir, search=dirs, known=known, kinds=kinds
            )
        )
    except JoinError as exc:
        fail(f"unknown market id {spec[:16]}…: {exc}")
    finally:
        quiet.setLevel(level)
    size = sum(p.stat().st_size for p in joined.artifacts.values())
    got = sum(joined.report.received.values())
    typer.echo(
        f"fetched market {joined.market.name}: descriptor {joined.descriptor},"
        f" {len(joined.artifacts)} artifacts ({size} bytes, {got} fetched)"
        f" in {joined.report.elapsed_s:.2f} s",
        err=True,
    )
    return joined.market


def resolve_listed(cfg: NodeConfig, base: Path) -> NodeConfig:
    """`cfg` with every market its `[[markets]]` names by an id this machine does not
    hold (`cfg.market_ids`) fetched from `node.bootstrap` and followed. Fails (one
    line, exit 2) if one cannot be had."""
    import dataclasses

    from p2p_market.roles.wiring import follow

    for mid in cfg.market_ids:
        market = resolve_or_join(
            mid.hex(), data_dir=cfg.data_dir, bootstrap=cfg.bootstrap, base=base, also=cfg.markets
        )
        assert market is not None  # an id, so resolved or failed
        cfg = follow(cfg, market)
    return dataclasses.replace(cfg, market_ids=())
