"""ringrun --trace and the flight-recorder summary of a hung job."""

import contextlib
import json
import os
import signal
import time

import pytest

from ringrt._observe.merge import validate
from tests.launcher import _ringrun
from tests.world import line_of, scratch_directory


@pytest.fixture
def scratch():
    with scratch_directory("rrt-") as directory:
        yield directory


@pytest.mark.timeout(90)
def test_trace_of_a_4_rank_ddp_run(scratch):
    path = os.path.join(scratch, "ddp.json")
    result = _ringrun.run("-n", "4", "--trace", path, _ringrun.script("ddp_trace.py"),
                          timeout=60)
    assert result.returncode == 0, result
    assert f"trace: {path}" in result.stderr and "ranks 0-3" in result.stderr, result
    assert os.listdir(scratch) == ["ddp.json"]
    with open(path) as file:
        trace = json.load(file)
    assert validate(trace) == []
    events = trace["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names == {r: f"rank {r}" for r in range(4)}
    sequences = {}
    for rank in range(4):
        ops = sorted((e for e in events if e["pid"] == rank and e["ph"] == "X"
                      and e["cat"] == "collective"), key=lambda e: e["ts"])
        starts = [e["args"]["seq"] for e in ops]
        assert starts == list(range(len(ops))), (rank, starts)         # in order, none missing
        sequences[rank] = [(e["args"]["seq"], e["name"], e["args"]["bytes"]) for e in ops]
        spans = [e for e in events if e["pid"] == rank and e["ph"] == "X"]
        buckets = [e for e in spans if e["cat"] == "ddp" and e["name"].startswith("bucket")]
        assert len(buckets) == 2 * 4                                    # 2 buckets x 4 steps
        assert sum(e["name"] == "Adam.step" for e in spans) == 4
        assert all(e["tid"] >= 100 for e in buckets)
    assert sequences[0] == sequences[1] == sequences[2] == sequences[3]
    assert [name.split(" #")[0] for _, name, _ in sequences[0]] == \
        ["broadcast"] + ["all_reduce"] * 8 + ["barrier"]


@pytest.mark.timeout(90)
def test_a_hung_job_names_the_rank_that_skipped_the_collective_and_its_line(scratch):
    script = _ringrun.script("hang.py")
    hang, collective = line_of(script, "HANG-LINE"), line_of(script, "COLLECTIVE-LINE")
    path = os.path.join(scratch, "hang.json")
    with _ringrun.Ringrun("-n", "4", "--timeout", "3", "--grace", "2", "--trace", path,
                          script) as job:
        result = job.wait(60)
    assert result.returncode == 1, result
    assert result.elapsed < 30, result
    err = result.stderr
    assert "ringrun: flight recorder: last op each rank entered and finished" in err, result
    assert f"ranks 0-2 are in all_reduce #5, called from hang.py:{collective}" in err, result
    assert (f"rank 3 is not in any op: it last finished all_reduce #4 and is now at "
            f"hang.py:{hang} in <module>") in err, result
    assert "[3] ringrt[3]: flight recorder - SIGUSR1" in err, result
    with open(path) as file:                        # merged after the failure too
        spans = [e for e in json.load(file)["traceEvents"] if e["ph"] == "X"]
    failed = sorted(e["pid"] for e in spans if e["args"]["state"].startswith("failed: "))
    assert failed == [0, 1, 2]
    assert sum(e["pid"] == 3 for e in spans) == 5                 # rank 3: ops #0-#4, done


def _wait_for_lines(log_dir: str, ranks: int, text: str, job, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and job.proc.poll() is None:
        found = 0
        for rank in range(ranks):
            with contextlib.suppress(OSError), open(os.path.join(log_dir, f"rank{rank}.log")) as f:
                found += text in f.read()
        if found == ranks:
            return
        time.sleep(0.05)
    raise AssertionError(f"not every rank wrote {text!r} within {timeout} s")


@pytest.mark.timeout(90)
def test_sigusr1_to_ringrun_reports_a_running_job_without_stopping_it(scratch):
    script = _ringrun.script("hang.py")
    hang = line_of(script, "HANG-LINE")
    with _ringrun.Ringrun("-n", "4", "--timeout", "60", "--log-dir", scratch, script) as job:
        _wait_for_lines(scratch, 4, "finished step 4", job)
        time.sleep(0.5)             # ranks 0-2 enter all_reduce #5 right after that line
        os.kill(job.proc.pid, signal.SIGUSR1)
        dumps = os.path.join(scratch, "flight", "rank3.signal.json")
        end = time.monotonic() + 20
        while not os.path.exists(dumps) and time.monotonic() < end:
            time.sleep(0.05)
        assert job.proc.poll() is None                      # still running
        os.kill(job.proc.pid, signal.SIGINT)
        result = job.wait(30)
    err = result.stderr
    assert "SIGUSR1: asking the workers for flight-recorder dumps" in err, result
    live = err.split("SIGUSR1: asking the workers")[1].split("received SIGINT")[0]
    assert "ranks 0-2 are in all_reduce #5" in live, result
    assert f"rank 3 is not in any op: it last finished all_reduce #4 and is now at " \
           f"hang.py:{hang}" in live, result
    assert result.returncode == 130, result
