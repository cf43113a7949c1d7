"""The chaos soak's bookkeeping (``benchmarks/robustness/_chaos_round.py``,
``benchmarks/robustness/chaos.py``)
without a lab: the schedule read from sample logs, the exactly-once check, steps lost, the
stall after a fault, the seeded fault plan, how the hosts' exits are judged, the summary, and
the sweep of what a dead soak left."""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

from benchmarks.robustness import _chaos_disk, chaos
from benchmarks.robustness import _chaos_round as rounds
from benchmarks.robustness._chaos_faults import (
    FOR_GOOD,
    JOB_WIDE,
    KINDS,
    MEMBERSHIP,
    MIN_NODES,
    NOT_ON_STORE_HOST,
    Fault,
    new_filler,
)

S, B = rounds.SAMPLES, rounds.BATCH


def records(gen_world_steps):
    """{gen: [...]} with each step's indices: world ranks share one global batch per step."""
    steps = {}
    for gen, (world, first, last) in gen_world_steps.items():
        steps[gen] = []
        for step in range(first, last + 1):
            epoch, offset = divmod(step - 1, S // B)
            batch = list(range(offset * B, offset * B + B))
            share = B // world
            for rank in range(world):
                steps[gen].append({"step": step, "epoch": epoch, "time": float(step),
                                   "indices": batch[rank * share:(rank + 1) * share],
                                   "rank": rank})
    return steps


def test_a_restart_that_redid_steps_is_counted_once_and_as_lost():
    last = rounds.EPOCHS * S // B
    steps = records({0: (8, 1, 13), 1: (6, 11, last)})     # resumed from the step-10 checkpoint
    schedule = rounds.schedule_of(steps)
    assert schedule == [(0, 8, 0), (1, 6, 10)]
    assert rounds.sample_problems(steps, schedule) == []
    assert rounds.steps_lost(steps, schedule) == 3


def test_a_skipped_step_is_reported_as_missing_samples():
    last = rounds.EPOCHS * S // B
    steps = records({0: (8, 1, 10), 1: (6, 12, last)})     # step 11 never ran
    problems = rounds.sample_problems(steps, rounds.schedule_of(steps))
    assert len(problems) == 1 and problems[0].startswith("epoch 1: repeated []")


def test_a_generation_that_saved_no_checkpoint_is_not_replayed():
    schedule = [(0, 8, 0), (1, 6, 5), (2, 8, 5), (3, 6, 20)]
    assert rounds.replay_segments(schedule) == [(8, 0, 5), (8, 5, 20), (6, 20, 0)]
    assert rounds.replay_segments([(0, 8, 0)]) == [(8, 0, 0)]


def test_the_stall_is_the_longest_gap_without_a_step_after_the_fault():
    times = [1.0, 2.0, 3.0, 9.5, 10.0]
    assert rounds.stall_s(times, 3.2, 20.0) == 6.3          # 3.2 -> 9.5
    assert rounds.stall_s([], 3.0, 5.0) == 2.0              # nothing after it: the whole rest


def test_the_plan_is_seeded_and_keeps_the_store_host_and_min_nodes():
    hosts = ["h0", "h1", "h2", "h3"]
    for seed in range(200):
        plan = rounds.plan(random.Random(seed), hosts)
        assert plan == rounds.plan(random.Random(seed), hosts)
        assert 1 <= len(plan) <= 3
        assert not any(k in NOT_ON_STORE_HOST and h == "h0" for k, h in plan)
        taken = [h for k, h in plan if k in MEMBERSHIP]
        assert len(taken) == len(set(taken))
        assert all(sum(k == kind for k, _ in plan) <= 1 for kind in JOB_WIDE)
        assert sum(k in FOR_GOOD for k, _ in plan) <= len(hosts) - MIN_NODES


def test_forced_kinds_are_exactly_the_plan_and_the_drawn_kinds_only_those_available():
    hosts = ["h0", "h1", "h2", "h3"]
    for seed in range(50):
        plan = rounds.plan(random.Random(seed), hosts, forced=("cut_for_good", "slow_ckpt"))
        assert [k for k, _ in plan] == ["cut_for_good", "slow_ckpt"] and plan[0][1] != "h0"
        drawn = rounds.plan(random.Random(seed), hosts, kinds=["kill_worker", "sigstop"])
        assert {k for k, _ in drawn} <= {"kill_worker", "sigstop"}
    try:                                 # a third host lost for good would leave one node
        rounds.plan(random.Random(0), hosts, forced=("cut_for_good",) * 3)
    except ValueError as exc:
        assert "fits no host" in str(exc)
    else:
        raise AssertionError("a plan below --nnodes MIN was accepted")


class _Proc:
    def __init__(self, code):
        self.code = code

    def poll(self):
        return self.code


class _HostJob:
    def __init__(self, code):
        self.proc = _Proc(code)


def test_a_host_cut_for_good_is_healed_only_once_every_other_host_has_ended():
    healed = []
    cut = Fault("cut_for_good", "h2", "cut", time.time(), math.inf, lambda: healed.append(1))
    job = type("J", (), {})()
    job.jobs = {"h0": _HostJob(0), "h1": _HostJob(0), "h2": _HostJob(None)}

    def heal_ends_h2():
        healed.append(1)
        job.jobs["h2"].proc.code = 1
    cut.undo = heal_ends_h2
    assert rounds.wait_jobs(job, [cut]) == {"h0": 0, "h1": 0, "h2": 1}
    assert healed == [1] and cut.lifted_at is not None


def test_a_worker_is_a_rank_never_its_ringrun_or_trampoline():
    python, train = "/venv/bin/python3", str(rounds.TRAIN)
    ringrun = [python, "-m", "ringrt_launcher", "--nnodes", "2:4", "-n", "2", train, "--elastic"]
    trampoline = [python, "-I", "-S", "/r/ringrt_launcher/_child.py", "12", "-", "--",
                  python, train, "--elastic"]
    rank = [python, train, "--elastic", "--zero"]
    assert [rounds.is_worker(a) for a in (ringrun, trampoline, rank)] == [False, False, True]
    assert rounds.is_worker([python, str(rounds.TORCH_TRAIN), "--elastic"])
    assert [rounds.is_ringrun(a) for a in (ringrun, trampoline, rank)] == [True, False, False]


PEER_LOST = ("[4] ringrt[4]: flight recorder - PeerLostError: ranks 6, 7 lost during "
             "reduce_scatter_tensor (op #46), seen from rank 4\n")


def test_a_cut_or_frozen_host_may_drop_out_with_a_named_ringrt_error():
    injected = [Fault("cut_link", "h2", "switch port down", 0.0),
                Fault("sigstop", "h3", "SIGSTOP worker", 0.0)]
    codes = {"h0": 0, "h1": 0, "h2": 1, "h3": 1}
    problems, dropped = rounds.exit_problems(codes, {"h2": PEER_LOST, "h3": PEER_LOST},
                                             set(), injected)
    assert problems == [] and sorted(dropped) == ["h2", "h3"]
    assert "PeerLostError" in dropped["h2"]
    cut_in_start_up = ("ringrun: the job's store at 10.77.0.1:29631 has been out of reach for "
                       "2.1 s (RINGRT_HEARTBEAT_TIMEOUT 2 s): this host is cut off from the "
                       "job; stopping this node's workers\nError: elastic agent on this host "
                       "could not reach the store (was its host lost?) within --join-timeout\n")
    problems, dropped = rounds.exit_problems({"h2": 1}, {"h2": cut_in_start_up}, set(),
                                             [Fault("cut_for_good", "h2", "cut", 0.0)])
    assert problems == [] and list(dropped) == ["h2"]


def test_an_exit_without_a_named_error_or_on_a_host_not_hit_is_broken():
    injected = [Fault("cut_link", "h2", "switch port down", 0.0),
                Fault("loss_burst", "h3", "10% loss", 0.0)]
    codes = {"h1": None, "h2": 1, "h3": 1}
    problems, dropped = rounds.exit_problems(
        codes, {"h2": "Killed\n", "h3": PEER_LOST}, set(), injected)
    assert dropped == {}
    assert problems[0].startswith("ringrun still running") and "h1" in problems[0]
    assert problems[1].startswith("h2 exited 1 with no named error")
    assert problems[2].startswith("h3 exited 1: ")          # named, but nothing cut it off


def test_a_host_the_round_killed_is_exempt_and_a_skipped_fault_exempts_nobody():
    injected = [Fault("sigstop", "h3", "not injected: gone", 0.0, extra={"skipped": True})]
    problems, dropped = rounds.exit_problems({"h2": -9, "h3": 1}, {"h3": PEER_LOST}, {"h2"},
                                             injected)
    assert dropped == {} and len(problems) == 1 and problems[0].startswith("h3 exited 1: ")


def test_the_summary_counts_faults_by_kind_and_percentiles():
    def fault(kind, seconds, recovered=True):
        return {"kind": kind, "injected": True, "recovery_s": seconds, "recovered": recovered}
    runs = [{"survived": True, "steps_lost": 3,
             "faults": [fault("cut_link", 4.0), fault("loss_burst", 0.5)]},
            {"survived": False, "steps_lost": 0,
             "faults": [fault("cut_link", 6.0), {"kind": "sigstop", "injected": False}]}]
    summary = chaos.summarise(runs)
    assert summary["by_kind"]["cut_link"] == {"injected": 2, "survived": 1,
                                              "recovery_p50_s": 4.0, "recovery_p99_s": 6.0}
    assert summary["faults_injected"] == 3 and summary["faults_survived"] == 2
    assert summary["rounds_survived"] == 1 and summary["steps_lost"] == 3
    assert "sigstop" not in summary["by_kind"]
    assert "| cut_link | 2 | 1 | 4.0 | 6.0 |" in chaos.table(summary)


def test_two_fills_of_one_file_system_each_lift_their_own(tmp_path):
    """A round may draw fill_shm twice for one host: lifting the first must not take the
    second's file (the soak once died lifting a filler the other had removed)."""
    first, second = new_filler(tmp_path), new_filler(tmp_path)
    assert first != second and os.path.exists(first) and os.path.exists(second)
    os.unlink(first)
    assert os.path.exists(second)


def test_the_sweep_takes_only_what_dead_soaks_left(tmp_path, monkeypatch):
    """Mounts, loop devices, cgroups and directories are a dead soak's only when the pid in
    their name is gone; a live soak's are left alone."""
    dead = _dead_pid()
    cgroups, parent = tmp_path / "blkio", tmp_path / "var-tmp"
    for pid in (dead, os.getpid()):
        (parent / f"rrc-chaos-{pid}" / "r0").mkdir(parents=True)
    (parent / "ringrt-chaos-kept").mkdir()
    for name in (f"rrc-chaos-{dead}-r3", f"rrc-chaos-{os.getpid()}-r0", "other"):
        (cgroups / name).mkdir(parents=True)
    unmounted, detached = [], []
    monkeypatch.setattr(_chaos_disk, "BLKIO", cgroups)
    monkeypatch.setattr(_chaos_disk, "SOAK_PARENT", parent)
    monkeypatch.setattr(_chaos_disk, "unmount", lambda path: unmounted.append(str(path)))
    monkeypatch.setattr(_chaos_disk, "_detach", detached.append)
    monkeypatch.setattr(_chaos_disk, "_loop_devices", lambda: [
        ("/dev/loop3", f"{parent}/rrc-chaos-{dead}/r3/ckptimg/ckpt.img"),
        ("/dev/loop4", f"{parent}/rrc-chaos-{os.getpid()}/r0/ckptimg/ckpt.img"),
        ("/dev/loop5", "/srv/image")])
    removed = _chaos_disk.sweep()
    assert detached == ["/dev/loop3"]
    assert sorted(p.name for p in cgroups.iterdir()) == ["other", f"rrc-chaos-{os.getpid()}-r0"]
    assert sorted(p.name for p in parent.iterdir()) == ["ringrt-chaos-kept",
                                                        f"rrc-chaos-{os.getpid()}"]
    assert all(str(dead) in entry for entry in removed)
    assert not any(str(os.getpid()) in path for path in unmounted)


def _dead_pid() -> int:
    """A pid no process has (the highest possible ones are never handed out here)."""
    pid = int(open("/proc/sys/kernel/pid_max").read()) - 1
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


def test_without_a_throttled_disk_slow_ckpt_is_left_out_and_never_injected(monkeypatch):
    monkeypatch.setattr(_chaos_disk, "unavailable", lambda: "losetup not found")
    kinds, left_out = chaos.available_kinds()
    assert "slow_ckpt" not in kinds and left_out == {"slow_ckpt": "losetup not found"}
    assert "cut_for_good" in kinds
    job = type("J", (), {"disk": _chaos_disk.CheckpointDisk(Path("/nowhere/r0"),
                                                            Path("/nowhere/ckpt"), slow=False)})
    try:
        KINDS["slow_ckpt"](job, "all", random.Random(0), 0.0)
    except LookupError as exc:          # inject() records it as "not injected"
        assert "no throttled checkpoint disk" in str(exc)
    else:
        raise AssertionError("slow_ckpt injected without a throttled disk")
