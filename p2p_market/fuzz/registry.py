"""The fuzz targets by name. The registry names modules rather than importing
them: the worker imports a target inside atheris's import hook, so the parsers
it loads are instrumented, and the CLI lists targets without loading any."""

from __future__ import annotations

import importlib
from typing import Final

from p2p_market.fuzz.target import Target

TARGETS: Final = {
    "envelope": "p2p_market.fuzz.targets.envelope",
    "frame": "p2p_market.fuzz.targets.frame",
    "sync": "p2p_market.fuzz.targets.sync",
    "direct": "p2p_market.fuzz.targets.direct",
    "peers": "p2p_market.fuzz.targets.peers",
    "artifact": "p2p_market.fuzz.targets.artifact",
    "announce": "p2p_market.fuzz.targets.announce",
    "config": "p2p_market.fuzz.targets.config",
    "keyfile": "p2p_market.fuzz.targets.keyfile",
}
"""Names hold no '-': a saved crash is `<name>-<sha1>.bin`."""

INSTRUMENTED: Final = ("p2p_market", "multiaddr")
"""Packages whose Python code the worker instruments for coverage (msgpack, PyNaCl
and cryptography are compiled: libFuzzer sees only what Python calls them with).
Not tomllib: atheris 2.3.0's instrumented copy of Python 3.11's tomllib dies of a
segmentation fault on the first valid config, so the TOML parser runs as is."""


def load(spec: str) -> Target:
    """A target by name, or by `module:attribute` (a target the tests define)."""
    module, _, attribute = spec.partition(":") if ":" in spec else (TARGETS[spec], "", "TARGET")
    target: Target = getattr(importlib.import_module(module), attribute)
    return target
