"""`simulate` with a signal that arrives while a child is being forked, for tests:

    python -m tests.localnet.signal_in_fork SCENARIO RUN_DIR SIGNUM FORK

raises SIGNUM in this process from an `os.register_at_fork` hook, right after the
FORK-th fork (1: the first node, or with a [network] the switch), runs the scenario
and prints one JSON line: whether the run says it was interrupted, its error, how many
times each node was started. Nodes and the switch are started with a `preexec_fn`, so
CPython runs the fork hooks then: a KeyboardInterrupt raised in one is printed and
dropped ("Exception ignored in ..."), which is how a Ctrl-C used to be lost."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from rich.console import Console

from p2p_market.localnet.run import simulate
from p2p_market.localnet.scenario_file import load_scenario


def main() -> None:
    scenario, run_dir, signum, fork = sys.argv[1:5]
    forks = 0

    def after_fork() -> None:
        nonlocal forks
        forks += 1
        if forks == int(fork):
            signal.raise_signal(int(signum))

    os.register_at_fork(after_in_parent=after_fork)
    data = simulate(load_scenario(Path(scenario)), Path(run_dir), Console(quiet=True))
    out = {
        "interrupted": data.interrupted,
        "error": data.error,
        "starts": {n.name: n.starts for n in data.nodes},
        "forks": forks,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
