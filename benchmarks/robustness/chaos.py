"""Chaos soak: elastic training on the netlab cluster under a seeded schedule of faults.

Each round runs an elastic training job on every lab host under ``ringrun --nnodes 2:4``:
NumPy DDP + Adam, ZeRO-1 Adam (``examples/train.py --elastic``) and torch DDP over the
"ringrt" backend (``_chaos_torch_train.py``), in turn. It waits until the job is past its
first checkpoint, then injects 1 to 3 faults a second or two apart (``_chaos_faults.py``:
kill -9 a worker, kill a host's ringrun, cut a link for a while or for good, loss and delay
bursts, SIGSTOP a rank past the heartbeat, a full /dev/shm, a full or slow checkpoint file
system), lifts each when due and checks:

* no hang: after every fault a step completes within ``RECOVERY_BOUND_S`` of it being lifted,
  and every ringrun exits within ``JOB_BOUND_S``; one that fails names its error;
* every sample of every epoch is seen exactly once by the steps that count;
* the final parameters equal, bit for bit, a replay of the same schedule of world sizes;
* nothing left: no process, shared-memory segment, socket or temp entry on any host.

The schedule is ``random.Random(f"{seed}-{round}")``: the same seed injects the same faults
in the same order (their effects still depend on timing). Needs root (netlab, mounts; a loop
device and a blkio cgroup for ``slow_ckpt``, which is left out where they are missing). At
start the soak removes what dead soaks left (``_chaos_disk.sweep``).

    python -m benchmarks.robustness.chaos --minutes 10 --seed 1  # under flock /tmp/ringrt-cpu.lock

Writes ``benchmarks/results/chaos-<minutes>min-seed<S>.json`` and prints a table.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import click

from benchmarks.common import _machine
from benchmarks.common._paths import RESULTS
from benchmarks.robustness import _chaos_disk, _chaos_round
from benchmarks.robustness._chaos_faults import KINDS, NEEDS_SLOW_DISK

ROUND_S_ESTIMATE = 30.0        # a round with its replay: 12-28 s in the 8-minute soak (2 cores)
WORKLOADS = ("ddp", "zero", "torch")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(rounds: list[dict]) -> dict:
    """Faults by kind: injected, survived, recovery p50/p99; rounds survived; steps lost."""
    by_kind = defaultdict(lambda: {"injected": 0, "survived": 0, "recovery_s": []})
    for record in rounds:
        for fault in record["faults"]:
            if not fault["injected"]:
                continue
            entry = by_kind[fault["kind"]]
            entry["injected"] += 1
            entry["survived"] += bool(fault["recovered"] and record["survived"])
            entry["recovery_s"].append(fault["recovery_s"])
    kinds = {}
    for kind in sorted(by_kind):
        entry = by_kind[kind]
        kinds[kind] = {"injected": entry["injected"], "survived": entry["survived"],
                       "recovery_p50_s": percentile(entry["recovery_s"], 0.5),
                       "recovery_p99_s": percentile(entry["recovery_s"], 0.99)}
    every = [f["recovery_s"] for r in rounds for f in r["faults"] if f["injected"]]
    return {"rounds": len(rounds), "rounds_survived": sum(r["survived"] for r in rounds),
            "faults_injected": sum(k["injected"] for k in kinds.values()),
            "faults_survived": sum(k["survived"] for k in kinds.values()),
            "recovery_p50_s": percentile(every, 0.5), "recovery_p99_s": percentile(every, 0.99),
            "steps_lost": sum(r["steps_lost"] or 0 for r in rounds),
            "steps_lost_per_fault": (sum(r["steps_lost"] or 0 for r in rounds) / len(every)
                                     if every else None),
            "by_kind": kinds}


def table(summary: dict) -> str:
    def seconds(value):
        return "-" if value is None else f"{value:.1f}"
    lines = ["| fault | injected | survived | recover p50 (s) | recover p99 (s) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for kind, entry in summary["by_kind"].items():
        lines.append(f"| {kind} | {entry['injected']} | {entry['survived']} | "
                     f"{seconds(entry['recovery_p50_s'])} | {seconds(entry['recovery_p99_s'])} |")
    lines.append(f"| **all** | {summary['faults_injected']} | {summary['faults_survived']} | "
                 f"{seconds(summary['recovery_p50_s'])} | {seconds(summary['recovery_p99_s'])} |")
    lines.append(f"\nrounds {summary['rounds']}, survived {summary['rounds_survived']}; "
                 f"steps lost {summary['steps_lost']} "
                 f"({summary['steps_lost_per_fault'] or 0:.1f} per fault)")
    return "\n".join(lines)


def available_kinds() -> tuple[list[str], dict[str, str]]:
    """(the fault kinds this machine can inject, {kind left out: why})."""
    why = _chaos_disk.unavailable()
    left_out = {kind: why for kind in sorted(NEEDS_SLOW_DISK)} if why else {}
    return [kind for kind in sorted(KINDS) if kind not in left_out], left_out


def soak(minutes: float, seed: int, prefix: str, hosts: int, nproc: int, rounds_cap: int | None,
         log, forced=(), workloads=WORKLOADS) -> list[dict]:
    """Rounds until ``minutes`` are spent (at least one); their records. ``forced``: every
    round injects exactly these kinds; ``workloads``: the rounds' workloads, in turn."""
    from tests.netlab._lab import Lab, check_usable, exclusive_prefix

    check_usable()
    for entry in _chaos_disk.sweep():
        print(f"removed what a dead soak left: {entry}", flush=True)
    kinds, _ = available_kinds()
    if set(forced) - set(kinds):
        raise click.UsageError(f"--fault {sorted(set(forced) - set(kinds))} cannot be injected "
                               f"here: {available_kinds()[1]}")
    root = Path(f"/var/tmp/{prefix}-chaos-{os.getpid()}")
    records = []
    end = time.monotonic() + minutes * 60
    with exclusive_prefix(prefix):
        lab = Lab.up(hosts, "--profile", "gige", prefix=prefix)
        try:
            while not records or (time.monotonic() + ROUND_S_ESTIMATE <= end and
                                  (rounds_cap is None or len(records) < rounds_cap)):
                index = len(records)
                rng = random.Random(f"{seed}-{index}")
                started = time.monotonic()
                record = _chaos_round.run_round(
                    lab, root / f"r{index}", index, workloads[index % len(workloads)], nproc,
                    rng, kinds, forced, slow_disk=not NEEDS_SLOW_DISK - set(kinds))
                record["seconds"] = round(time.monotonic() - started, 1)
                records.append(record)
                log(record)
        finally:
            lab.down()
            if root.exists():
                os.rmdir(root)
    return records


@click.command()
@click.option("--minutes", type=float, default=2.0, show_default=True,
              help="Run rounds until this much time is spent (at least one round).")
@click.option("--seed", type=int, default=1, show_default=True, help="Fault schedule seed.")
@click.option("--prefix", default="rrc", show_default=True, help="netlab lab prefix.")
@click.option("--hosts", type=click.IntRange(3, 8), default=4, show_default=True)
@click.option("--nproc", type=click.IntRange(1, 4), default=2, show_default=True,
              help="Ranks per host (2: the hosts' shared memory is used, and can be filled).")
@click.option("--rounds", "rounds_cap", type=int, default=None, help="At most this many rounds.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="JSON record [default: benchmarks/results/chaos-<minutes>min-seed<S>.json].")
@click.option("--fault", "forced", multiple=True, type=click.Choice(sorted(KINDS)),
              help="Every round injects exactly these kinds (repeat for several at once; "
                   "hosts still drawn by the seed). Default: the seeded schedule.")
@click.option("--workload", "workloads", multiple=True, type=click.Choice(WORKLOADS),
              help="Rounds run these workloads in turn [default: all of them].")
def main(minutes, seed, prefix, hosts, nproc, rounds_cap, out, forced, workloads) -> None:
    """Chaos soak on the netlab cluster; exits 1 if any round broke an invariant."""
    path = Path(out) if out else RESULTS / f"chaos-{minutes:g}min-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = _machine.describe()
    kinds, left_out = available_kinds()
    records = []

    def write() -> dict:                 # after every round: a cut-short soak keeps its record
        result = {"benchmark": "chaos", "minutes": minutes, "seed": seed, "hosts": hosts,
                  "nproc_per_host": nproc, "heartbeat_s": _chaos_round.HEARTBEAT_S,
                  "recovery_bound_s": _chaos_round.RECOVERY_BOUND_S,
                  "job_bound_s": _chaos_round.JOB_BOUND_S, "fault_kinds": kinds,
                  "fault_kinds_left_out": left_out, "forced_faults": list(forced),
                  "machine": machine, "summary": summarise(records), "rounds": records}
        path.write_text(json.dumps(result, indent=1) + "\n")
        return result

    def log(record):
        records.append(record)
        write()
        faults = ", ".join(f"{f['kind']}@{f['host']}" + (f" {f['recovery_s']:.1f}s"
                                                          if f["injected"] else " (skipped)")
                           for f in record["faults"])
        state = "ok" if record["survived"] else "BROKEN: " + "; ".join(record["problems"])
        print(f"round {record['round']} ({record['workload']}, {record['seconds']} s): "
              f"schedule {[w for _, w, _ in record.get('schedule', [])]}; {faults}; {state}",
              flush=True)

    soak(minutes, seed, prefix, hosts, nproc, rounds_cap, log, forced,
         workloads or WORKLOADS)
    summary = write()["summary"]
    print(table(summary))
    print(f"machine: {_machine.summary(machine)}\nrecord: {path}")
    sys.exit(0 if summary["rounds_survived"] == summary["rounds"] else 1)

if __name__ == "__main__":
    main()
