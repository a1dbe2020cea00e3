"""What a fuzz target is: one parser's contract, its seed inputs, and how to run it.

The contract lives in `check`: it feeds the bytes to the parser and catches only
the parser's named rejection, so any other exception propagates and is the crash.
Invariants beyond "no stray exception" (a decoded frame re-encodes to the same
bytes, say) raise `ContractBroken`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


class ContractBroken(AssertionError):
    """A parser returned, but what it returned breaks its documented contract."""


def directly(run: Callable[[], None]) -> None:
    """The default session: no context is needed around the parser."""
    run()


def fuzzed(target: Target) -> Callable[[bytes], None]:
    """The check the fuzzer runs: the target's, passing over its known open bug."""
    known = target.known_open
    if known is None:
        return target.check

    def check(data: bytes) -> None:
        try:
            target.check(data)
        except Exception as exc:
            if not known(data, exc):
                raise

    return check


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    about: str
    check: Callable[[bytes], None]
    """Runs the parser on one input; returns normally when the contract holds."""
    seeds: Callable[[], list[bytes]]
    """Valid inputs built in code (real keys, real signatures), so coverage starts
    from the deep paths rather than from the first length check."""
    known_open: Callable[[bytes, Exception], bool] | None = None
    """Whether an exception is a bug already found, saved and listed as open (a strict
    xfail in tests/fuzz/test_crashes.py) but not fixed, because its module is another
    branch's work in progress. The fuzzer passes over the inputs it matches and keeps
    searching for new bugs; a replay does not, so the regression test still sees it.
    Match the bug exactly, so that it hides nothing else."""
    mutation: Literal["bytes", "msgpack", "text"] = "bytes"
    """How libFuzzer's byte mutation is helped (mutator.py): "msgpack" for input that
    is msgpack (after a byte or two of mode), mutated as a value too; "text" for
    text, with pieces repeated; "bytes" for neither."""
    session: Callable[[Callable[[], None]], None] = directly
    """Runs the whole fuzz loop (or one replay) inside whatever the parser needs:
    the sync server reads trio's clock, so its target runs inside `trio.run`."""
