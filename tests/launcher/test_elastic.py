"""``ringrun --nnodes MIN:MAX`` on one host: usage errors, the round logic, and real agents on
loopback (several ringruns sharing one store) that admit a late node and survive a lost one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ringrt_launcher import rounds
from ringrt_launcher.cli import main
from ringrt.elastic import RoundState
from tests.launcher._ringrun import Ringrun, free_port, script

pytestmark = pytest.mark.timeout(60)
WORKER = script("elastic_worker.py")


# --- usage --------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--nnodes", "3:2"], "MIN 3 is larger than MAX 2"),
    (["--nnodes", "0:2"], "node counts must be >= 1"),
    (["--nnodes", "2:x"], "neither a node count N nor a range MIN:MAX"),
    (["--nnodes", "two"], "neither a node count N nor a range MIN:MAX"),
    (["--nnodes", "2:4", "--node-rank", "1", "--master-addr", "127.0.0.1"],
     "--node-rank cannot be used with --nnodes 2:4"),
    (["--nnodes", "2:4"], "needs --master-addr"),
    (["--nnodes", "1:2", "--master-addr", "127.0.0.1"], "needs a shared RINGRT_TOKEN"),
    (["--nnodes", "2:3", "--master-addr", "127.0.0.1", "--token", "t", "--last-call", "-1"],
     "--last-call"),
    (["--nnodes", "2:3", "--master-addr", "127.0.0.1", "--token", "t", "--trace", "t.json"],
     "--trace is not supported with --nnodes MIN:MAX"),
])
def test_elastic_usage_errors(args, message):
    result = CliRunner().invoke(main, [*args, WORKER, "out", "0"],
                                env={"RINGRT_TOKEN": ""})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_plain_nnodes_is_unchanged():
    from ringrt_launcher.config import NodeCount

    assert NodeCount().convert("3", None, None) == (None, 3)
    assert NodeCount().convert("2:4", None, None) == (2, 4)
    assert NodeCount().convert("4:4", None, None) == (4, 4)


# --- the round logic (pure) --------------------------------------------------------------


def test_round_closes_at_max_at_once_and_orders_store_host_first():
    state = rounds.initial(2, 3)
    for agent, hosts in ((5, False), (7, True), (6, False)):
        state = rounds.joined(state, agent, nproc=2, hosts_store=hosts)
    assert rounds.ready_to_close(state, None, last_call=60, now=0)
    state = rounds.closed(state)
    assert state.members == (7, 5, 6) and not state.open
    late = rounds.joined(state, 8, nproc=2, hosts_store=False)
    assert late.members == (7, 5, 6) and late.waiting == (8,)   # never the current round
    assert late.admits_waiting is False                          # already at MAX


def test_round_waits_last_call_after_min():
    state = rounds.joined(rounds.initial(2, 4), 1, 1, True)
    assert not rounds.ready_to_close(state, 0.0, last_call=5, now=100)   # below MIN
    state = rounds.joined(state, 2, 1, False)
    assert not rounds.ready_to_close(state, 10.0, last_call=5, now=14)
    assert rounds.ready_to_close(state, 10.0, last_call=5, now=15)
    closed = rounds.closed(state)
    assert rounds.joined(closed, 3, 1, False).admits_waiting


def test_next_round_counts_failures_not_membership_restarts():
    state = rounds.closed(rounds.joined(rounds.initial(1, 2), 1, 1, True))
    grown = rounds.next_round(state, "", max_restarts=0)
    assert (grown.gen, grown.open, grown.members, grown.failures) == (1, True, (), 0)
    after_failure = rounds.next_round(grown, "rank 1 failed", max_restarts=1)
    assert (after_failure.gen, after_failure.failures) == (2, 1)
    exhausted = rounds.next_round(after_failure, "rank 0 failed", max_restarts=1)
    assert exhausted.gen == 2 and "rank 0 failed; --max-restarts 1 used up" in exhausted.failed


def test_state_round_trips_through_json():
    state = rounds.closed(rounds.joined(rounds.initial(2, 4), 3, 4, True))
    assert RoundState.decode(state.encode()) == state


def test_silence_watch_names_the_node_whose_counter_stopped():
    from ringrt_launcher.keepalive import SilenceWatch

    watch = SilenceWatch([2, 3], timeout=1.0, now=0.0)
    assert watch.silent({2: 5, 3: 0}, now=0.5) == []
    assert watch.silent({2: 6, 3: 0}, now=1.4) == []       # 3 never moved, for 0.9 s so far
    assert watch.silent({2: 7, 3: 0}, now=1.6) == [3]
    assert watch.silent({2: 7, 3: 1}, now=2.5) == []       # each moved within the last second


def test_silence_watch_blames_nobody_for_an_unreachable_store():
    from ringrt_launcher.keepalive import SilenceWatch

    watch = SilenceWatch([2], timeout=1.0, now=0.0)
    assert watch.silent({2: 4}, now=0.1) == []
    assert watch.silent(None, now=5.0) == []               # nothing known: clocks start again
    assert watch.silent({2: 4}, now=5.5) == []
    assert watch.silent({2: 4}, now=6.6) == [2]


def test_an_agent_cut_off_from_the_store_stops_its_workers_after_the_heartbeat_timeout(
        monkeypatch):
    """A host cut off while its workers start (no heartbeats yet) used to wait for ever: the
    agent took a failed read of the record for "nothing changed"."""
    import types

    from ringrt_launcher import elastic

    clock = [100.0]
    monkeypatch.setattr(elastic.time, "monotonic", lambda: clock[0])
    notes = []
    agent = object.__new__(elastic.ElasticAgent)
    agent.rounds = types.SimpleNamespace(read=lambda: None)        # the store out of reach
    agent.console = types.SimpleNamespace(note=notes.append)
    agent.config = types.SimpleNamespace(master_addr="10.0.0.1", master_port=29500)
    agent.keepalive_timeout, agent.store_lost_since, agent.ending = 2.0, None, None
    assert not agent._superseded()                  # the first failed read starts the clock
    clock[0] += 1.5
    assert not agent._superseded()
    clock[0] += 1.0
    assert agent._superseded() and agent.ending == "failure"
    assert agent.last_failure[1] == elastic.EXIT_FAILED
    assert "10.0.0.1:29500 has been out of reach for 2.5 s" in notes[0]
    assert "cut off from the job" in notes[0]


def test_membership_changed_on_a_subgroup_without_rank_0():
    with Ringrun("-n", "3", script("elastic_subgroup.py"),
                 env={"RINGRT_GENERATION": "0"}) as job:
        result = job.wait(30)
    assert result.returncode == 0, result
    for rank, sub in ((0, None), (1, True), (2, True)):
        assert f"rank {rank}: world True subgroup {sub}" in result.stdout, result


# --- real agents on loopback ----------------------------------------------------------------


def _agents(count, port, outdir, last_gen, extra=(), env=None):
    env = {"RINGRT_TOKEN": "elastic-test", "RINGRT_HEARTBEAT_TIMEOUT": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **(env or {})}
    args = ["--nnodes", "2:3", "--master-addr", "127.0.0.1", "--master-port", str(port),
            "--last-call", "1", "--join-timeout", "20", "-n", "1", *extra, WORKER, str(outdir),
            str(last_gen)]
    return [Ringrun(*args, env=env) for _ in range(count)]


def _records(outdir):
    return {p.stem: json.loads(p.read_text()) for p in Path(outdir).glob("gen*-rank*.json")}


def _wait_for(outdir, names, jobs, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if set(names) <= set(_records(outdir)):
            return
        assert all(job.proc.poll() is None for job in jobs), [job.wait(5) for job in jobs]
        time.sleep(0.05)
    raise AssertionError(f"{names} not all written: {sorted(_records(outdir))}")


def _check_generation(records, gen, world):
    mine = {k: v for k, v in records.items() if k.startswith(f"gen{gen}-")}
    assert sorted(v["rank"] for v in mine.values()) == list(range(world)), records
    for record in mine.values():
        assert (record["world"], record["restart"]) == (world, gen)
        assert record["sum"] == world * (world + 1) / 2
        assert record["node_rank"] == record["rank"]


def test_late_node_waits_for_the_next_round_and_is_admitted(tmp_path):
    port = free_port()
    first, second = _agents(2, port, tmp_path, last_gen=1)
    with first, second:
        _wait_for(tmp_path, ["gen0-rank0", "gen0-rank1"], [first, second])
        (late,) = _agents(1, port, tmp_path, last_gen=1)
        with late:
            results = [job.wait(40) for job in (first, second, late)]
    assert [r.returncode for r in results] == [0, 0, 0], "\n".join(map(str, results))
    records = _records(tmp_path)
    assert sorted(records) == ["gen0-rank0", "gen0-rank1",
                               "gen1-rank0", "gen1-rank1", "gen1-rank2"]
    _check_generation(records, 0, 2)
    _check_generation(records, 1, 3)
    assert "waiting to be admitted" in results[2].stderr
    (host,) = [r for r in results if "this node hosts the store" in r.stderr]
    assert "this node is node rank 0" in host.stderr       # the store's host is node 0


@pytest.mark.parametrize("max_restarts, survives", [(1, True), (0, False)])
def test_lost_node_survivors_restart_smaller_within_max_restarts(tmp_path, max_restarts,
                                                                 survives):
    port = free_port()
    (host,) = _agents(1, port, tmp_path, 1, ["--max-restarts", str(max_restarts)])
    with host:
        time.sleep(1.0)                               # it binds the port: the store's host
        others = _agents(2, port, tmp_path, 1, ["--max-restarts", str(max_restarts)])
        with others[0], others[1]:
            _wait_for(tmp_path, [f"gen0-rank{r}" for r in range(3)], [host, *others])
            victim = others[1]
            os.killpg(victim.proc.pid, signal.SIGKILL)    # the node is gone, workers too
            survivors = [host.wait(40), others[0].wait(40)]
    records = _records(tmp_path)
    _check_generation(records, 0, 3)
    if survives:
        assert [r.returncode for r in survivors] == [0, 0], "\n".join(map(str, survivors))
        _check_generation(records, 1, 2)
    else:
        assert all(r.returncode != 0 for r in survivors), "\n".join(map(str, survivors))
        assert not any(k.startswith("gen1") for k in records)
        assert "--max-restarts 0 used up" in survivors[0].stderr + survivors[1].stderr


# Heartbeat timeout (1 s) + --grace + --last-call 3 + a generation's start-up, with room for a
# loaded 2-core machine. A hang lasts init_process_group's 300 s rendezvous timeout instead.
RECOVERY_BOUND = 25.0


@pytest.mark.timeout(60)
def test_node_lost_during_start_up_survivors_restart_within_heartbeat_timeout(tmp_path):
    """Chaos round 18 (docs/chaos.md; pytorch#111646): a node's ringrun dies after its generation
    formed but before its workers finished start-up; the other nodes' workers, waiting in
    init_process_group for its ranks, must not hang there until the rendezvous timeout."""
    from ringrt._comm import shm_files, stale

    jobs = _agents(3, free_port(), tmp_path, last_gen=1,
                   extra=["--max-restarts", "1", "--last-call", "3"],
                   env={"ELASTIC_TEST_HOLD_GEN": "0"})
    try:
        held = _wait_for_held(tmp_path, 3, jobs)
        (victim,) = [job for job in jobs if job.proc.pid == held[2]["agent"]]  # not the store's
        os.killpg(victim.proc.pid, signal.SIGKILL)       # its held worker dies with it
        victim.proc.wait(10)
        (tmp_path / "go").touch()                        # the others go on into start-up
        survivors = [job for job in jobs if job is not victim]
        results = [job.wait(RECOVERY_BOUND) for job in survivors]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the surviving agents were still running {RECOVERY_BOUND:g} s after node "
                    f"rank 2 was lost during start-up (hung in init_process_group?)")
    finally:
        for job in jobs:
            job.kill_all()
        stale.sweep_jobs()                      # the killed ringrun's /tmp/ringrun-* dirs
        shm_files.sweep_stale()                 # and segments of ranks killed in start-up
    assert [r.returncode for r in results] == [0, 0], "\n".join(map(str, results))
    records = _records(tmp_path)
    assert not any(name.startswith("gen0") for name in records), records
    _check_generation(records, 1, 2)
    assert "node rank 2" in "".join(r.stderr for r in results), "\n".join(map(str, results))


def _wait_for_held(outdir, count, jobs, timeout=30.0):
    """node rank -> what the held workers of generation 0 recorded, once ``count`` did."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        held = [json.loads(p.read_text()) for p in Path(outdir).glob("held-gen0-rank*.json")]
        if len(held) == count:
            return {record["node_rank"]: record for record in held}
        assert all(job.proc.poll() is None for job in jobs), [job.wait(5) for job in jobs]
        time.sleep(0.05)
    raise AssertionError(f"{count} workers of generation 0 did not start in {timeout} s")
