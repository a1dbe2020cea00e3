"""Saved inputs, replayed in plain Python (no atheris): a crash found once is kept
as `<target>-<sha1>.bin` and replayed by the tests forever after."""

from __future__ import annotations

from pathlib import Path

from p2p_market.fuzz.registry import TARGETS, load


def target_of(path: Path) -> str:
    """The target a saved input belongs to, from its name `<target>-<sha1>.bin`."""
    name = path.name.split("-", 1)[0]
    if name not in TARGETS:
        raise ValueError(f"{path.name}: no fuzz target {name!r}")
    return name


def saved_inputs(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.bin"))


def replay(name: str, data: bytes) -> None:
    """Run one input through the target's contract check, exactly as the fuzzer
    does; a broken contract raises."""
    target = load(name)
    target.session(lambda: target.check(data))
