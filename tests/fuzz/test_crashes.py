"""Every input the fuzzer ever found breaking a contract, replayed in plain Python
through its target's check (tests/fuzz/crashes/<target>-<sha1>.bin): a crash found
once stays a test. Inputs whose bug is known and not yet fixed are listed in OPEN:
they must still fail (strict xfail), so a fix is noticed and the entry removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_market.fuzz.replay import replay, saved_inputs, target_of

CRASHES = Path(__file__).parent / "crashes"

OPEN: dict[str, tuple[type[BaseException], str]] = {}
"""Saved inputs of bugs not fixed yet: file name -> (the exception, why)."""


def _cases() -> list[object]:
    cases: list[object] = []
    for path in saved_inputs(CRASHES):
        if path.name in OPEN:
            raises, why = OPEN[path.name]
            mark = pytest.mark.xfail(strict=True, raises=raises, reason=why)
            cases.append(pytest.param(path, marks=mark, id=path.name))
        else:
            cases.append(pytest.param(path, id=path.name))
    return cases


@pytest.mark.parametrize("path", _cases())
def test_a_saved_input_keeps_its_targets_contract(path: Path) -> None:
    replay(target_of(path), path.read_bytes())


def test_every_open_bug_has_its_input_saved() -> None:
    names = {p.name for p in saved_inputs(CRASHES)}
    assert set(OPEN) <= names


def test_every_saved_input_names_a_target() -> None:
    for path in saved_inputs(CRASHES):
        target_of(path)


def test_replay_sees_a_broken_contract() -> None:
    """The replay runs the fuzzer's own check, not a softer one: an input that
    breaks the strict test target's contract raises here too."""
    from p2p_market.net.frame import FrameError

    with pytest.raises(FrameError):
        replay("tests.fuzz.strict:STRICT", b"\xc1")
    replay("frame", b"\xc1")
    assert target_of(Path("frame-00.bin")) == "frame"
    with pytest.raises(ValueError, match="no fuzz target"):
        target_of(Path("nothing-00.bin"))
