"""The prover's record of its jobs, for its operator (`GET /v1/prover/jobs`,
`p2p-market prover jobs`): each ask it committed to, from the commit to the
requester's verdict, the latest `JOBS_KEPT` of them. Memory only: after a restart
the list starts again (the market's own record of every slot is the book's)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

JOBS_KEPT: Final = 256

JobState = Literal[
    "committed",  # a commit signed, the attempt not settled yet
    "lost",  # the attempt settled with other winners
    "assigned",  # won: waiting for a proving slot (or for the inputs)
    "proving",
    "delivered",  # the proof is out; the requester has not judged it yet
    "attested",  # the inputs were bad: an InvalidInputs was signed
    "failed",
    "stopped",  # a reorg took the slot, or the ask went away
    "accepted",  # the requester's receipt: paid
    "invalid",
    "timed_out",
]


@dataclass(slots=True)
class Job:
    ask: str
    state: JobState
    price: int
    """What the slot pays if accepted: the bid's price per unit times the ask's size."""
    committed: int
    """The node's clock (epoch ms) at the commit (or at the win, for a job resumed
    after a restart)."""
    deadline: int | None = None
    started: int | None = None
    """When proving began (epoch ms)."""
    prove_ms: int | None = None
    """How long the back-end took."""
    earned: int = 0


class JobBook:
    """The latest `JOBS_KEPT` jobs by ask, the newest last."""

    def __init__(self, kept: int = JOBS_KEPT) -> None:
        self._jobs: OrderedDict[bytes, Job] = OrderedDict()
        self._kept = kept

    def get(self, ask: bytes, *, price: int = 0, now: int = 0) -> Job:
        """The job of `ask`, made (state `committed`) if there is none."""
        job = self._jobs.get(ask)
        if job is None:
            job = Job(ask=ask.hex(), state="committed", price=price, committed=now)
            self._jobs[ask] = job
            while len(self._jobs) > self._kept:
                self._jobs.popitem(last=False)
        return job

    def find(self, ask: bytes) -> Job | None:
        return self._jobs.get(ask)

    def set(self, ask: bytes, state: JobState, **fields: Any) -> None:
        """Move a job we hold to `state` (and set `fields`); nothing if not held."""
        job = self._jobs.get(ask)
        if job is None:
            return
        job.state = state
        for name, value in fields.items():
            setattr(job, name, value)

    def listing(self) -> list[dict[str, Any]]:
        """Every job kept, the newest first."""
        return [asdict(j) for j in reversed(self._jobs.values())]
