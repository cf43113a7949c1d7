"""``ringrun --nnodes MIN:MAX``: this node's agent in an elastic job.

The agent loops: join a rendezvous round (``rounds.py``), run this node's workers for that
generation, and when they end decide with the other agents what comes next::

    all workers exit 0                    -> the job is done here (exit 0)
    a worker exits RESTART_EXIT_CODE (75) -> open the next round, not a failure: the workers
                                             asked at a checkpoint because nodes are waiting
    a worker fails (a lost peer included) -> open the next round, one failure of
                                             --max-restarts; beyond it every agent stops
    another agent opened the next round   -> stop the workers (SIGTERM, --grace, SIGKILL), join
    another node of the generation went   -> stop the workers, open the next round: one
      silent (keepalive.py)                  failure, as a worker failing would be (its
                                             workers may still be starting up, where no
                                             heartbeat of theirs can tell)

The store is hosted by the agent on the host that ``--master-addr`` names (it becomes node 0 of
every generation). That agent cannot be replaced: when its host is lost, the record of the
rounds goes with it, and the other agents give up after ``--join-timeout`` (torchrun's c10d
rendezvous has the same single point; see docs/cluster.md).
"""

from __future__ import annotations

import dataclasses
import errno
import socket
import time

from ringrt_launcher import report
from ringrt_launcher.config import LaunchConfig
from ringrt_launcher.env import heartbeat, ipc_directory
from ringrt_launcher.errors import LaunchError
from ringrt_launcher.keepalive import Keepalive, SilenceWatch, alive_key
from ringrt_launcher.output import Console
from ringrt_launcher.rounds import (STORE_OP_TIMEOUT, RoundStore, closed, initial, joined,
                                    next_round, ready_to_close)
from ringrt_launcher.supervisor import Supervisor, Worker

POLL = 0.25                       # s between looks at the record while waiting or running
EXIT_FAILED = 1


def run_elastic(config: LaunchConfig, console: Console) -> int:
    """Run this node's agent to the end of the job; returns ringrun's exit status."""
    from ringrt_launcher.flight import FlightDumps
    from ringrt_launcher.rendezvous import release_store

    server = _host_store_if_ours(config)
    if server is not None:
        console.note(f"this node hosts the store at {config.store_host}:{server.port}: it is "
                     "node 0 of every generation, and the job cannot outlive it")
    status = None
    try:
        with ipc_directory() as ipc_dir, FlightDumps.for_job(config.log_dir) as flight:
            agent = ElasticAgent(config, console, ipc_dir, hosts_store=server is not None,
                                 flight=flight)
            status = agent.run()
    finally:
        # Failed or done, the other agents must still read that from the store before it goes
        # (else they wait --join-timeout for it); only a signal closes it at once.
        signalled = status is None or status > report.SIGNAL_EXIT_BASE
        release_store(server, config, console, succeeded=not signalled)
    return status


def _host_store_if_ours(config: LaunchConfig):
    """Host the store when ``--master-addr`` is an address of this host and its port is free
    here; None when another host (or another agent on this one) hosts it."""
    from ringrt._curve import derive_keys
    from ringrt.store._server import StoreServer

    if not _is_local_address(config.master_addr if config.store_host in ("0.0.0.0", "::")
                             else config.store_host):
        return None
    try:
        curve = derive_keys(config.token) if config.encrypt else None
        return StoreServer(config.store_host, config.master_port, token=config.token,
                           curve=curve).start()
    except Exception as exc:              # OSError or StoreError: inspected just below
        code = getattr(exc, "errno", None) or getattr(exc.__cause__, "errno", None)
        if code == errno.EADDRINUSE:
            return None                   # another agent on this host hosts it
        raise LaunchError(f"cannot start the rendezvous store on {config.store_host}:"
                          f"{config.master_port}: {exc}") from exc


def _is_local_address(address: str) -> bool:
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
        return True
    except OSError:
        return False


class ElasticAgent(Supervisor):
    """One node's agent: rendezvous rounds around the Supervisor's spawn / watch / stop."""

    def __init__(self, config: LaunchConfig, console: Console, ipc_dir: str, hosts_store: bool,
                 flight=None):
        super().__init__(config, config.master_port, console, ipc_dir, flight)
        from ringrt._curve import derive_keys

        self.base_config, self.hosts_store = config, hosts_store
        curve = derive_keys(config.token) if config.encrypt else None
        self.connect = lambda: RoundStore(config.master_addr, config.master_port, config.token,
                                          curve)
        self.rounds = self.connect()
        self.keepalive_interval, self.keepalive_timeout = heartbeat()
        self.silence: SilenceWatch | None = None    # the other nodes of the running generation
        self.members: tuple[int, ...] = ()          # its nodes, in node-rank order
        self.agent_id: int | None = None
        self.gen: int | None = None           # the generation whose workers ran last
        self.ending: str | None = None        # why the last generation ended ("membership"...)
        self.last_failure: tuple[str, int] | None = None     # (reason, exit status)
        self.store_lost_since: float | None = None    # first failed read of a running generation
        self.watch_interval = POLL

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        with self._stop_signals_caught():
            keepalive = None
            try:
                self.agent_id = self._register()
                keepalive = Keepalive(self.connect, self.agent_id, self.keepalive_interval)
                while True:
                    state = self._rendezvous()
                    if isinstance(state, int):
                        return state
                    status = self._run_generation(state)
                    if status is not None:
                        return status
            except _Signalled as signalled:
                return report.exit_status(-signalled.signum)
            finally:
                if keepalive is not None:
                    keepalive.close(STORE_OP_TIMEOUT + self.keepalive_interval)
                self.rounds.close()

    def _register(self) -> int:
        """This agent's id (its arrival order, used to order node ranks)."""
        from ringrt.elastic import AGENTS_KEY

        deadline = time.monotonic() + self.config.join_timeout
        while True:
            agent = self.rounds.add(AGENTS_KEY, 1)
            if agent is not None:
                return agent
            self._give_up_if_past(deadline, "reach the store")
            self._sleep(POLL)

    def _rendezvous(self) -> object:
        """Join the current round (opening the next one first if ours just ended) and wait
        until it closes with us in it. Returns the closed RoundState, or an exit status."""
        config = self.base_config                  # self.config is the last generation's
        deadline = time.monotonic() + config.join_timeout
        min_since = None
        announced_wait = False
        first = initial(config.min_nodes, config.nnodes)
        while True:
            state = self.rounds.update(self._advance_and_join, first)
            if state is None:
                self._give_up_if_past(deadline, "reach the store (was its host lost?)")
                self._sleep(POLL)
                continue
            self._check_same_job(state)
            self.gen = None if state.gen != self.gen else self.gen     # advanced: done with it
            if state.failed:
                return self._job_failed(state.failed)
            if not state.open:
                if state.done and (state.gen == self.gen or self.agent_id not in state.members):
                    self.console.note("the job finished on the other nodes")
                    return self.last_failure[1] if self.last_failure else 0
                if self.agent_id in state.members:
                    return state
                if not announced_wait:
                    self.console.note(f"round {state.gen} is closed ({len(state.members)} "
                                      "nodes): waiting to be admitted at their next checkpoint")
                    announced_wait = True
                deadline = time.monotonic() + config.join_timeout    # the job is alive
            else:
                now = time.monotonic()
                if len(state.members) >= state.min_nodes:
                    min_since = min_since if min_since is not None else now
                    deadline = now + config.join_timeout
                else:
                    min_since = None
                    self._give_up_if_past(deadline, f"gather {state.min_nodes} nodes (only "
                                                    f"{len(state.members)} joined)")
                if ready_to_close(state, min_since, config.last_call, now):
                    self.rounds.update(_closing(state.gen), first)
                    continue
            self._sleep(POLL)

    def _advance_and_join(self, state):
        """The one compare-and-set of an agent between generations: open the next round if
        the one we ran has not been replaced yet, then join whatever round is current."""
        if self.gen is not None and state.gen == self.gen and not (state.done or state.failed):
            reason = self.last_failure[0] if self.ending == "failure" else ""
            state = next_round(state, reason, self.config.max_restarts)
            if state.failed:
                return state
        return joined(state, self.agent_id, self.config.nproc, self.hosts_store)

    def _run_generation(self, state) -> int | None:
        """Run this node's workers for generation ``state.gen``; an exit status ends the job."""
        self._check_equal_nproc(state)
        node_rank = state.members.index(self.agent_id)
        self.config = dataclasses.replace(self.base_config, nnodes=len(state.members),
                                          node_rank=node_rank)
        self.gen, self.ending, self.store_lost_since = state.gen, None, None
        others = [agent for agent in state.members if agent != self.agent_id]
        self.silence = SilenceWatch(others, self.keepalive_timeout, time.monotonic())
        self.members = state.members
        self.extra_env = {"RINGRT_GENERATION": str(state.gen)}
        self.console.note(
            f"generation {state.gen}: {len(state.members)} node(s), world size "
            f"{self.config.world_size}; this node is node rank {node_rank} (ranks "
            f"{self.config.global_rank(0)}..{self.config.global_rank(self.config.nproc - 1)})")
        failed, signum = self._attempt(state.gen)
        if signum is not None:
            raise _Signalled(signum)
        if failed is not None:
            self.ending = "failure"
            self.last_failure = (
                f"rank {failed.rank} failed ({report.describe_exit(failed.returncode)})",
                report.exit_status(failed.returncode))
        elif self.ending is None:                    # every worker exited 0
            self.rounds.update(lambda s: s.replaced(done=True), state)
            return 0
        return None

    # --- watching (Supervisor hooks) ----------------------------------------------------

    def _as_failure(self, worker: Worker) -> Worker | None:
        """A worker exiting RESTART_EXIT_CODE asks for a membership restart: no failure."""
        from ringrt.elastic import RESTART_EXIT_CODE

        if worker.returncode == RESTART_EXIT_CODE:
            self.ending = "membership"
            return None
        return worker

    def _superseded(self) -> bool:
        """The record moved on to another generation (or failed) while ours run, or another
        node of ours went silent (then this agent opens the next round, as for a failure)."""
        state = self.rounds.read()
        if state is None:
            return self._cut_off()
        self.store_lost_since = None
        if state.gen != self.gen or state.failed:
            self.ending = "superseded"
            return True
        if state.done:                       # a node whose workers all succeeded stops
            return False                     # keeping alive: no loss
        lost = self._silent_node()
        if lost is not None:
            self.console.note(f"{lost}; restarting this node's workers in the next generation")
            self.ending, self.last_failure = "failure", (lost, EXIT_FAILED)
            return True
        return False

    def _cut_off(self) -> bool:
        """True once the store has been out of reach for ``RINGRT_HEARTBEAT_TIMEOUT`` while our
        workers run: this agent's keepalive has stopped as long, so the other nodes count it
        lost and go on without it. Its workers may wait in a rendezvous that never completes
        (they have no heartbeats before ``init_process_group`` returns), so they are stopped
        here, and the next rendezvous gives up after ``--join-timeout`` with a named error."""
        now = time.monotonic()
        if self.store_lost_since is None:
            self.store_lost_since = now
            return False
        silent = now - self.store_lost_since
        if silent < self.keepalive_timeout:
            return False
        reason = (f"the job's store at {self.config.master_addr}:{self.config.master_port} has "
                  f"been out of reach for {silent:.1f} s (RINGRT_HEARTBEAT_TIMEOUT "
                  f"{self.keepalive_timeout:g} s): this host is cut off from the job")
        self.console.note(f"{reason}; stopping this node's workers")
        self.ending, self.last_failure = "failure", (reason, EXIT_FAILED)
        return True

    def _silent_node(self) -> str | None:
        """Why a node of this generation counts as lost (its agent's keepalive stopped), or
        None while every other node keeps alive."""
        keys = {agent: alive_key(agent) for agent in self.silence.seen}
        silent = self.silence.silent(self.rounds.counters(keys), time.monotonic())
        if not silent:
            return None
        agent = silent[0]
        return (f"node rank {self.members.index(agent)} of generation {self.gen} (agent "
                f"{agent}) sent no keepalive for {self.keepalive_timeout:g} s "
                "(RINGRT_HEARTBEAT_TIMEOUT): its ringrun was killed, its host is frozen or its "
                "link to the store is cut")

    # --- helpers ------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        if self.signals:
            raise _Signalled(self.signals[0])
        time.sleep(seconds)
        if self.signals:
            raise _Signalled(self.signals[0])

    def _give_up_if_past(self, deadline: float, what: str) -> None:
        if time.monotonic() >= deadline:
            raise LaunchError(
                f"elastic agent on this host could not {what} within --join-timeout "
                f"{self.config.join_timeout:g} s (store at {self.config.master_addr}:"
                f"{self.config.master_port}); giving up")

    def _check_same_job(self, state) -> None:
        config = self.base_config
        if (state.min_nodes, state.max_nodes) != (config.min_nodes, config.nnodes):
            raise LaunchError(
                f"this node runs --nnodes {config.min_nodes}:{config.nnodes} but the job's store "
                f"has {state.min_nodes}:{state.max_nodes}; give every node the same range")

    def _check_equal_nproc(self, state) -> None:
        counts = {state.nproc[str(agent)] for agent in state.members}
        if len(counts) > 1:
            raise LaunchError(f"the nodes of generation {state.gen} run different -n "
                              f"({sorted(counts)}); give every node the same -n")

    def _job_failed(self, reason: str) -> int:
        self.console.note(f"the elastic job failed: {reason}")
        return self.last_failure[1] if self.last_failure else EXIT_FAILED


def _closing(gen: int):
    """The change that closes round ``gen`` (and leaves any later round alone)."""
    return lambda state: closed(state) if state.gen == gen else state


class _Signalled(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

