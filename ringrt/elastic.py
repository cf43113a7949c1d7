"""Elastic jobs (``ringrun --nnodes MIN:MAX``): what a worker needs to know about membership.

Under an elastic ``ringrun`` every node's launcher is an agent; the agents agree on who is in
the job through one record in the job's store, in numbered rounds (generations). Workers see the
outcome in their environment:

==========================  ===================================================================
``WORLD_SIZE``              ranks of this generation (nodes in it x ``-n``)
``RINGRT_GENERATION``       the membership round these workers belong to: 0, 1, 2, ...
``RINGRT_RESTART_COUNT``    worker-group restarts of the job so far (== the generation)
==========================  ===================================================================

A lost node makes the survivors restart at the new world size by themselves (their collectives
raise ``PeerLostError``). A node that joins later waits until the running workers reach a
checkpoint and ask::

    from ringrt import checkpoint, elastic

    checkpoint.save(ckpt_dir, params, optimizer, extra=...)
    if elastic.membership_changed():          # collective: every rank calls it
        sys.exit(elastic.RESTART_EXIT_CODE)   # the agents restart with the new node

Outside an elastic job :func:`membership_changed` is always False (and costs nothing).

The record (key :data:`STATE_KEY`, JSON) is also what ``ringrt_launcher/elastic.py`` reads and
writes; :class:`RoundState` is its only codec.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np

import ringrt as dist
from ringrt._process_group import ProcessGroup
from ringrt._settings import read_setting

__all__ = ["RESTART_EXIT_CODE", "generation", "membership_changed"]

STATE_KEY = "ringrun/elastic/state"
AGENTS_KEY = "ringrun/elastic/agents"
# EX_TEMPFAIL ("try again"): a worker exiting with it asks its agent for a membership restart,
# which is not counted against --max-restarts.
RESTART_EXIT_CODE = 75


@dataclass(frozen=True)
class RoundState:
    """One rendezvous round, as stored under :data:`STATE_KEY`.

    ``members`` are agent ids: while ``open`` the ones that joined so far, once closed the
    generation's nodes in node-rank order. ``waiting`` are agents that arrived after the round
    closed (admitted by the next one). ``failures`` counts restarts caused by failures, the
    ones ``--max-restarts`` bounds; ``failed`` (a reason) ends the job on every node; ``done``
    says some node's workers all succeeded.
    """

    gen: int
    min_nodes: int
    max_nodes: int
    open: bool = True
    members: tuple[int, ...] = ()
    waiting: tuple[int, ...] = ()
    hosts: tuple[int, ...] = ()          # agents hosting the store (node rank 0 when present)
    nproc: dict = field(default_factory=dict)   # agent id (str) -> its -n
    failures: int = 0
    failed: str = ""
    done: bool = False

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> RoundState:
        data = json.loads(raw)
        for key in ("members", "waiting", "hosts"):
            data[key] = tuple(data[key])
        return cls(**data)

    def replaced(self, **changes) -> RoundState:
        return replace(self, **changes)

    @property
    def admits_waiting(self) -> bool:
        """A closed round with nodes waiting and room for them: restart at a checkpoint."""
        return not self.open and bool(self.waiting) and len(self.members) < self.max_nodes


def generation() -> int | None:
    """This worker's membership generation (``RINGRT_GENERATION``), None outside elastic jobs."""
    return read_setting("RINGRT_GENERATION")


def membership_changed(group: ProcessGroup | None = None) -> bool:
    """True when the workers should stop here so that the agents restart them with new nodes.

    Collective over ``group`` (default: the world): call it on every rank at the same point,
    normally right after a checkpoint was saved, and exit with :data:`RESTART_EXIT_CODE` when
    it returns True. Rank 0 reads the membership record once and broadcasts the answer, so
    every rank decides the same. True when nodes wait to join and the job is below MAX nodes,
    or when the agents have already moved on to a newer generation.

    Returns:
        False outside an elastic ``ringrun`` job (no ``RINGRT_GENERATION``).
    """
    mine = generation()
    if mine is None:
        return False
    flag = np.zeros(1, np.int32)
    if dist.get_rank(group) == 0:
        flag[0] = restart_wanted(dist.get_store(), mine)
    leader = 0 if group is None else group.members[0]      # the group's rank 0, as src wants
    dist.broadcast(flag, src=leader, group=group)           # (a global rank)
    return bool(flag[0])


def restart_wanted(store, mine: int) -> bool:
    """What :func:`membership_changed` answers, read from the membership record in ``store``
    by a worker of generation ``mine`` (``ringrt.torch.elastic`` asks it too)."""
    if not store.check([STATE_KEY]):
        return False
    state = RoundState.decode(store.get(STATE_KEY))
    return state.gen != mine or state.admits_waiting
