"""One fuzz target under atheris, in a process of its own (started by runner.py):

    python -m p2p_market.fuzz.worker TARGET CORPUS_DIR [libFuzzer flags...] [DIR...]

The target is imported inside atheris's import hook so the project's parsers are
instrumented; its seeds are written into CORPUS_DIR, and libFuzzer runs from there
(and from the inputs in the other DIRs, if any: it adds new ones to CORPUS_DIR only)
until its `-runs` are done (it then exits the process) or an input breaks the
contract (it writes the input under `-artifact_prefix` and exits nonzero)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from p2p_market.fuzz.mutator import mutate, repeat
from p2p_market.fuzz.registry import INSTRUMENTED, TARGETS, load
from p2p_market.fuzz.target import fuzzed


def main(argv: list[str]) -> None:
    import atheris

    name, corpus, rest = argv[1], Path(argv[2]), argv[3:]
    flags = [a for a in rest if a.startswith("-")]
    more = [a for a in rest if not a.startswith("-")]
    harness = [*TARGETS.values(), "p2p_market.fuzz.samples"]
    with atheris.instrument_imports(include=INSTRUMENTED, exclude=harness):
        target = load(name)
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in target.seeds():
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)

    mutators = {"msgpack": mutate, "text": repeat}
    extra = {}
    if target.mutation in mutators:
        how = mutators[target.mutation]

        def mutator(data: bytes, max_size: int, seed: int) -> bytes:
            return how(data, max_size, seed, atheris.Mutate)

        extra["custom_mutator"] = mutator
    atheris.Setup([argv[0], *flags, str(corpus), *more], fuzzed(target), **extra)
    target.session(atheris.Fuzz)


if __name__ == "__main__":
    main(sys.argv)
