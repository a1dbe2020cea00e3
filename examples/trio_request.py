"""Buy one proof from a trio program, through a running node's control API.

    python examples/trio_request.py --api http://127.0.0.1:8080 \\
        --token-file data/node/api.token --inputs "my inputs" --out proof.bin

The same SDK as examples/asyncio_request.py (p2p_market.sdk_http runs on anyio): only
the program around it is trio's. The ask's state changes are printed from the node's
event stream by a task in the program's nursery, started with `nursery.start` so that
the ask is placed only once the stream is live. Exit status: 0 with the proof written,
2 for bad input (arguments, token file, a refused token or terms), 1 when no proof came.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from p2p_market import sdk_http

if TYPE_CHECKING:  # trio.TaskStatus; trio_typing's stubs (this repo's mypy) name it so
    from trio_typing import TaskStatus


async def print_states(
    node: sdk_http.NodeClient, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Every ask's state change, from the moment the stream is live."""
    async with node.events() as stream:
        task_status.started()
        async for event in stream:
            if event.kind == "ask_state":
                print(f"ask {event.data['ask'][:16]}… {event.data['after']}", file=sys.stderr)


async def buy(args: argparse.Namespace) -> sdk_http.ProofResult:
    async with sdk_http.connect(args.api, token_file=args.token_file) as node:
        bids = await node.wait_for_provers(
            max_price=args.max_price, max_proof_time=args.max_proof_time
        )
        print(f"{len(bids)} prover(s) within the caps; cheapest {bids[0].price}", file=sys.stderr)
        async with trio.open_nursery() as nursery:
            await nursery.start(print_states, node)
            ask = await node.place_ask(
                args.inputs.encode(), max_price=args.max_price, max_proof_time=args.max_proof_time
            )
            result = await node.wait(ask, timeout=args.timeout)
            nursery.cancel_scope.cancel()
        return result


def first(exc: BaseException) -> BaseException:
    """The error inside a nursery's ExceptionGroup."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


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
        result = trio.run(buy, args)
    except Exception as caught:
        exc = first(caught)
        if isinstance(exc, ValueError | sdk_http.BadToken):  # TokenError, BadRequest too
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, sdk_http.SdkError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    args.out.write_bytes(result.proof)
    print(f"ask {result.ask.hex()} proven, paid {result.paid}: {len(result.proof)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
