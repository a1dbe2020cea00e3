"""Buy one proof from an asyncio program, through a running node's control API.

    python examples/asyncio_request.py --api http://127.0.0.1:8080 \\
        --token-file data/node/api.token --inputs "my inputs" --out proof.bin

The node must run with a `[requester]` section (`p2p-market node run`, docs/config.md):
it signs the ask with its key and verifies and pays for the proof. While the market
works, the ask's state changes are printed from the node's event stream, by an asyncio
task of the program's own. Exit status: 0 with the proof written, 2 for bad
input (arguments, token file, a refused token or terms), 1 when no proof came.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from p2p_market import sdk_http


async def print_states(node: sdk_http.NodeClient, subscribed: asyncio.Event) -> None:
    """Every ask's state change, from the moment the stream is live."""
    async with node.events() as stream:
        subscribed.set()
        async for event in stream:
            if event.kind == "ask_state":
                print(f"ask {event.data['ask'][:16]}… {event.data['after']}", file=sys.stderr)


async def buy(args: argparse.Namespace) -> sdk_http.ProofResult:
    async with sdk_http.connect(args.api, token_file=args.token_file) as node:
        bids = await node.wait_for_provers(
            max_price=args.max_price, max_proof_time=args.max_proof_time
        )
        print(f"{len(bids)} prover(s) within the caps; cheapest {bids[0].price}", file=sys.stderr)
        subscribed = asyncio.Event()
        printer = asyncio.create_task(print_states(node, subscribed))
        try:
            await subscribed.wait()
            ask = await node.place_ask(
                args.inputs.encode(), max_price=args.max_price, max_proof_time=args.max_proof_time
            )
            return await node.wait(ask, timeout=args.timeout)
        finally:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True, help="the node's control API, http://host:port")
    parser.add_argument("--token-file", required=True, help="the node's api.token")
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--max-price", type=int, default=20)
    parser.add_argument("--max-proof-time", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        result = asyncio.run(buy(args))
    except (ValueError, sdk_http.BadToken) as exc:  # TokenError and BadRequest are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sdk_http.SdkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.write_bytes(result.proof)
    print(f"ask {result.ask.hex()} proven, paid {result.paid}: {len(result.proof)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
