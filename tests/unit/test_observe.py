"""Pure logic of seeing inside a job: the flight recorder's ring, call sites, the Chrome-trace
check and merge, ringrun's diagnosis of a hang, RINGRT_DEBUG's sizes (no processes, no
sockets)."""

import inspect
import json
import os

import msgpack
import numpy as np
import pytest

from ringrt_launcher import flight
from ringrt._algorithms import decisions
from ringrt._observe import merge, site, timeline
from ringrt._observe.recorder import FlightRecorder, describe

DTYPES = {1: np.dtype(np.float32)}


def test_the_ring_keeps_the_last_n_ops_oldest_first():
    recorder = FlightRecorder(size=4)
    for seq in range(10):
        recorder.enter(0, seq, "all_reduce", 1, 8, "shm", site.UNKNOWN)
    assert [r[1] for r in recorder.records()] == [6, 7, 8, 9]
    assert recorder.entered == 10
    op = describe(recorder.records()[-1], now=1e9, dtype_name=DTYPES.get)
    assert (op["op"], op["seq"], op["dtype"], op["bytes"], op["state"]) == \
        ("all_reduce", 9, "float32", 32, "queued")


def test_a_ring_of_size_0_keeps_nothing_and_a_negative_size_is_refused():
    recorder = FlightRecorder(size=0)
    recorder.enter(0, 0, "barrier", 0, -1, "", site.UNKNOWN)
    assert recorder.records() == []
    with pytest.raises(ValueError, match="RINGRT_FLIGHT_RECORDER"):
        FlightRecorder(size=-1)


def test_call_site_is_the_first_frame_outside_ringrt():
    # depth 0 starts at call_site's own frame, inside ringrt: it is skipped, so is any other
    found, line = site.call_site(0), inspect.currentframe().f_lineno
    assert found == (__file__, line, "test_call_site_is_the_first_frame_outside_ringrt")
    assert site.short(found) == f"test_observe.py:{line}"


def test_validate_names_what_breaks_the_chrome_trace_format():
    good = {"traceEvents": [
        {"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": "rank 0"}},
        {"name": "all_reduce #0", "ph": "X", "pid": 0, "tid": 0, "ts": 0.5, "dur": 3}]}
    assert merge.validate(good) == []
    assert merge.validate([]) == ["top level must be an object with a traceEvents list"]
    bad = {"traceEvents": [{"name": "x", "ph": "X", "pid": "0", "tid": 0, "ts": -1},
                           {"ph": "M", "pid": 0, "tid": 0}, {"name": "y", "ph": "Q", "pid": 0,
                                                             "tid": 1}]}
    problems = merge.validate(bad)
    assert "event 0: pid must be an integer" in problems
    assert "event 0: ts must be a number >= 0, got -1" in problems
    assert "event 0: dur must be a number >= 0, got None" in problems
    assert "event 1: missing 'name'" in problems
    assert "event 1: metadata needs an args object" in problems
    assert "event 2: unexpected phase 'Q'" in problems


def test_merge_aligns_clocks_and_survives_a_torn_rank_file(tmp_path):
    path = str(tmp_path / "t.json")
    site_ = ("/x/train.py", 88, "main")
    for rank, offset in ((0, 0.0), (1, 0.5)):
        tracer = timeline.Tracer(path, rank, 2, DTYPES)
        tracer.set_clock(offset, 1e-5)
        record = [0, 0, "all_reduce", 1, 4, "shm", site_, 9.0, 10.0, 10.001, "done", 0.0004]
        tracer.op(record)
        tracer.span("Adam.step", "optimizer", 10.002, 10.003)
        tracer.close()
    with open(timeline.rank_file(path, 1), "ab") as file:
        file.write(msgpack.packb(["ops", [[1, 2, 3]]])[:-2])       # a chunk cut short
    summary = merge.merge_rank_files(path)
    assert summary == {"ranks": [0, 1], "events": 4, "output": path}
    assert not os.path.exists(timeline.rank_file(path, 0))
    with open(path) as file:
        trace = json.load(file)
    assert merge.validate(trace) == []
    ops = {e["pid"]: e for e in trace["traceEvents"]
           if e["ph"] == "X" and e["cat"] == "collective"}
    assert ops[0]["ts"] == 0 and ops[1]["ts"] == pytest.approx(0.5e6)    # rank 1's offset
    assert ops[0]["dur"] == pytest.approx(1000, abs=0.01)
    args = ops[0]["args"]
    assert (args["bytes"], args["dtype"], args["wait_us"], args["move_us"]) == \
        (16, "float32", 400.0, 600.0)
    assert args["called_from"] == "/x/train.py:88 in main"
    rows = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"]
            if e["name"] == "thread_name"}
    assert rows[(0, timeline.MAIN_TID)] == "main thread"


def _dump(rank, op, seq, state, where=None, finished_seq=None):
    entered = {"op": op, "seq": seq, "group": 0, "state": state, "site": "train.py:80",
               "function": "main"}
    finished = None if finished_seq is None else {"op": "all_reduce", "seq": finished_seq,
                                                  "group": 0, "state": "done"}
    return {"rank": rank, "last_entered": entered, "last_finished": finished,
            "where": where and {"site": where, "function": "main"}}


def test_diagnosis_names_a_rank_in_another_op_at_the_same_sequence_number():
    dumps = {r: _dump(r, "all_reduce", 41, "running", finished_seq=40) for r in range(3)}
    dumps[3] = _dump(3, "broadcast", 41, "running", finished_seq=40)
    dumps[3]["last_entered"]["site"] = "train.py:88"
    lines = flight.diagnose(dumps, range(4))
    assert lines[1] == "  ranks 0-2 are in all_reduce #41, called from train.py:80"
    assert lines[2] == ("  rank 3 is in broadcast #41, called from train.py:88: a different op "
                        "at the same sequence number (the others: all_reduce)")


def test_diagnosis_names_an_idle_rank_a_rank_behind_and_a_rank_without_a_dump():
    dumps = {0: _dump(0, "all_reduce", 7, "failed: TimeoutError", finished_seq=6),
             1: _dump(1, "all_reduce", 7, "running", finished_seq=6),
             2: _dump(2, "all_reduce", 6, "running", finished_seq=5),
             3: _dump(3, "all_reduce", 6, "done", where="train.py:99", finished_seq=6)}
    lines = flight.diagnose(dumps, range(5))
    assert lines[1:] == [
        "  ranks 0-1 are in all_reduce #7, called from train.py:80",
        "  rank 2 is in all_reduce #6, called from train.py:80: behind the others (#7)",
        ("  rank 3 is not in any op: it last finished all_reduce #6 and is now at "
         "train.py:99 in main"),
        ("  rank 4: no flight record (exited before dumping, or did not answer SIGUSR1 "
         "within 2 s)")]
    table = flight.table(dumps, range(5))
    assert "not in an op" in table[5] and "(no dump)" in table[6]


def test_debug_sizes_read_like_a_person_wrote_them():
    assert [decisions._size(n) for n in (0, 511, 1024, 1536, 1 << 20, 3 << 29)] == \
        ["0 B", "511 B", "1 KiB", "1.5 KiB", "1 MiB", "1.5 GiB"]
