"""Direct messages (confidential inputs, large proofs) wait here until a role asks
for them; a role may ask before or after the message arrives. Only what a role
said it expects is let in, and that is decided on the signed header (`wants`),
before the body is read."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from p2p_market.node.direct import DirectMessage, Header

Key = tuple[str, bytes, bytes]  # (kind, ask, sender)


@dataclass
class Inbox:
    max_items: int = 256
    _items: dict[Key, bytes] = field(default_factory=dict)
    _waiting: dict[Key, trio.Event] = field(default_factory=dict)
    accepts: set[Key] = field(default_factory=set)
    """(kind, ask, sender) this node expects; anything else is declined."""
    received: set[tuple[str, bytes]] = field(default_factory=set)
    """(kind, ask) pairs that did arrive (what a confidentiality check looks at: a
    prover may expect inputs on a tentative win it then loses, never receiving them)."""

    def expect(self, kind: str, ask: bytes, sender: bytes) -> None:
        """Let in `kind` for `ask` from `sender` (the requester of an ask we won,
        a prover holding a slot of our ask)."""
        self.accepts.add((kind, ask, sender))

    def wants(self, header: Header) -> bool:
        """Asked on the signed header, before the body: expected, and room for it."""
        key = (header.kind, header.ask, header.sender)
        return key in self.accepts and len(self._items) < self.max_items

    async def deliver(self, message: DirectMessage) -> bool:
        key = (message.kind, message.ask, message.sender)
        if key not in self.accepts or len(self._items) >= self.max_items:
            return False  # the inbox filled up while the body was on its way
        self._items[key] = message.payload
        self.received.add((message.kind, message.ask))
        event = self._waiting.pop(key, None)
        if event is not None:
            event.set()
        return True

    async def wait_for(
        self, kind: str, ask: bytes, sender: bytes, timeout_s: float
    ) -> bytes | None:
        key = (kind, ask, sender)
        with trio.move_on_after(max(0.0, timeout_s)):
            while key not in self._items:
                event = self._waiting.setdefault(key, trio.Event())
                await event.wait()
        return self._items.pop(key, None)
