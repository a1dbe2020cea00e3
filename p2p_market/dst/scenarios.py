"""Scenarios: what a simulation run looks like, as plain frozen data.

A run has two phases: the *active* phase (`seconds` of virtual time, asks are
placed and faults happen) and the *settle* phase (`settle_seconds`, no new asks,
every fault healed, every crashed node restarted), after which the end-of-run
checks look at every honest node. Fault times are fractions of the active phase,
so a preset keeps its shape at any length; a partition or an isolation lasts at
most half the ask ttl, so no fault starves an ask for its whole life.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PLANTED_BUGS: frozenset[str] = frozenset({"no-tiebreak"})


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    nodes: int = 50
    seconds: int = 20
    """Length of the active phase, in virtual seconds."""
    settle_seconds: int = 36
    """Quiet phase after it: at least the ask ttl plus three anti-entropy periods,
    so every ask has ended and what gossip did not carry everywhere (equivocation
    twins, what a partition held back) has reached every node by sync."""
    asks_per_s: float = 0.5
    prover_share: float = 0.3
    requester_share: float = 0.1

    # -- network ------------------------------------------------------------------
    degree: int = 6
    latency_ms: tuple[float, float] = (30.0, 80.0)
    """Each link's median latency is drawn uniformly from this range."""
    jitter: float = 0.25
    """Sigma of the per-message lognormal factor on a link's median latency."""
    loss: float = 0.0
    duplication: float = 0.0
    idontwant: bool = True
    """Do not forward a message to a mesh peer that already holds it: the model of
    gossipsub v1.2's IDONTWANT (node.py, `SimNode._forward`). False: flood to every
    mesh peer but the source, copies and all."""
    tick_ms: int = 200
    relay_tick_ms: int = 1_000
    relay_observe: bool = True
    """Relays take their announcements at their tick (dst/relay.py): they act on
    none, but they feed the reorg count and, with withholders, the finality watch
    (dst/finality.py). False: relays skip them (each costs a fold of the settlement
    per relay per tick): the run is the same, message for message, and `reorgs` and
    the finality figures cover the nodes with a role only. The bench runs so (its
    calm market has no withholders); the presets keep them on."""
    heartbeat_ms: int = 1_000
    """Gossip recovery (gossipsub IHAVE/IWANT): each heartbeat a node offers its
    peers the ids it forwarded within `mcache_ms`; each pulls what it lacks (the
    exchange itself is as lossy as any frame)."""
    mcache_ms: int = 3_000
    sync_ms: int = 5_000
    """Anti-entropy, as the real node runs it (node/runtime.py): every `sync_ms` (each
    node at its own phase) a node pulls from up to `sync_peers` random connected
    peers whatever they hold, evidence included, that it lacks; it does the same on
    join and when its links change (heal, rejoin, a peer restarts). It is what brings
    equivocation twins to every node (the twin that arrives second is IGNOREd, so
    gossip never carries it on), and what a partition or loss held back (gossip
    judges a message once: what a sync brought, or an orphan admitted later, is
    not forwarded). The real node's period is 30 s (ANTI_ENTROPY_S), against asks
    that live minutes or hours; the sim's market runs on a shorter clock (1 s commit
    windows, 20 s asks), and its period keeps a similar ratio to the asks: with
    30 s, an ask whose winner's messages a partition held back from its requester
    would often expire before the next sync."""
    sync_peers: int = 3
    """As the real node's `sync_market(max_peers=3)`."""

    # -- market and workload --------------------------------------------------------
    commit_window_ms: int = 1_000
    stage_ms: int = 200
    skew_ms: int = 1_000
    max_lifetime_ms: int = 60_000
    ask_ttl_ms: int = 20_000
    prices: tuple[int, ...] = (10, 15, 20, 25, 30)
    proof_times: tuple[int, ...] = (2_000, 3_000, 4_000, 5_000)
    capacities: tuple[int, ...] = (1, 2, 3, 4)
    max_prices: tuple[int, ...] = (15, 20, 25, 30, 40)
    max_proof_times: tuple[int, ...] = (3_000, 4_000, 5_000, 6_000)
    replicas: tuple[tuple[int, float], ...] = ((1, 0.85), (2, 0.1), (3, 0.05))
    impossible_share: float = 0.0
    """Asks whose caps no prover meets (price cap below every bid)."""
    cancel_share: float = 0.0
    """Asks their requester tries to cancel shortly after placing them."""

    # -- faults ---------------------------------------------------------------------
    partition: bool = False
    """Random halves from 30% to 50% of the active phase (at most half the ask ttl),
    then heal."""
    isolate: int = 0
    """Nodes cut off from 20% to 40% of the active phase (at most half the ask ttl),
    then reconnected."""
    crashes: int = 0
    """Honest nodes that crash once (for 2 to 6 s) and restart from their log."""
    skew_within: float = 0.0
    """Every node's clock is off by up to +-skew_within * skew_ms / 2."""
    skew_beyond: int = 0
    """Honest provers whose clock lags by 3 * skew_ms: beyond the tolerance."""
    loss_bursts: int = 0
    burst_loss: float = 0.5
    burst_ms: int = 2_000
    never_prove: int = 0
    invalid_prover: int = 0
    equivocator: int = 0
    silent_requester: int = 0
    byzantine_offer: tuple[int, int] | None = None
    """(price, proof_time) of every byzantine prover; the cheapest and fastest offer
    makes them win often, so every run routes around them. None: drawn like others."""
    spammer: int = 0
    spam_per_s: float = 10.0
    withholder: int = 0
    """Provers that hold back a share of the commits they sign (each signed inside its
    commit window, as the protocol requires) and release them later, to their mesh
    peers, as a straggler or a partitioned prover would: a late valid commit can
    change who won a window long settled (node.py, "withholder"; the finality
    figures of the report count the outcomes that changed, dst/finality.py)."""
    phantom: int = 0
    """Provers that bid and never commit (with `byzantine_offer` cheap and fast, so
    they rank ahead of every honest prover): the staged fallback must not let them
    hold honest commits back past the window (protocols/market-v1.md §16)."""
    holdback_share: float = 0.5
    holdback_min_ms: int = 2_000
    holdback_max_ms: int | None = None
    """Each held commit is released after a delay drawn log-uniformly between
    `holdback_min_ms` and this (so seconds, minutes and, in long runs, hours are all
    common); None: the length of the active phase. Whatever is still held when the
    active phase ends is released then, as every other fault heals by then."""
    no_effect: int = 0
    """Third parties (relays) that publish valid, correctly signed messages that the
    fold records as without effect (node.py, "no-effect"): InvalidInputs and Proofs
    from a prover that holds no slot, commits to rounds that do not exist or to
    windows not yet open, receipts about provers that hold no slot of its own
    (unserviceable) asks. Its bid ranks below every honest prover's, so it never
    holds a slot nor moves anyone's place in the commit policy."""
    no_effect_per_s: float = 1.0

    planted_bug: str | None = None
    """"no-tiebreak": nodes rank commits by local arrival order (first come, first
    served) instead of the core's rule. The end-of-run checks must catch it."""
    max_reorgs: int | None = 0
    """A run with more reorgs fails; None: reorgs are counted but allowed."""
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.planted_bug is not None and self.planted_bug not in PLANTED_BUGS:
            raise ValueError(f"unknown planted bug {self.planted_bug!r}")
        if self.settle_seconds * 1_000 < self.ask_ttl_ms + 3 * self.sync_ms:
            raise ValueError("settle_seconds must cover the ask ttl and 3 sync periods")
        if self.sync_ms < 1 or self.sync_peers < 1:
            raise ValueError("sync_ms and sync_peers must be positive")
        if self.nodes < 4:
            raise ValueError("at least 4 nodes")
        if not 0.0 <= self.holdback_share <= 1.0 or self.holdback_min_ms < 1:
            raise ValueError("holdback_share must be in [0, 1] and holdback_min_ms positive")
        if self.holdback_max_ms is not None and self.holdback_max_ms < self.holdback_min_ms:
            raise ValueError("holdback_max_ms must be at least holdback_min_ms")
        if self.no_effect and not max(self.proof_times) < max(self.max_proof_times):
            # its bid (highest price, highest proof-time cap) must rank below every other
            raise ValueError("no-effect actors need a proof-time cap above every proof time")

    @property
    def holdback_max(self) -> int:
        """The longest hold of a withheld commit, in ms (see holdback_max_ms)."""
        return self.seconds * 1_000 if self.holdback_max_ms is None else self.holdback_max_ms


CALM = Scenario(name="calm")

MIXED_FAULTS = Scenario(
    name="mixed-faults",
    loss=0.01,
    duplication=0.01,
    partition=True,
    isolate=1,
    crashes=2,
    skew_within=1.0,
    loss_bursts=2,
    never_prove=1,
    invalid_prover=1,
    equivocator=1,
    silent_requester=1,
    byzantine_offer=(10, 2_000),
    spammer=1,
    withholder=1,
    no_effect=1,
    cancel_share=0.05,
    impossible_share=0.05,
    max_reorgs=None,
)

PARTITION = Scenario(name="partition", partition=True, max_reorgs=None)

SKEW_BEYOND_TOLERANCE = Scenario(
    name="skew-beyond-tolerance", skew_within=1.0, skew_beyond=3, max_reorgs=None
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (CALM, MIXED_FAULTS, PARTITION, SKEW_BEYOND_TOLERANCE)
}
