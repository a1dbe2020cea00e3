"""Protocol-wide bounds. They are part of the wire protocol (protocols/market-v1.md):
changing one changes which envelopes are valid, so they live in one place."""

from typing import Final

PROTOCOL_DOMAIN: Final = b"p2p-market/v1\x00"

MAX_KIND: Final = 255
"""Kind codes are 0..255: the signing payload carries the kind as one byte. v1
defines 1..9; the other codes are left to later versions (market-v1.md, Protocol
evolution)."""

MAX_ENVELOPE_BYTES: Final = 64 * 1024
"""Checked before decoding: nothing larger is ever parsed."""

MAX_INLINE_INPUT_BYTES: Final = 32 * 1024
MAX_INLINE_PROOF_BYTES: Final = 48 * 1024
MAX_TEXT_CHARS: Final = 256
MAX_NAME_CHARS: Final = 64
MAX_LIST_ITEMS: Final = 64
MAX_REPLICAS: Final = 16
MAX_CAPACITY: Final = 1024
MAX_SIZE: Final = 2**40
"""The largest work size an ask may declare or a bid accept (core/work.py): a pow
ask of difficulty 40 in a market of difficulty 0."""
MAX_UINT: Final = 2**63 - 1
"""Integers are non-negative and fit in a signed 64-bit slot on every platform."""

KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
HASH_BYTES: Final = 32

# Market defaults (a market descriptor may choose others within the bounds below).
DEFAULT_COMMIT_WINDOW_MS: Final = 3_000
DEFAULT_STAGE_MS: Final = 500
DEFAULT_SKEW_MS: Final = 2_000
DEFAULT_MAX_LIFETIME_MS: Final = 24 * 3600 * 1000
MIN_COMMIT_WINDOW_MS: Final = 100
MAX_COMMIT_WINDOW_MS: Final = 600_000
MAX_SKEW_MS: Final = 60_000
MAX_LIFETIME_MS: Final = 30 * 24 * 3600 * 1000
DEFAULT_AWARD_LAG_MS: Final = 250
"""The reference requester's award lag (market-v1.md §12; roles/requester.py says
why): a policy, not a rule, so no descriptor field; the simulators use it too."""

MAX_PENDING_ORPHANS: Final = 10_000
"""Messages whose parent (ask or bid) has not arrived yet are held, up to this many."""
MAX_PENDING_ORPHAN_BYTES: Final = 16 * 1024 * 1024
"""...and up to this many bytes of them (orphan proofs of 48 KiB each would otherwise
hold 480 MB at the count limit)."""
