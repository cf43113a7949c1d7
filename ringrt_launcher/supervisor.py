"""Spawn the workers of this node, watch them, stop them, restart them.

Everything here runs on the launcher's main thread; only output pumping has threads of its own
(``output.py``). That matters: Linux delivers ``PR_SET_PDEATHSIG`` when the *thread* that forked
the child exits, so workers must be forked by a thread that lives as long as the launcher.

A worker is ``python -I -S _child.py LAUNCHER_PID CPUS -- COMMAND``: the trampoline arms
PDEATHSIG (workers die with a SIGKILLed launcher), optionally pins CPUs, and execs the command
in place. Each worker leads its own session (``start_new_session``), so signalling its process
group reaches anything it spawned and the terminal's Ctrl-C reaches only the launcher, which
then stops every worker itself: SIGTERM, ``--grace`` seconds, SIGKILL.

Exits are observed without reaping (``waitid(WNOWAIT)``, woken by a pidfd) so that the worker's
process group can be SIGKILLed for leftovers while its pid cannot yet be reused; then it is reaped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

from ringrt_launcher import binding, report
from ringrt_launcher.config import LaunchConfig
from ringrt_launcher.env import worker_env
from ringrt_launcher.errors import LaunchError
from ringrt_launcher.output import Console, RankOutput, is_terminal, log_path, truncate_logs
from ringrt._deadline import Deadline

CHILD = Path(__file__).with_name("_child.py")
WATCH_INTERVAL = 1.0          # s; the wait is woken at once by a pidfd or a signal anyway
POLL_INTERVAL = 0.05          # s; only without pidfd_open (non-Linux, old kernels)
KILL_REAP_TIMEOUT = 5.0       # s to wait for the kernel after SIGKILL
OUTPUT_DRAIN_TIMEOUT = 2.0    # s for the last lines to come through the pipes
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Worker:
    """One running worker process and the pumps draining its output."""

    def __init__(self, rank: int, local_rank: int, proc: subprocess.Popen, output: RankOutput):
        self.rank, self.local_rank, self.proc, self.output = rank, local_rank, proc, output
        self.returncode: int | None = None
        self.pidfd = _pidfd_open(proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def has_exited(self) -> bool:
        """True once the process has exited; it is left unreaped (see the module docstring)."""
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, self.pid, flags) is not None

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the worker's process group (itself and whatever it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def reap(self) -> None:
        """Kill what the exited worker left in its group, then collect its exit status."""
        self.signal_group(signal.SIGKILL)
        self.returncode = self.proc.wait()


class WorkerGroup:
    """The ``nproc`` workers of this node for one attempt (restart count)."""

    def __init__(self, selector: selectors.BaseSelector):
        self.selector = selector
        self.workers: list[Worker] = []

    @property
    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.returncode is None]

    @property
    def wakes_on_exit(self) -> bool:
        return all(w.pidfd is not None for w in self.workers)

    def add(self, worker: Worker) -> None:
        self.workers.append(worker)
        if worker.pidfd is not None:
            self.selector.register(worker.pidfd, selectors.EVENT_READ, worker)

    def reap_exited(self) -> list[Worker]:
        """Reap every worker that has exited since the last call; returns them by rank."""
        exited = [w for w in self.running if w.has_exited()]
        for worker in exited:
            worker.reap()
            self._forget_pidfd(worker)
        return exited

    def signal_all(self, signum: int) -> None:
        for worker in self.running:
            worker.signal_group(signum)

    def close(self) -> None:
        """Let the last output through (bounded), then release pipes, log files and pidfds."""
        deadline = Deadline(OUTPUT_DRAIN_TIMEOUT)
        for worker in self.workers:
            worker.output.join(deadline.remaining())
            worker.output.close()
            self._forget_pidfd(worker)

    def _forget_pidfd(self, worker: Worker) -> None:
        if worker.pidfd is not None:
            self.selector.unregister(worker.pidfd)
            os.close(worker.pidfd)
            worker.pidfd = None


class Supervisor:
    """Runs the job on this node: spawn, watch, stop on failure or signal, restart.

    Args:
        config: the validated job.
        master_port: the store's port (the one node 0 actually bound).
        console: where worker lines and launcher notes go.
        ipc_dir: the workers' ``RINGRT_IPC_DIR``.
        flight: where workers dump their flight recorders (``ringrt_launcher/flight.py``); when a
            worker fails or ringrun is signalled, the survivors are asked for a dump first.
    """

    def __init__(self, config: LaunchConfig, master_port: int, console: Console, ipc_dir: str,
                 flight=None):
        self.config, self.master_port, self.console = config, master_port, console
        self.ipc_dir = ipc_dir
        self.flight = flight          # ringrt_launcher.flight.FlightDumps, or None
        self.signals: list[int] = []
        self.dump_requests: list[int] = []     # SIGUSR1 to ringrun: report, keep running
        self.selector = selectors.DefaultSelector()
        self.extra_env: dict[str, str] = {}       # added to every worker's (elastic.py)
        self.watch_interval = WATCH_INTERVAL
        self.placements = binding.plan(config.bind, config.nproc)
        if self.placements is not None and config.verbose:
            console.note(binding.describe(self.placements, config.global_rank))
        if self.placements is not None and binding.oversubscribed(self.placements):
            console.note(f"warning: --bind {config.bind}: {config.nproc} ranks on fewer CPUs; "
                         "ranks share CPUs (oversubscribed), each with OMP_NUM_THREADS=1")

    def run(self) -> int:
        """Run to completion; returns ringrun's exit status."""
        config = self.config
        if config.log_dir:
            truncate_logs(config.log_dir, map(config.global_rank, range(config.nproc)))
        with self._stop_signals_caught():
            for restart in itertools.count():
                failed, signum = self._attempt(restart)
                if signum is not None:
                    return report.exit_status(-signum)
                if failed is None:
                    return 0
                if restart == config.max_restarts:
                    return report.exit_status(failed.returncode)
                self.console.note(report.restart_notice(
                    failed.rank, failed.returncode, restart + 1, config.max_restarts,
                    config.nproc))

    def _attempt(self, restart: int) -> tuple[Worker | None, int | None]:
        """One run of the whole group: (first failed worker, stop signal), both None on success."""
        group = WorkerGroup(self.selector)
        failed = signum = None
        stopped = 0
        if self.flight is not None:
            self.flight.clear()
        try:
            self._spawn_all(group, restart)
            failed, signum = self._watch(group)
            stopped = len(group.running)
            if self.flight is not None and (failed is not None or signum is not None):
                self.flight.request(group.running)
            if signum is not None:
                self.console.note(report.signal_notice(signum, stopped, self.config.grace))
        finally:
            self._stop(group)
            group.close()
        if failed is not None:
            self.console.note(report.failure_summary(
                failed.rank, failed.local_rank, self.config.node_rank, failed.pid,
                failed.returncode, failed.output.tail_text(), stopped))
        if self.flight is not None and (failed is not None or signum is not None):
            summary = self.flight.summary([w.rank for w in group.workers])
            if summary:
                self.console.note(summary)
        return failed, signum

    def _spawn_all(self, group: WorkerGroup, restart: int) -> None:
        for local_rank in range(self.config.nproc):
            group.add(self._spawn(local_rank, restart))

    def _spawn(self, local_rank: int, restart: int) -> Worker:
        config = self.config
        rank = config.global_rank(local_rank)
        placement = self.placements[local_rank] if self.placements is not None else None
        cpu = placement.cpu_list() if placement is not None else "-"
        command = [sys.executable, "-I", "-S", str(CHILD), str(os.getpid()), cpu, "--",
                   *config.command()]
        show = config.console_ranks is None or local_rank in config.console_ranks
        output = RankOutput(rank, self.console, show,
                            log_path(config.log_dir, rank) if config.log_dir else None)
        env = worker_env(config, local_rank, restart, self.master_port, self.ipc_dir,
                         tty=is_terminal(self.console.stdout),
                         threads=placement.threads if placement is not None else None)
        if self.flight is not None:
            env.update(self.flight.worker_env())
        env.update(self.extra_env)
        try:
            proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True)
        except OSError as exc:
            output.close()
            raise LaunchError(f"cannot start rank {rank}: {exc}") from exc
        output.start(proc.stdout, proc.stderr)
        return Worker(rank, local_rank, proc, output)

    def _watch(self, group: WorkerGroup) -> tuple[Worker | None, int | None]:
        """Wait until every worker succeeded, one failed, the launcher was signalled, or
        :meth:`_superseded` says to stop (the failed worker is None then, and for an exit
        that :meth:`_as_failure` does not count as a failure)."""
        while group.running:
            if self.signals:
                return None, self.signals[0]
            if self.dump_requests:
                self.dump_requests.clear()
                self._report_live(group)
            for worker in self._wait(group, self.watch_interval):
                if worker.returncode != 0:
                    return self._as_failure(worker), None
            if self._superseded():
                return None, None
        return None, None

    def _as_failure(self, worker: Worker) -> Worker | None:
        """The failure a non-zero exit counts as; None when it is not one (the elastic agent's
        hook: a worker asking for a membership restart)."""
        return worker

    def _superseded(self) -> bool:
        """True when the group must stop although its workers run (the elastic agent's hook:
        the job moved on to another generation)."""
        return False

    def _report_live(self, group: WorkerGroup) -> None:
        """``kill -USR1 <ringrun>``: ask every worker for a dump, print the summary, go on."""
        if self.flight is None:
            return
        self.console.note("SIGUSR1: asking the workers for flight-recorder dumps (the job "
                          "keeps running)")
        self.flight.request(group.running)
        self.console.note(self.flight.summary([w.rank for w in group.workers])
                          or "no worker answered (none has called init_process_group yet?)")

    def _stop(self, group: WorkerGroup) -> None:
        """SIGTERM every running worker, SIGKILL after the grace period (or a second signal)."""
        if not group.running:
            return
        group.signal_all(signal.SIGTERM)
        grace, signals_seen = Deadline(self.config.grace), len(self.signals)
        while group.running and not grace.expired() and len(self.signals) == signals_seen:
            self._wait(group, grace.remaining())
        if not group.running:
            return
        if len(self.signals) > signals_seen:
            self.console.note(f"received {report.signal_name(self.signals[-1])} again; "
                              "killing the workers now (SIGKILL)")
        group.signal_all(signal.SIGKILL)
        deadline = Deadline(KILL_REAP_TIMEOUT)
        while group.running and not deadline.expired():
            self._wait(group, deadline.remaining())
        if group.running:
            pids = ", ".join(str(w.pid) for w in group.running)
            self.console.note(f"pid(s) {pids} survived SIGKILL for {KILL_REAP_TIMEOUT:g} s "
                              "(uninterruptible sleep?); leaving them")

    def _wait(self, group: WorkerGroup, timeout: float) -> list[Worker]:
        """Sleep until a worker exits, a stop signal arrives or ``timeout`` passes; reap exits."""
        if not group.wakes_on_exit:
            timeout = min(timeout, POLL_INTERVAL)
        for key, _ in self.selector.select(timeout):
            if key.data is None:                    # the signal wakeup pipe
                with contextlib.suppress(BlockingIOError):
                    os.read(key.fd, 512)
        return group.reap_exited()

    @contextlib.contextmanager
    def _stop_signals_caught(self):
        """Turn SIGINT/SIGTERM/SIGHUP into entries of ``self.signals`` that wake ``_wait``
        (and SIGUSR1 into a request for the workers' flight-recorder dumps)."""
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(read_fd, selectors.EVENT_READ, None)
        previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        previous = {s: signal.signal(s, lambda signum, _frame: self.signals.append(signum))
                    for s in STOP_SIGNALS}
        previous[signal.SIGUSR1] = signal.signal(
            signal.SIGUSR1, lambda signum, _frame: self.dump_requests.append(signum))
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            self.selector.unregister(read_fd)
            os.close(read_fd)
            os.close(write_fd)


def _pidfd_open(pid: int) -> int | None:
    """A file descriptor that becomes readable when ``pid`` exits (Linux >= 5.3), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
