"""What a fuzz target is: one parser's contract, its seed inputs, and how to run it.

The contract lives in `check`: it feeds the bytes to the parser and catches only
the parser's named rejection, so any other exception propagates and is the crash.
Invariants beyond "no stray exception" (a decoded frame re-encodes to the same
bytes, say) raise `ContractBroken`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class ContractBroken(AssertionError):
    """A parser returned, but what it returned breaks its documented contract."""


def directly(run: Callable[[], None]) -> None:
    """The default session: no context is needed around the parser."""
    run()


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    about: str
    check: Callable[[bytes], None]
    """Runs the parser on one input; returns normally when the contract holds."""
    seeds: Callable[[], list[bytes]]
    """Valid inputs built in code (real keys, real signatures), so coverage starts
    from the deep paths rather than from the first length check."""
    structured: bool = False
    """The input is msgpack (after a byte or two of mode): mutate it as a value too
    (mutator.py), not only as bytes."""
    session: Callable[[Callable[[], None]], None] = directly
    """Runs the whole fuzz loop (or one replay) inside whatever the parser needs:
    the sync server reads trio's clock, so its target runs inside `trio.run`."""
