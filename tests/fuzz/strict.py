"""Fuzz targets for the tests alone: real parsers under a contract too strict for
them, so the fuzzer must find a "crash" within a few inputs. They prove the runner
and the bounded pass see a broken contract (tests/fuzz/test_runner.py)."""

from __future__ import annotations

from p2p_market.fuzz.target import Target
from p2p_market.fuzz.targets import frame
from p2p_market.net.frame import decode_frame


def _frames_only(data: bytes) -> None:
    """As if the frame decoder's FrameError were not its named rejection: any
    mutated frame that is not canonical "crashes"."""
    decode_frame(data)


STRICT = Target(
    name="strict",
    about="the frame decoder, with FrameError counted as a crash",
    check=_frames_only,
    seeds=frame.seeds,
)
