"""Objective evidence and its consequence in the settlement.

Two different messages signed by one key with the same equivocation key (§7) prove
that the key's holder misbehaved: anyone can check the two signatures, and no one
else can have made them. So does a signed proof that its market's pure verifier
rejects for the ask's public inputs (statements.py): anyone can run the check. So
every node draws the same consequence from them, in the fold itself: from the
moment the evidence was complete (the later of the first two twins in signed
order; the invalid proof's own timestamp) and for one `max_lifetime` after, no
commit signed by that key can win in this market (protocols/market-v1.md §10,
rule 8a).

Subjective outcomes (a timeout, a proof a requester calls invalid that no pure
verifier can show to be) are the requester's word and never reach the settlement:
roles/reputation.py.

A function of the stored evidence alone, so nodes that hold the same messages
penalise alike, whatever order the twins came in; the fold is rebuilt whenever the
windows change, and a twin arriving late thaws the archived asks it may touch.
"""

from __future__ import annotations

from collections.abc import Iterable

from p2p_market.core.envelope import Envelope

Windows = dict[bytes, tuple[tuple[int, int], ...]]
"""Per signer, the sorted [start, end) intervals in which its commits cannot win."""


def _signed(env: Envelope) -> tuple[int, bytes]:
    return (env.message.timestamp, env.id)  # type: ignore[union-attr]


def penalty_windows(
    groups: Iterable[list[Envelope]], lifetime: int, singles: Iterable[Envelope] = ()
) -> Windows:
    """The windows proved by these groups of twins (each group: the stored messages
    of one signer with one equivocation key) and by these single messages, each
    evidence on its own (an invalid proof)."""
    found: dict[bytes, list[tuple[int, int]]] = {}
    proving = [sorted(group, key=_signed)[1] for group in groups if len(group) >= 2]
    for env in [*proving, *singles]:
        start = env.message.timestamp  # type: ignore[union-attr]
        found.setdefault(env.signer, []).append((start, start + lifetime))
    return {signer: _merged(spans) for signer, spans in sorted(found.items())}


def _merged(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)


def penalised(windows: Windows, signer: bytes, t: int) -> bool:
    return any(start <= t < end for start, end in windows.get(signer, ()))


def last_end(windows: Windows, signer: bytes) -> int | None:
    spans = windows.get(signer)
    return spans[-1][1] if spans else None
