"""How a patch of py-libp2p makes sure it meets the code it was written for.

Each patch module (libp2p_patches.py, libp2p_speedups.py, mesh_backoff.py) names
the library release it was written for and the SHA-256 of the source of every
function it replaces, extends or relies on. On any other code it is not applied,
and says why: a patch silently applied to code it was not written for could do
anything.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterable
from importlib.metadata import version


def source_sha256(obj: object) -> str:
    """The SHA-256 of a function's (or class's) source as installed."""
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()  # type: ignore[arg-type]


def misfit(pinned_version: str, pins: Iterable[tuple[str, object, str]], what: str) -> str | None:
    """None if the installed py-libp2p is `pinned_version` and each pinned object's
    source (label, object, expected SHA-256) is as expected; else why not, in one
    line naming `what` (the patch, the fix)."""
    installed = version("libp2p")
    if installed != pinned_version:
        return f"libp2p {installed} installed, the {what} is for {pinned_version}"
    for label, obj, expected in pins:
        if source_sha256(obj) != expected:
            return f"{label} is not the code the {what} was written for"
    return None
