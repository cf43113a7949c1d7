"""One round of the chaos soak: an elastic training job on every lab host, a few faults at
once, then the invariants (see ``benchmarks/robustness/chaos.py`` and docs/chaos.md).

Each lab host gets what a real host has and netlab's hosts share: its own ``/dev/shm`` (a
64 MiB tmpfs) and its own ``/tmp`` (a directory), bind-mounted in a private mount namespace
around its ringrun. So whatever a host leaves behind is counted for that host alone, and
filling one host's /dev/shm touches nobody else on this machine. The checkpoint directory,
which every host must reach, is on a small file system of its own so that it can be filled
and slowed down (``_chaos_disk.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from benchmarks.common._paths import REPO
from benchmarks.robustness import _chaos_faults as faults
from benchmarks.robustness._chaos_disk import CheckpointDisk, mount_tmpfs, unmount
from ringrt import errors

TRAIN = REPO / "examples" / "train.py"
TORCH_TRAIN = Path(__file__).with_name("_chaos_torch_train.py")
# workload -> the script each rank runs: NumPy DDP + Adam, ZeRO-1 Adam, torch DDP over ringrt
SCRIPTS = {"ddp": TRAIN, "zero": TRAIN, "torch": TORCH_TRAIN}
MASTER_PORT = 29631
TOKEN = "ringrt-chaos-soak-token"
HEARTBEAT_S = 2.0
SAMPLES, BATCH, EPOCHS, CKPT_EVERY = 240, 24, 4, 5
START_BOUND_S = 90.0          # the job must reach its first checkpoint within this
RECOVERY_BOUND_S = 45.0       # no hang: a step within this of every fault, or a named error
JOB_BOUND_S = 200.0           # every host's ringrun must have exited within this
NEXT_START_BOUND_S = 30.0     # a killed host's next ringrun (it runs nothing) ends within this
# forced flat algorithms: the sum order then depends on the world size alone, so the replay
# on one machine gives the same bits (tests/netlab/test_elastic.py does the same)
ALGO = "all_reduce=ring,reduce_scatter=ring,all_gather=ring"
# a failed job must say why: ringrun's and ringrt's named errors
NAMED_ERROR_MARKS = ("ringrun: ", "Error: ", "ringrt.errors.")
# ringrt's own errors by name, as a rank's traceback or flight record prints them
RINGRT_ERROR = re.compile(r"\b(?:" + "|".join(errors.__all__) + r"): ")
# what ringrun's agent says when the store stayed out of reach while its workers ran (they may
# have had no heartbeats yet to fail by: a cut during start-up)
CUT_OFF = "this host is cut off from the job"
KEPT = Path("/var/tmp/ringrt-chaos-kept")      # a broken round's logs, kept for a look
UNSHARE = ["unshare", "-m", "--propagation", "private"]
# the host's own /dev/shm and /tmp; then it joins the checkpoint disk's cgroup ("$3", if any)
ISOLATE = ('mount --bind "$1" /dev/shm && mount --bind "$2" /tmp && '
           '{ [ -z "$3" ] || echo $$ > "$3"; } && shift 3 && exec "$@"')


def train_args(workload: str) -> list[str]:
    """The workload's script and its options (the job's and the replay's alike)."""
    return [str(SCRIPTS[workload]), "--elastic", "--epochs", str(EPOCHS),
            "--batch-size", str(BATCH), "--train-samples", str(SAMPLES), "--hidden", "16",
            "--lr", "0.01", "--ckpt-every", str(CKPT_EVERY),
            *(["--zero"] if workload == "zero" else [])]


def environment(root: Path) -> dict:
    """The job's environment. ``torch.use_deterministic_algorithms`` creates torch's compiler
    cache directory (``/tmp/torchinductor_USER`` unless told): it goes under the round's
    ``root``, which the round removes, instead of into a host's /tmp."""
    return dict(os.environ, PYTHONPATH=str(REPO), RINGRT_TOKEN=TOKEN, RINGRT_ALGO=ALGO,
                RINGRT_HEARTBEAT_TIMEOUT=f"{HEARTBEAT_S:g}", OMP_NUM_THREADS="1",
                TORCHINDUCTOR_CACHE_DIR=str(root / "torch-cache"))


def _proc_text(pid: str, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


class Job:
    """One round's elastic job across the lab hosts."""

    def __init__(self, lab, root: Path, workload: str, nproc: int, slow_disk: bool = False):
        self.lab, self.root, self.workload, self.nproc = lab, root, workload, nproc
        self.heartbeat_s = HEARTBEAT_S
        self.slow_disk = slow_disk
        self.disk: CheckpointDisk | None = None
        self.ckpt_fs = root / "ckptfs"
        self.ckpt = self.ckpt_fs / "ckpt"
        self.samples = root / "samples"
        self.final = root / "final.npz"
        self.gone: set[str] = set()
        self.jobs = {}

    def shm_dir(self, host: str) -> Path:
        return self.root / "hosts" / host / "shm"

    def tmp_dir(self, host: str) -> Path:
        return self.root / "hosts" / host / "tmp"

    def prepare(self) -> None:
        for host in self.lab.names:
            mount_tmpfs(self.shm_dir(host), "64m")
            self.tmp_dir(host).mkdir(parents=True)
            self.tmp_dir(host).chmod(0o1777)
        self.disk = CheckpointDisk(self.root, self.ckpt_fs, self.slow_disk)
        self.disk.create()
        self.ckpt.mkdir()

    def start(self) -> None:
        master = self.lab.hosts[self.lab.names[0]]
        for host in self.lab.names:
            launch = [sys.executable, "-m", "ringrt_launcher",
                      "--nnodes", f"2:{len(self.lab.names)}",
                      "--master-addr", master, "--master-port", str(MASTER_PORT),
                      "--max-restarts", "20", "--last-call", "1", "--join-timeout", "60",
                      "-n", str(self.nproc), *train_args(self.workload),
                      "--ckpt-dir", str(self.ckpt), "--sample-log", str(self.samples),
                      "--step-sleep", "0.1", "--save-params", str(self.final)]
            self.jobs[host] = self.lab.start(host, self.isolated(host, launch),
                                             self.root / f"{host}.log",
                                             JOB_BOUND_S + START_BOUND_S,
                                             environment(self.root))

    def isolated(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run with the host's own /dev/shm and /tmp, in the checkpoint disk's
        cgroup."""
        return [*UNSHARE, "sh", "-c", ISOLATE, "chaos-host", str(self.shm_dir(host)),
                str(self.tmp_dir(host)), self.disk.join_path if self.disk else "", *argv]

    def next_start(self, host: str) -> dict:
        """Start the next ringrun on ``host`` (one that runs nothing), as its user would after
        the round killed the last one: a starting ringrun removes the directories of dead
        jobs (``ringrt/_comm/stale.py``). Returns its exit status and the /tmp entries it
        removed."""
        before = set(os.listdir(self.tmp_dir(host)))
        argv = [sys.executable, "-m", "ringrt_launcher", "--no-python", "-n", "1", "true"]
        log = self.root / f"{host}-next-start.log"
        hostjob = self.lab.start(host, self.isolated(host, argv), log, NEXT_START_BOUND_S,
                                 environment(self.root))
        try:
            code = hostjob.wait(NEXT_START_BOUND_S + 10)
        except subprocess.TimeoutExpired:
            os.killpg(hostjob.proc.pid, signal.SIGKILL)
            code = None
        return {"exit": code, "removed": sorted(before - set(os.listdir(self.tmp_dir(host)))),
                "output": hostjob.output()[-400:] if code != 0 else ""}

    # -- the job's processes ----------------------------------------------------------------

    def processes(self) -> dict[int, tuple[str, list[str]]]:
        """pid -> (lab host, argv) of every live process that belongs to this round."""
        mark = str(self.root).encode()
        found = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            cmdline = _proc_text(pid, "cmdline")
            if mark not in cmdline:
                continue
            env = dict(item.split(b"=", 1) for item in _proc_text(pid, "environ").split(b"\0")
                       if b"=" in item)
            argv = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
            found[int(pid)] = (env.get(b"NETLAB_HOST", b"").decode(), argv)
        return found

    def worker_pids(self, host: str) -> list[int]:
        return [pid for pid, (h, argv) in self.processes().items()
                if h == host and is_worker(argv)]

    def ringrun_pid(self, host: str) -> int:
        for pid, (h, argv) in self.processes().items():
            if h == host and is_ringrun(argv):
                return pid
        raise LookupError(f"no ringrun running on {host}")

    # -- reading the sample logs -------------------------------------------------------------

    def steps(self) -> dict[int, list[dict]]:
        """generation -> every complete step record of its ranks (each with its "rank")."""
        found = defaultdict(list)
        for path in self.samples.glob("gen*-rank*.jsonl"):
            gen_part, rank_part = path.stem.split("-")
            text = path.read_text()
            for line in text[:text.rfind("\n") + 1].splitlines():
                if line.strip():
                    found[int(gen_part[3:])].append(dict(json.loads(line),
                                                         rank=int(rank_part[4:])))
        return dict(found)


def is_worker(argv: list[str]) -> bool:
    """A rank: ``python SCRIPT ...``, what ringrun's trampoline execs (ringrun's own command
    line and the trampoline's name the script too, further on)."""
    return ("python" in os.path.basename(argv[0]) and
            argv[1:2] in ([str(script)] for script in SCRIPTS.values()))


def is_ringrun(argv: list[str]) -> bool:
    return argv[1:3] == ["-m", "ringrt_launcher"]


def schedule_of(steps: dict[int, list[dict]]) -> list[tuple[int, int, int]]:
    """[(generation, world size, step it resumed from)] in generation order."""
    return [(gen, len({r["rank"] for r in records}), min(r["step"] for r in records) - 1)
            for gen, records in sorted(steps.items())]


def sample_problems(steps, schedule, epochs: int = EPOCHS, samples: int = SAMPLES) -> list[str]:
    """What breaks "every sample of every epoch seen exactly once" over the steps that count
    (a generation's steps past the checkpoint the next one resumed from were redone). Also
    the elastic tests' check (tests/train/_elastic.py)."""
    counted = defaultdict(list)
    for index, (gen, _, start) in enumerate(schedule):
        end = schedule[index + 1][2] if index + 1 < len(schedule) else float("inf")
        for record in steps[gen]:
            if start < record["step"] <= end:
                counted[record["epoch"]].extend(record["indices"])
    problems = []
    if sorted(counted) != list(range(epochs)):
        problems.append(f"epochs seen {sorted(counted)}, want {list(range(epochs))}")
    for epoch, indices in sorted(counted.items()):
        seen = Counter(indices)
        if seen != Counter(range(samples)):
            twice = sorted(i for i, n in seen.items() if n > 1)[:5]
            missing = sorted(set(range(samples)) - set(seen))[:5]
            problems.append(f"epoch {epoch}: repeated {twice}..., missing {missing}...")
    return problems


def steps_lost(steps, schedule) -> int:
    """Steps done and then redone: each generation's steps past the next one's resume."""
    lost = 0
    for index in range(len(schedule) - 1):
        gen, resume = schedule[index][0], schedule[index + 1][2]
        lost += max(0, max(r["step"] for r in steps[gen]) - resume)
    return lost


def replay_segments(schedule) -> list[tuple[int, int, int]]:
    """[(world size, step it resumes from, step it stops after; 0: the end)] to replay.

    A generation whose successor resumed from the same checkpoint as it did (it saved none:
    a full checkpoint file system, or a fault before its first save) counted no step, so it
    has no segment: ``--stop-at-step`` equal to its start would never be reached (its first
    step is the one after), and that segment would train to the end at the wrong world size.
    """
    segments = []
    for index, (_, world, start) in enumerate(schedule):
        stop = schedule[index + 1][2] if index + 1 < len(schedule) else 0
        if stop == 0 or stop > start:
            segments.append((world, start, stop))
    return segments


def replay_problems(job: Job, schedule, workdir: Path) -> list[str]:
    """Replay the schedule of world sizes on this machine (one plain ringrun per segment, each
    resuming from the previous one's checkpoint) and compare the final parameters bitwise."""
    import numpy as np

    ckpt, final = workdir / "replay-ckpt", workdir / "replay.npz"
    for index, (world, start, stop) in enumerate(replay_segments(schedule)):
        args = [*train_args(job.workload), "--ckpt-dir", str(ckpt), "--stop-at-step",
                str(stop), "--save-params", str(final), *(["--resume"] if start else [])]
        proc = subprocess.run([sys.executable, "-m", "ringrt_launcher", "-n", str(world),
                               *args], cwd=REPO, env=environment(workdir), capture_output=True,
                              text=True, timeout=120, check=False)
        if proc.returncode != 0:
            return [f"replay segment {index} failed: {(proc.stdout + proc.stderr)[-800:]}"]
    if not job.final.exists():
        return ["the job saved no final parameters"]
    got, want = np.load(job.final), np.load(final)
    if sorted(got) != sorted(want):
        return [f"parameter names differ: {sorted(got)} vs {sorted(want)}"]
    return [f"parameter {name} differs from the replay" for name in want
            if not np.array_equal(got[name], want[name])]


def stall_s(step_times: list[float], injected_at: float, ended_at: float) -> float:
    """The longest time, from ``injected_at`` to ``ended_at``, in which no rank completed a
    step: how long the fault held training up (its time to recover)."""
    marks = [injected_at, *sorted(t for t in step_times if injected_at < t < ended_at)]
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    return max(gaps) if len(marks) > 1 else ended_at - injected_at


def plan(rng, hosts: list[str], kinds=None, forced=()) -> list[tuple[str, str]]:
    """This round's faults: 1 to 3 (kind, host) pairs drawn from ``kinds`` (default: every
    kind), several at a time; or, with ``forced``, exactly those kinds (hosts drawn)."""
    kinds = sorted(kinds or faults.KINDS)
    count = len(forced) or rng.choice([1, 2, 2, 3])
    chosen, taken = [], set()
    for _ in range(1000):                # a forced kind that fits no host is not looped on
        if len(chosen) == count:
            break
        kind = forced[len(chosen)] if forced else rng.choice(kinds)
        host = pick_host(rng, kind, hosts, chosen, taken)
        if host is None:
            if forced:
                raise ValueError(f"--fault {kind} fits no host after {chosen}")
            continue
        if kind in faults.MEMBERSHIP:
            taken.add(host)
        chosen.append((kind, host))
    return chosen


def pick_host(rng, kind: str, hosts: list[str], chosen, taken) -> str | None:
    """A host ``kind`` may hit given the faults ``chosen`` so far, or None."""
    if kind in faults.JOB_WIDE and any(k == kind for k, _ in chosen):
        return None
    for_good = sum(k in faults.FOR_GOOD for k, _ in chosen)
    if kind in faults.FOR_GOOD and for_good >= len(hosts) - faults.MIN_NODES:
        return None
    allowed = hosts[1:] if kind in faults.NOT_ON_STORE_HOST else hosts
    if kind in faults.MEMBERSHIP:
        allowed = [h for h in allowed if h not in taken]
    return rng.choice(allowed) if allowed else None


def wait_for(condition, timeout: float, job: Job) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if all(j.proc.poll() is not None for j in job.jobs.values()):
            return False
        time.sleep(0.1)
    return False


def run_round(lab, root: Path, index: int, workload: str, nproc: int, rng, kinds=None,
              forced=(), slow_disk: bool = False) -> dict:
    """Run one round; return its record (faults, checks, recovery, steps lost). ``kinds``,
    ``forced``: see :func:`plan`; ``slow_disk``: the checkpoint disk can be throttled."""
    job = Job(lab, root, workload, nproc, slow_disk)
    record = {"round": index, "workload": workload, "nproc_per_host": nproc, "faults": [],
              "problems": []}
    injected: list[faults.Fault] = []
    try:
        job.prepare()
        try:
            job.start()
            started = wait_for(lambda: any(r["step"] > CKPT_EVERY + 2 for r in
                                           job.steps().get(0, [])), START_BOUND_S, job)
            if not started:
                record["problems"].append("the job never reached its first checkpoint")
            else:
                injected = inject(job, plan(rng, lab.names, kinds, forced), rng)
            codes = wait_jobs(job, injected)
        finally:
            for fault in injected:
                with contextlib.suppress(Exception):
                    fault.lift(time.time())
            lab.kill_all()
        check(job, record, codes, injected)
        if not record["survived"]:
            record["kept"] = keep_evidence(job)
    finally:                                 # mounts, loop device, cgroup: even on a crash
        cleanup(job)
    return record


def keep_evidence(job: Job) -> str:
    """Copy a broken round's host logs and sample logs out of the round's directory (which
    goes); returns where they are."""
    kept = KEPT / f"{job.root.parent.name}-{job.root.name}"
    kept.mkdir(parents=True, exist_ok=True)
    for log in job.root.glob("*.log"):
        shutil.copy(log, kept)
    if job.samples.exists():
        shutil.copytree(job.samples, kept / "samples", dirs_exist_ok=True)
    return str(kept)


def inject(job: Job, planned, rng) -> list:
    """Inject the planned faults a fraction of a second to 2 s apart; lift each when due."""
    injected = []
    for number, (kind, host) in enumerate(planned):
        if number:
            time.sleep(rng.uniform(0.2, 2.0))        # the schedule's spacing, not a sync
        try:
            injected.append(faults.KINDS[kind](job, host, rng, time.time()))
        except (LookupError, IndexError) as exc:     # its target had already gone
            injected.append(faults.Fault(kind, host, f"not injected: {exc}", time.time(),
                                         extra={"skipped": True}))
        lift_due(injected)
    while any(f.lifted_at is None and f.duration_s < math.inf for f in injected):
        lift_due(injected)
        time.sleep(0.05)
    return injected


def lift_due(injected) -> None:
    now = time.time()
    for fault in injected:
        if fault.lifted_at is None and now >= fault.injected_at + fault.duration_s:
            fault.lift(now)


def wait_jobs(job: Job, injected) -> dict[str, int | None]:
    """Every host's ringrun exit status (None: still running after ``JOB_BOUND_S``). A fault
    held for the rest of the job (``cut_for_good``) is lifted once every other host's ringrun
    has exited: the host it cut off then finds the job gone and must say so."""
    end = time.monotonic() + JOB_BOUND_S
    held = [f for f in injected if f.lifted_at is None]
    held_hosts = {f.host for f in held}
    while time.monotonic() < end:
        running = {h for h, j in job.jobs.items() if j.proc.poll() is None}
        if held and not running - held_hosts:
            for fault in held:
                fault.lift(time.time())
            held = []
        if not running:
            break
        time.sleep(0.1)
    return {host: hostjob.proc.poll() for host, hostjob in job.jobs.items()}


def check(job: Job, record: dict, codes: dict, injected) -> None:
    """Every invariant of the round, into ``record`` (problems listed, never raised)."""
    problems = record["problems"]
    ended_at = time.time()
    steps = job.steps()
    step_times = sorted(r["time"] for records in steps.values() for r in records)
    schedule = schedule_of(steps) if steps else []
    record["schedule"] = schedule
    record["exit_codes"] = codes
    outputs = {host: hostjob.output() for host, hostjob in job.jobs.items()
               if codes.get(host) not in (0, None)}
    exit_broken, record["dropped_out"] = exit_problems(codes, outputs, job.gone, injected)
    problems.extend(exit_broken)
    for fault in injected:
        entry = {"kind": fault.kind, "host": fault.host, "detail": fault.detail,
                 "injected": not fault.extra.get("skipped"),
                 "duration_s": round((fault.lifted_at or fault.injected_at) -
                                     fault.injected_at, 2)}
        if entry["injected"]:
            stall = stall_s(step_times, fault.injected_at, ended_at)
            entry["recovery_s"] = round(stall, 2)
            # a host cut for good: the rest of the job must go on without it, at once
            lifted_after = 0.0 if fault.kind in faults.FOR_GOOD else entry["duration_s"]
            entry["recovered"] = stall <= RECOVERY_BOUND_S + lifted_after
        record["faults"].append(entry)
    if steps and job.final.exists():
        problems.extend(sample_problems(steps, schedule))
        problems.extend(replay_problems(job, schedule, job.root))
    elif not problems:
        problems.append("the job finished without its final parameters")
    record["steps_lost"] = steps_lost(steps, schedule) if steps else None
    record["leftovers"] = leftovers(job, record, problems)
    if any(record["leftovers"].values()):
        problems.append(f"left behind: {record['leftovers']}")
    record["survived"] = not problems


def exit_problems(codes: dict, outputs: dict, gone: set[str], injected
                  ) -> tuple[list[str], dict[str, str]]:
    """What breaks "no hang: recovery or a named error" in how the hosts' ringruns ended
    (``codes``: host -> exit status, None if still running; ``outputs``: the failed hosts'
    logs). A host the round killed is exempt. One cut off or frozen that ended with ringrt's
    named error, or whose ringrun said it was cut off, dropped out, which keeps the invariant.

    Returns:
        (problems, dropped out: host -> how it ended).
    """
    problems, dropped_out = [], {}
    hung = [h for h, c in codes.items() if c is None]
    if hung:
        problems.append(f"ringrun still running after {JOB_BOUND_S:g} s on {hung}")
    may_drop_out = dropped_out_hosts(injected)
    for host, code in codes.items():
        if code in (0, None) or host in gone:
            continue
        text = outputs.get(host, "")
        lines = [line for line in text.splitlines() if "Error" in line or "error" in line]
        if host in may_drop_out and (RINGRT_ERROR.search(text) or CUT_OFF in text):
            dropped_out[host] = f"exited {code}: {lines[:1]!r}"
            continue
        named = any(mark in text for mark in NAMED_ERROR_MARKS)
        problems.append(f"{host} exited {code}" +
                        ("" if named else " with no named error") + f": {lines[:4]!r}")
    return problems, dropped_out


def dropped_out_hosts(injected) -> set[str]:
    """Hosts that may leave the job with a named ringrt error and still keep "recovery or a
    named error": cut off or frozen past the heartbeat, their peers declared them lost and
    went on without them (the job's outcome is checked on the hosts that finished it)."""
    return {f.host for f in injected
            if f.kind in faults.MAY_DROP_OUT and not f.extra.get("skipped")}


def leftovers(job: Job, record: dict, problems: list[str]) -> dict:
    """What the round left behind, by kind (the job's own hosts' /dev/shm and /tmp only).

    A host whose ringrun the round SIGKILLed is held to what ringrun promises for it: its
    job's directories go when the next ringrun starts there. So that host gets its next start
    first (recorded in ``record["next_start"]``); every host must then be clean.
    """
    alive = job.processes()
    deadline = time.monotonic() + 10                 # ringrun's workers die with it: PDEATHSIG
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = job.processes()
    record["next_start"] = {host: job.next_start(host) for host in sorted(job.gone)}
    for host, started in record["next_start"].items():
        if started["exit"] != 0:
            problems.append(f"the next ringrun on {host} exited {started['exit']}: "
                            f"{started['output']!r}")
    found = {"processes": [f"{pid} {' '.join(argv)[:120]}" for pid, (_, argv) in alive.items()],
             "shm_segments": [], "temp_entries": [], "sockets": []}
    for host in job.lab.names:
        for entry in os.listdir(job.shm_dir(host)):
            if entry != "chaos-filler":
                found["shm_segments"].append(f"{host}:/dev/shm/{entry}")
        for dirpath, dirnames, filenames in os.walk(job.tmp_dir(host)):
            rel = os.path.relpath(dirpath, job.tmp_dir(host))
            for name in filenames:
                path = os.path.join(dirpath, name)
                kind = "sockets" if _is_socket(path) else "temp_entries"
                found[kind].append(f"{host}:/tmp/{os.path.normpath(os.path.join(rel, name))}")
            if rel != "." and not filenames and not dirnames:
                found["temp_entries"].append(f"{host}:/tmp/{rel}/")
    return found


def _is_socket(path: str) -> bool:
    import stat

    with contextlib.suppress(OSError):
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    return False


def cleanup(job: Job) -> None:
    for pid in job.processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for host in job.lab.names:
        unmount(job.shm_dir(host))
    if job.disk is not None:
        job.disk.remove()
    shutil.rmtree(job.root, ignore_errors=True)
