"""The stateless half of validation, cheapest check first: size, decode, canonical
form, known kind, well-formed fields, then the signature. The stateful half (seen
cache, time, parents, ownership, equivocation) is MarketState's, because it needs
the book. The network's topic validator calls `check_form` and `check_signature`
before anything is forwarded.

A well-formed envelope of a kind this version does not know is IGNOREd as
`unknown_kind`, not REJECTed: it may be a later protocol version's, and whoever
forwarded it must not be blamed for it, or mixed versions would split the network
(market-v1.md, Protocol evolution). Its body is not decoded and its signature not
checked: it is never stored, applied nor forwarded, so nothing depends on them."""

from __future__ import annotations

from p2p_market.core import limits as L
from p2p_market.core.codec import CodecError
from p2p_market.core.crypto import verify
from p2p_market.core.envelope import Envelope, UnknownKind, parse
from p2p_market.core.messages import MessageError
from p2p_market.core.verdict import ACCEPTED, Reason, Verdict, ignore, reject


def check_form(raw: bytes) -> tuple[Verdict, Envelope | None]:
    """Everything short of the signature. Returns the parsed envelope when well-formed;
    otherwise None and a REJECT, or IGNORE `unknown_kind` (the one form verdict that
    blames nobody)."""
    if len(raw) > L.MAX_ENVELOPE_BYTES:
        return reject(Reason.OVERSIZED, f"{len(raw)} > {L.MAX_ENVELOPE_BYTES} bytes"), None
    try:
        env = parse(raw)
    except CodecError as exc:
        reason = Reason.NOT_CANONICAL if exc.canonical_violation else Reason.UNDECODABLE
        return reject(reason, str(exc)), None
    except UnknownKind as exc:
        return ignore(Reason.UNKNOWN_KIND, str(exc)), None
    except (MessageError, TypeError) as exc:
        return reject(Reason.BAD_FIELDS, str(exc)), None
    return ACCEPTED, env


def check_signature(env: Envelope) -> Verdict:
    if not verify(env.signer, env.payload, env.signature):
        return reject(Reason.BAD_SIGNATURE)
    return ACCEPTED


def check_envelope(raw: bytes) -> tuple[Verdict, Envelope | None]:
    verdict, env = check_form(raw)
    if env is None:
        return verdict, None
    verdict = check_signature(env)
    return verdict, env if verdict.accepted else None
