"""Seeing inside a job: timeline without ringrun, flight-recorder dumps, RINGRT_DEBUG."""

import json
import os
import re
from pathlib import Path

import pytest

from ringrt._observe.merge import validate
from tests.world import line_of, run_world, scratch_directory

WORKERS = Path(__file__).with_name("observe_workers.py")


def _line_of(marker: str) -> int:
    return line_of(WORKERS, marker)


@pytest.fixture
def scratch():
    with scratch_directory("rro-") as directory:
        yield directory


def _ops_by_rank(trace: dict) -> dict[int, list[dict]]:
    ops: dict[int, list[dict]] = {}
    for event in trace["traceEvents"]:
        if event["ph"] == "X" and event["cat"] in ("collective", "p2p"):
            ops.setdefault(event["pid"], []).append(event)
    return {rank: sorted(events, key=lambda e: e["ts"]) for rank, events in ops.items()}


@pytest.mark.timeout(60)
def test_trace_without_ringrun_is_merged_by_rank_0_with_clocks_aligned(scratch):
    """RINGRT_TRACE alone: rank 0 merges every rank's file at destroy_process_group.
    RINGRT_TRACE_PING=1 runs the cross-host clock estimate on one host, where the true
    offset is 0: the estimate must be within its own error bound of it."""
    path = os.path.join(scratch, "trace.json")
    world = run_world("tests.dist.observe_workers:traced_ops", 3, timeout=45,
                      env={"RINGRT_TRACE": path, "RINGRT_TRACE_PING": "1"})
    assert sorted(os.listdir(scratch)) == ["trace.json"]        # rank files merged, removed
    trace = json.loads(Path(path).read_text())
    assert validate(trace) == []
    ops = _ops_by_rank(trace)
    assert sorted(ops) == [0, 1, 2]
    names = {rank: [(e["args"]["group"], e["args"]["seq"], e["name"]) for e in events
                    if e["cat"] == "collective"] for rank, events in ops.items()}
    assert names[0] == names[1] == names[2]                     # same ops, same seqs
    expected = ["clock_sync #0", "all_reduce #1", "all_reduce #2", "all_reduce #3",
                "broadcast #4", "all_reduce #5", "barrier #6"]
    assert [name for _, _, name in names[0]] == expected
    assert [seq for _, seq, _ in names[0]] == list(range(7))    # in order
    first = next(e for e in ops[0] if e["name"] == "all_reduce #1")["args"]
    assert first["dtype"] == "float32" and first["bytes"] == 1024
    assert first["algorithm"] == "shm" and first["state"] == "done"
    assert first["called_from"].startswith(f"{WORKERS}:")
    assert first["wait_us"] >= 0 and first["move_us"] >= 0
    big = next(e for e in ops[0] if e["name"] == "all_reduce #5")["args"]
    assert big["bytes"] == 64 * 1024 * 8
    assert [e["name"] for e in ops[0] if e["cat"] == "p2p"] == ["send to 1 (tag 0)"]
    assert [e["name"] for e in ops[1] if e["cat"] == "p2p"] == ["recv from 0 (tag 0)"]
    clocks = trace["otherData"]["clock_offsets"]
    assert clocks["0"] == {"clock_offset_s": 0.0, "clock_error_s": 0.0}
    for rank in ("1", "2"):
        assert abs(clocks[rank]["clock_offset_s"]) <= clocks[rank]["clock_error_s"] + 50e-6
        assert 0 < clocks[rank]["clock_error_s"] < 0.05
    stats = world[1].values["stats"]
    assert {"rank", "ops", "algorithms", "transport", "shm", "p2p", "store"} <= set(stats)
    assert stats["observe"]["flight_recorder_size"] == 64
    assert stats["observe"]["ops_recorded"] == 8        # 7 collectives (clock_sync too), recv
    assert stats["observe"]["trace"].endswith("trace.json.rank1.trace")
    assert stats["ops"]["all_reduce"]["calls"] == 4 and stats["ops"]["recv"]["calls"] == 1


@pytest.mark.timeout(60)
def test_sigusr1_dumps_the_flight_recorder_and_where_the_main_thread_is(scratch):
    world = run_world("tests.dist.observe_workers:sigusr1_dump", 2, timeout=40,
                      env={"RINGRT_FLIGHT_DIR": scratch})
    line = _line_of("SIGUSR1-LINE")
    for result in world.ranks:
        err = result.stderr
        assert f"ringrt[{result.rank}]: flight recorder - SIGUSR1" in err, err
        assert re.search(r"0\s+0\s+all_reduce\s+float64\s+128\s+shm\s+done", err), err
        assert re.search(r"0\s+1\s+broadcast\s+float64\s+32\s+shm\s+done", err), err
        assert f"main thread is at observe_workers.py:{line} in sigusr1_dump" in err
        assert "Python stacks (faulthandler)" in err and "most recent call first" in err
        dump = json.loads(Path(scratch, f"rank{result.rank}.signal.json").read_text())
        assert [op["op"] for op in dump["ops"]] == ["all_reduce", "broadcast"]
        assert dump["last_finished"]["op"] == "broadcast" and dump["where"]["line"] == line
        assert "sigusr1_dump" in dump["stacks"]


@pytest.mark.timeout(60)
def test_a_mismatch_dumps_the_flight_recorder_on_every_rank(scratch):
    world = run_world("tests.dist.observe_workers:mismatch", 3, timeout=40,
                      env={"RINGRT_FLIGHT_DIR": scratch}, expect_success=False)
    for result in world.ranks:
        assert result.returncode != 0
        assert f"ringrt[{result.rank}]: flight recorder - CollectiveMismatchError" in \
            result.stderr, result.stderr
        dump = json.loads(Path(scratch, f"rank{result.rank}.error.json").read_text())
        entered = dump["last_entered"]
        expected = "broadcast" if result.rank == 2 else "all_reduce"
        assert (entered["op"], entered["seq"]) == (expected, 1)
        assert entered["state"] == "failed: CollectiveMismatchError"
        assert dump["last_finished"]["seq"] == 0


@pytest.mark.timeout(60)
def test_a_lost_peer_dumps_the_flight_recorder_on_every_survivor(scratch):
    world = run_world("tests.dist.observe_workers:peer_dies", 3, timeout=40,
                      env={"RINGRT_FLIGHT_DIR": scratch}, expect_success=False)
    assert world[2].returncode == 3
    for rank in (0, 1):
        assert f"ringrt[{rank}]: flight recorder - PeerLostError" in world[rank].stderr
        dump = json.loads(Path(scratch, f"rank{rank}.error.json").read_text())
        assert dump["last_entered"]["state"] == "failed: PeerLostError"
        assert (dump["last_entered"]["seq"], dump["last_finished"]["seq"]) == (1, 0)
    assert not Path(scratch, "rank2.error.json").exists()


@pytest.mark.timeout(60)
def test_debug_logs_each_decision_once_per_size_class_on_rank_0():
    world = run_world("tests.dist.observe_workers:debug_decisions", 2, timeout=40,
                      env={"RINGRT_DEBUG": "1"})
    lines = [line for line in world[0].stderr.splitlines() if line.startswith("ringrt[0]: ")]
    assert len(lines) == 3, world[0].stderr
    assert lines[0].startswith("ringrt[0]: all_reduce 400 B (size class 256 B-511 B) world 2 "
                               "on one host -> shm (every rank on one host: shared memory")
    assert "12000 B" in lines[1] or "11.7 KiB" in lines[1]
    assert "1 MiB" in lines[2]
    assert "ringrt[" not in world[1].stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [2, 3])
def test_latency_hooks_time_every_part_and_leave_results_alone(world_size):
    """ringrt.debug.all_reduce_part_costs re-runs an op's steps without running the op: the
    collectives after it still agree and sum right (group sizes 2 and 3)."""
    world = run_world("tests.dist.observe_workers:latency_parts", world_size, timeout=45)
    total = sum(range(1, world_size + 1))
    for result in world.ranks:
        values = result.values
        assert values["sums"] == [[total] * 3, [2.0 * total] * 3, [4.0, 4.0]]
        assert len(values["parts"]) >= 15 and all(us >= 0 for us in values["parts"].values())
        assert values["wait"] >= 0
