"""The fault kinds of the chaos soak (``benchmarks/robustness/chaos.py``) and how each is undone.

Each kind is a function ``(job, host, rng, now) -> Fault``: it injects the fault at once and
returns what :meth:`Fault.lift` undoes later (nothing, for a kill). ``job`` is the round's
:class:`benchmarks.robustness._chaos_round.Job`: the lab, the hosts' private ``/dev/shm`` and
the shared checkpoint file system (``_chaos_disk.py``), and the pids of its processes by host.

Kinds, and which hosts they may hit (host 0 runs the store: losing it ends an elastic job by
design, see docs/chaos.md):

=============  ======================================================================  =====
kind           what                                                                    hosts
=============  ======================================================================  =====
kill_worker    SIGKILL one worker (rank) of the host                                    any
kill_ringrun   SIGKILL the host's ringrun (its workers die with it); the host is gone   1..3
cut_link       the host's switch port goes down, healed 4-7 s later                     1..3
cut_for_good   the host's switch port goes down until the rest of the job has ended:    1..3
               it drops out, and must end with a named error once healed
loss_burst     10-20 % packet loss on the host's link for 3-5 s                          any
delay_burst    20-60 ms more delay on the host's link for 3-5 s                          any
sigstop        SIGSTOP one worker for 2-3 heartbeats, then SIGCONT                       any
fill_shm       fill the host's /dev/shm (its own tmpfs) for 5-8 s                        any
ckpt_full      fill the checkpoint file system (shared) for 4-6 s                       --
slow_ckpt      throttle the checkpoint file system's writes for 6-10 s                  --
=============  ======================================================================  =====
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import tempfile
from dataclasses import dataclass, field

GIGE_DELAY = "0.2ms"                 # netlab's gige profile, restored after a delay burst
# slow_ckpt's throttle: a save of the soak's small model is tens of fsyncs of a few KiB each
# (and ext4's journal commits), so the IO rate is what slows it; the byte rate is the lead's
# verified 1 MB/s
SLOW_WRITE_BPS = 1 << 20
SLOW_WRITE_IOPS = 20


@dataclass
class Fault:
    """One injected fault: when it began, when it was lifted, and how to lift it."""

    kind: str
    host: str
    detail: str
    injected_at: float
    duration_s: float = 0.0           # how long after injection :meth:`lift` is due
                                      # (math.inf: once the rest of the job has ended)
    undo: object = None               # callable, or None for a fault with nothing to undo
    lifted_at: float | None = None
    extra: dict = field(default_factory=dict)

    def lift(self, now: float) -> None:
        if self.lifted_at is None:
            if self.undo is not None:
                self.undo()
            self.lifted_at = now


def kill_worker(job, host, rng, now):
    pid = rng.choice(job.worker_pids(host))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return Fault("kill_worker", host, f"SIGKILL worker pid {pid}", now)


def kill_ringrun(job, host, rng, now):
    pid = job.ringrun_pid(host)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    job.gone.add(host)
    return Fault("kill_ringrun", host, f"SIGKILL ringrun pid {pid}", now)


def cut_link(job, host, rng, now):
    job.lab.cut(host)
    return Fault("cut_link", host, "switch port down", now, rng.uniform(4, 7),
                 lambda: job.lab.heal(host))


def cut_for_good(job, host, rng, now):
    job.lab.cut(host)
    return Fault("cut_for_good", host, "switch port down until the rest of the job ended", now,
                 math.inf, lambda: job.lab.heal(host))


def loss_burst(job, host, rng, now):
    loss = rng.choice([10, 15, 20])
    job.lab.shape(host, "--loss", f"{loss}%")
    return Fault("loss_burst", host, f"{loss}% loss", now, rng.uniform(3, 5),
                 lambda: job.lab.shape(host, "--loss", "0%"))


def delay_burst(job, host, rng, now):
    delay = rng.choice([20, 40, 60])
    job.lab.shape(host, "--delay", f"{delay}ms")
    return Fault("delay_burst", host, f"{delay} ms delay", now, rng.uniform(3, 5),
                 lambda: job.lab.shape(host, "--delay", GIGE_DELAY))


def sigstop(job, host, rng, now):
    pid = rng.choice(job.worker_pids(host))
    stopped_s = job.heartbeat_s * rng.uniform(2, 3)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)

    def resume():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return Fault("sigstop", host, f"SIGSTOP worker pid {pid} for {stopped_s:.1f} s", now,
                 stopped_s, resume)


def fill_shm(job, host, rng, now):
    filler = fill(job.shm_dir(host))
    return Fault("fill_shm", host, "host /dev/shm full", now, rng.uniform(5, 8),
                 lambda: os.unlink(filler))


def ckpt_full(job, host, rng, now):
    filler = fill(job.ckpt_fs)
    return Fault("ckpt_full", "all", "checkpoint file system full", now, rng.uniform(4, 6),
                 lambda: os.unlink(filler))


def slow_ckpt(job, host, rng, now):
    if job.disk is None or not job.disk.slow:
        raise LookupError("no throttled checkpoint disk in this round")
    job.disk.throttle(SLOW_WRITE_BPS, SLOW_WRITE_IOPS)
    return Fault("slow_ckpt", "all", f"checkpoint writes capped at {SLOW_WRITE_BPS >> 10} KiB/s "
                 f"and {SLOW_WRITE_IOPS} IO/s", now, rng.uniform(6, 10),
                 lambda: job.disk.throttle(0, 0))


def new_filler(directory) -> str:
    """A new empty file in ``directory`` with a name of its own (a round may fill one host's
    /dev/shm twice: each fault lifts its own file)."""
    handle, path = tempfile.mkstemp(prefix="chaos-filler-", dir=directory)
    os.close(handle)
    return path


def fill(directory) -> str:
    """Fill the file system of ``directory`` (a tmpfs of our own) with one file; its path."""
    path = new_filler(directory)
    stats = os.statvfs(directory)
    with open(path, "wb") as out:
        with contextlib.suppress(OSError):            # ENOSPC: full, which is the point
            os.posix_fallocate(out.fileno(), 0, stats.f_bavail * stats.f_frsize)
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:                                # whatever fallocate left
                out.write(chunk)
                out.flush()
    return path


KINDS = {f.__name__: f for f in (kill_worker, kill_ringrun, cut_link, loss_burst, delay_burst,
                                 sigstop, fill_shm, ckpt_full, cut_for_good, slow_ckpt)}
# kinds that must not hit host 0, whose ringrun serves the job's store
NOT_ON_STORE_HOST = {"kill_ringrun", "cut_link", "cut_for_good"}
# kinds that take a host out of the job for a while: two of them on the same host in one
# round would not add a fault
MEMBERSHIP = {"kill_ringrun", "cut_link", "cut_for_good"}
# kinds that take a host out for the rest of the round: at most hosts - MIN_NODES of them, so
# the job keeps the --nnodes MIN it was started with
FOR_GOOD = {"kill_ringrun", "cut_for_good"}
MIN_NODES = 2
# kinds that hit the whole job's checkpoint file system: one of each a round
JOB_WIDE = {"ckpt_full", "slow_ckpt"}
# kinds after which the host hit may leave the job rather than rejoin it: its peers lost its
# heartbeat, so its own ranks end with PeerLostError (a named error, which the soak accepts)
MAY_DROP_OUT = {"cut_link", "sigstop", "cut_for_good"}
# kinds that need the throttled checkpoint disk (skipped where it cannot be built)
NEEDS_SLOW_DISK = {"slow_ckpt"}
