"""A byzantine prover node for simulations: `node run` with a lying back-end.

    python -m p2p_market.localnet.agent --config node.toml --behaviour invalid-proofs

The node itself (gossip, core, sync, API) is the honest one; only the proofs lie:

- ``invalid-proofs``: commits, wins, and delivers a proof that does not verify
  (at once: a cheater does not spend the work). The requester's receipt says
  INVALID and the ask goes to its next round.
- ``withhold``: commits and wins, then sits on the slot until its deadline and
  delivers nothing. The requester times the slot out and the ask goes on.

Exit status and ready line as `p2p-market node run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from p2p_market.proving.backend import ProofBackend, ProvingError

if TYPE_CHECKING:
    from p2p_market.core.messages import Market

BEHAVIOURS = ("invalid-proofs", "withhold")


class LyingBackend:
    """Wraps the market's real back-end; `prove` misbehaves, the rest is honest."""

    def __init__(self, inner: ProofBackend, behaviour: str) -> None:
        self.inner = inner
        self.behaviour = behaviour
        self._counter = 0

    async def prove(self, market: Market, inputs: bytes, deadline_s: float) -> bytes:
        if self.behaviour == "withhold":
            await trio.sleep(max(0.0, deadline_s))
            raise ProvingError("withheld (byzantine simulation node)")
        while True:  # a proof that does not verify; with pow, almost any bytes
            self._counter += 1
            proof = b"\xba\xd0" + self._counter.to_bytes(6, "big")
            if not await self.inner.verify(market, inputs, proof):
                await trio.sleep(0.05)
                return proof

    async def verify(self, market: Market, inputs: bytes, proof: bytes) -> bool:
        return await self.inner.verify(market, inputs, proof)

    async def check_inputs(self, market: Market, inputs: bytes) -> bool:
        return await self.inner.check_inputs(market, inputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p2p_market.localnet.agent")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--behaviour", choices=BEHAVIOURS, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    from p2p_market.node.config import ConfigError, load_config
    from p2p_market.node.keyfile import KeyFileError, read_key
    from p2p_market.node.service import configure_logging, serve_until_signal
    from p2p_market.roles.inbox import Inbox
    from p2p_market.roles.prover import ProverRole
    from p2p_market.roles.wiring import plan_from_config, ready_fields

    try:
        cfg = load_config(args.config)
        key = read_key(cfg.key_file, None)
        cfg, plan = plan_from_config(cfg, args.config.parent)
    except (ConfigError, KeyFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prover = plan.prover
    if prover is None:
        print("error: a byzantine agent needs a [prover] section", file=sys.stderr)
        return 2
    configure_logging(args.log_level)

    async def start(node: Any, nursery: trio.Nursery) -> dict[str, Any]:
        assert prover is not None
        backend = LyingBackend(
            prover.options.backend(prover.market, workers=prover.capacity), args.behaviour
        )
        role = ProverRole(node, backend, prover.settings, Inbox())
        await nursery.start(role.run)
        return {**ready_fields(plan), "behaviour": args.behaviour}

    trio.run(lambda: serve_until_signal(cfg, key, prover=True, start_roles=start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
