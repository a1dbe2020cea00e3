"""The web console's static files (node/console/: plain HTML, CSS and JavaScript, no
build step, nothing fetched from elsewhere), as the control API serves them.

The console is a page on the API's own origin, so what it may do is pinned down by
its headers: a Content-Security-Policy that allows scripts, styles and connections
from the API alone (no inline script: markup injected through market data could not
run even if it were rendered, and it is not: console.js builds every element with
textContent), no framing (clickjacking), no referrer, nothing cached.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Final

FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
"""Every file the console has, with its media type: nothing else is served."""

HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@cache
def read(name: str) -> bytes:
    """A console file's bytes (KeyError for a name not in FILES)."""
    if name not in FILES:
        raise KeyError(f"no such console file: {name}")
    return (resources.files("p2p_market.node") / "console" / name).read_bytes()
