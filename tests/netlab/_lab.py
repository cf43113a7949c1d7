"""A netlab lab for the multi-host tests: bring it up, run ringrun on its hosts, shape, cut.

netlab (``../shared/tools/netlab``, or ``$NETLAB``) turns this machine into N hosts, each a
network namespace with its own address, hostname and shaped link. Lab addresses are reachable
only from inside ``netlab exec``; files and pids are shared with the machine, so workers write
their results and pids to a directory the test reads.

Process tree of one host's job (``Lab.start``)::

    netlab exec HOST --timeout S -- CMD      (exec's into: ip netns exec -> unshare -> sh ->)
      timeout -k 5 S CMD                     (the Popen's pid; leads its own process group)
        ringrun ...                          (same process group)
          worker (own session, dies with ringrun: PR_SET_PDEATHSIG)

So ``killpg(popen.pid)`` reaches ``timeout`` and ringrun, ringrun's death reaches the workers,
and ``netlab down`` kills whatever still runs inside the lab.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.world import wait_all_dead

REPO = Path(__file__).resolve().parents[2]
NETLAB = Path(os.environ.get("NETLAB") or REPO.parent / "shared" / "tools" / "netlab")
PREFIX = "rrt"                  # our own lab: a developer's `rtlab` is left alone
MASTER_PORT = 29611             # fixed: every lab host has its own port space
TOKEN = "ringrt-netlab-test-token"
COMMAND_TIMEOUT = 30.0          # netlab's own external commands are capped at 30 s
LOCK_WAIT = 60.0                # another pytest run on this machine may hold the lab
WORKER = Path(__file__).with_name("worker.py")
NPROC, HOSTS = 2, 3             # the tests' job: 3 lab hosts, 2 ranks each
WORLD = NPROC * HOSTS


class LabUnavailable(Exception):
    """netlab is missing or `netlab check` fails here (not root, no netns, ...)."""


def netlab(*args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT):
    """Run one netlab command and return the CompletedProcess (text)."""
    return subprocess.run([str(NETLAB), *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def check_usable() -> None:
    """Raise LabUnavailable unless netlab exists and `netlab check` passes."""
    if not NETLAB.is_file():
        raise LabUnavailable(f"netlab not found at {NETLAB} (set $NETLAB)")
    try:
        result = netlab("check", "--quiet", check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabUnavailable(f"netlab unusable: {exc}") from exc
    if result.returncode != 0:
        raise LabUnavailable("netlab check failed:\n" + result.stdout + result.stderr)


@contextlib.contextmanager
def exclusive_prefix(prefix: str = PREFIX, wait: float = LOCK_WAIT):
    """Hold a machine-wide lock on lab ``prefix``: `up` replaces a lab of the same name, so
    two concurrent pytest runs must take turns rather than tear down each other's hosts."""
    with open(f"/tmp/ringrt-netlab-{prefix}.lock", "w") as lock:
        end = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= end:
                    raise LabUnavailable(f"lab {prefix!r} stayed busy (another test run) for "
                                         f"{wait:g} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def running_lab(nhosts: int, *options: str):
    """A lab of ``nhosts`` hosts, held under the machine-wide lock and always torn down.

    Raises:
        LabUnavailable: netlab is missing or unusable here.
    """
    check_usable()
    with exclusive_prefix():
        lab = Lab.up(nhosts, *options)
        try:
            yield lab
        finally:
            lab.down()


def gige_lab_or_skip(nhosts: int):
    """For fixtures, ``yield from gige_lab_or_skip(n)``: a running lab of ``n`` hosts on
    netlab's gige profile, or the test skipped where netlab is unusable."""
    import pytest

    try:
        with running_lab(nhosts, "--profile", "gige") as lab:
            yield lab
    except LabUnavailable as exc:
        pytest.skip(str(exc))


@dataclass
class HostJob:
    """One command running on one lab host; output goes to ``log`` (a file, never a pipe:
    a full pipe would stall that host's ranks and, through the collectives, every host)."""

    host: str
    proc: subprocess.Popen
    log: Path

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Lab:
    """A running lab: ``hosts`` maps name -> address, in index order."""

    def __init__(self, prefix: str, hosts: dict[str, str]):
        self.prefix = prefix
        self.hosts = hosts
        self.names = list(hosts)
        self._jobs: list[HostJob] = []

    @classmethod
    def up(cls, nhosts: int = 3, *options: str, prefix: str = PREFIX) -> Lab:
        result = netlab("up", str(nhosts), *options, "--prefix", prefix)
        hosts = dict(line.split() for line in result.stdout.splitlines() if line.strip())
        return cls(prefix, hosts)

    def down(self) -> None:
        self.kill_all()
        netlab("down", "--prefix", self.prefix, check=False)

    # -- running commands ---------------------------------------------------------------

    def start(self, host: str, cmd: list[str], log: Path, timeout: float,
              env: dict | None = None) -> HostJob:
        """Start ``cmd`` on ``host`` under ``netlab exec --timeout``; output to ``log``."""
        argv = [str(NETLAB), "exec", host, "--prefix", self.prefix, "--timeout", f"{timeout:g}",
                "--", *cmd]
        with open(log, "w") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                    start_new_session=True)
        job = HostJob(host, proc, log)
        self._jobs.append(job)
        return job

    def ringrun_everywhere(self, script: Path, outdir: Path, nproc: int, args=(),
                           env: dict | None = None, timeout: float = 60.0,
                           op_timeout: float = 30.0, hosts: list[str] | None = None
                           ) -> list[HostJob]:
        """One ``ringrun --nnodes N --node-rank K`` per host (every lab host, or ``hosts``);
        the first hosts the store."""
        full_env = dict(os.environ, PYTHONPATH=str(REPO), RINGRT_TOKEN=TOKEN,
                        NETLAB_TEST_OUT=str(outdir), **(env or {}))
        names = hosts or self.names
        master = self.hosts[names[0]]
        jobs = []
        for node, host in enumerate(names):
            cmd = [sys.executable, "-m", "ringrt_launcher", "--nnodes", str(len(names)),
                   "--node-rank", str(node), "--master-addr", master,
                   "--master-port", str(MASTER_PORT), "--timeout", f"{op_timeout:g}",
                   "-n", str(nproc), str(script), *args]
            jobs.append(self.start(host, cmd, outdir / f"{host}.log", timeout, full_env))
        return jobs

    def kill_all(self) -> None:
        """SIGKILL every job's process group (ringrun's death takes its workers along)."""
        for job in self._jobs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                job.proc.wait(timeout=10)
        self._jobs.clear()

    # -- shaping and faults -------------------------------------------------------------

    def shape(self, host: str, *options: str) -> None:
        netlab("shape", host, *options, "--prefix", self.prefix)

    def cut(self, host: str, mode: str = "link") -> None:
        netlab("cut", host, "--mode", mode, "--prefix", self.prefix)

    def heal(self, host: str) -> None:
        netlab("heal", host, "--prefix", self.prefix, check=False)


def wait_jobs(jobs: list[HostJob], timeout: float) -> dict[str, int]:
    """Wait for every job (one shared deadline); host -> exit status, None if still running."""
    end = time.monotonic() + timeout
    codes = {}
    for job in jobs:
        try:
            codes[job.host] = job.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            codes[job.host] = None
    return codes


def outputs(jobs: list[HostJob]) -> str:
    return "\n".join(f"--- {job.host} (exit {job.proc.returncode}):\n{job.output()[-4000:]}"
                     for job in jobs)


def rank_results(outdir: Path, world: int) -> dict[int, dict]:
    """rank -> the JSON a worker wrote to ``rank{R}.json`` (ranks that wrote nothing omitted)."""
    found = {}
    for rank in range(world):
        path = outdir / f"rank{rank}.json"
        if path.exists():
            found[rank] = json.loads(path.read_text())
    return found


def wait_for_files(paths: list[Path], timeout: float, jobs: list[HostJob]) -> bool:
    """Wait until every path exists; False on timeout or if a job exited first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(p.exists() for p in paths):
            return True
        if any(job.proc.poll() is not None for job in jobs):
            return False
        time.sleep(0.02)
    return False


def worker_pids(outdir: Path) -> dict[int, int]:
    """rank -> pid, from the ``pid{R}`` files the workers wrote."""
    return {int(p.name[3:]): int(p.read_text()) for p in outdir.glob("pid*")
            if p.name[3:].isdigit()}


def ended_job_results(jobs: list[HostJob], outdir: Path, world: int = WORLD) -> dict[int, dict]:
    """After every job ended: assert no worker survives and every rank wrote its result;
    return rank -> that result."""
    assert not wait_all_dead(worker_pids(outdir).values(), 5), "workers left running"
    results = rank_results(outdir, world)
    assert sorted(results) == list(range(world)), f"missing results\n{outputs(jobs)}"
    return results
