"""The scenario file's [run] and [network] sections as a schema (node/config_schema.py
does the node config's): their keys' types, bounds, defaults and descriptions, checked
by localnet/scenario_file.py and written into docs/config.md by `p2p-market config
reference`. The other sections are made of other schemas' keys ([market]: a
descriptor's, [workload] and a requester's [[nodes]] keys: the node config's
[workload], a prover's: its [prover]) and are checked by those, through the node
config each node gets; [[faults]] depend on the run and its nodes."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator

from p2p_market.markets.schema import Section, key, problem


def _run_name(value: str) -> str:
    # it names the report folder: no path separators, no "..", nothing hidden
    if not value.replace("-", "").replace("_", "").replace(".", "").isalnum() or len(value) > 64:
        raise problem(" must be letters, digits, -, _ or . (at most 64)")
    if value.startswith("."):
        raise problem(" must not start with a dot")
    return value


def _non_empty(value: str) -> str:
    if not value:
        raise problem(" must be a non-empty string")
    return value


class RunSection(Section):
    """[run]: the run as a whole."""

    name: Annotated[str, AfterValidator(_run_name)] | None = key(
        "names the report folder (`<name>-<time>`) and the market (`sim-<name>`)",
        None,
        kind="string: letters, digits, `-`, `_`, `.` (not first); at most 64",
        default_text=("the file's name without `.toml`"),
    )
    seed: int = key(
        "the `i`-th requester (from 0, in file order) runs its workload with seed `seed·1000 + i`",
        0,
    )
    duration_s: float = key(
        "length of the workload phase (`--duration` overrides it)",
        60.0,
        ge=1,
        le=3600,
        default_text=("`60`"),
    )
    settle_s: float = key(
        "the longest to wait after it for the asks to end (`--settle` overrides it)",
        30.0,
        ge=0,
        le=3600,
        default_text=("`30`"),
    )
    frames_per_second: float = key("every node's `node.frames_per_second`", 2.0, ge=0.1, le=1000)
    sync_every_s: float = key(
        (
            "every node's `node.sync_every_s` (shorter than a node's default, for the "
            "scenarios' short-lived asks)"
        ),
        5.0,
        ge=0.5,
        le=3600,
    )
    report_dir: Annotated[str, AfterValidator(_non_empty)] = key(
        "where the report folders go, relative to the scenario file (`--out` overrides it)",
        "reports",
        kind=("string (path)"),
    )
    strict_agreement: bool = key(
        (
            "every honest node must report the same `state_hash`; without it, a difference "
            "only by asks that expired unassigned and reached some nodes after their expiry is "
            "reported as explained, not a failure"
        ),
        False,
    )
    agree_within_s: float | None = key(
        (
            "the longest the final comparison waits for every node to agree; a scenario with a "
            "long partition sets more, to measure the catch-up rather than stop before it"
        ),
        None,
        ge=1,
        le=3600,
        default_text=("`sync_every_s` + 15"),
    )


class NetworkSection(Section):
    """[network]: the emulated links of a run in network namespaces."""

    rtt_ms: float = key(
        "round trip between any two nodes, ms (half of it each way)",
        0.0,
        ge=0,
        le=10_000,
        default_text=("`0`"),
    )
    jitter_ms: float = key(
        "± uniformly around each frame's one-way delay, ms; frames on one link stay in order",
        0.0,
        ge=0,
        le=10_000,
        default_text=("`0`"),
    )
    loss: float = key(
        "the share of frames dropped, per frame and per direction (`0.01` is 1 %)",
        0.0,
        ge=0,
        le=0.5,
        default_text=("`0`"),
    )


SCENARIO_SECTIONS: Final[dict[str, type[Section]]] = {"run": RunSection, "network": NetworkSection}
