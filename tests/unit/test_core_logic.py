"""Tier 1: the core's pure logic (no sockets): env resolution, wire header, objects, chunking."""

import datetime

import numpy as np
import pytest

from ringrt import _objects
from ringrt._algorithms import choice, segments
from ringrt._comm import wire
from ringrt._deadline import Deadline, seconds
from ringrt._env import _first_slurm_host, job_token, resolve_job
from ringrt._reduce_ops import ReduceOp, combiner, finish
from ringrt._settings import env_encrypt


def test_env_method_reads_ringrun_variables():
    env = {"RANK": "2", "WORLD_SIZE": "4", "MASTER_ADDR": "h0", "MASTER_PORT": "1234",
           "RINGRT_TOKEN": "t", "LOCAL_RANK": "1", "RINGRT_RESTART_COUNT": "3"}
    job = resolve_job(None, None, None, env=env)
    assert (job.rank, job.world_size, job.master_addr, job.master_port, job.token) == \
        (2, 4, "h0", 1234, "t")
    assert (job.local_rank, job.restart_count, job.source) == (1, 3, "env")


def test_without_ringrt_token_the_users_own_private_token_is_used(tmp_path):
    env = {"RINGRT_TOKEN_FILE": str(tmp_path / "cfg" / "token")}
    token = job_token(env)
    path = tmp_path / "cfg" / "token"
    assert len(token) == 64 and path.read_text() == token
    assert path.stat().st_mode & 0o777 == 0o600
    assert job_token(env) == token                        # every rank of this user agrees
    assert job_token(dict(env, RINGRT_TOKEN="explicit")) == "explicit"
    assert job_token({"HOME": str(tmp_path / "home")}) == \
        (tmp_path / "home" / ".config" / "ringrt" / "token").read_text()
    assert job_token({}) == ""                            # no home: no token to share
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="not private"):
        job_token(env)


def test_encrypt_setting_is_tri_state():
    assert env_encrypt({}) is None and env_encrypt({"RINGRT_ENCRYPT": "1"}) is True
    assert env_encrypt({"RINGRT_ENCRYPT": "0"}) is False
    with pytest.raises(ValueError, match="RINGRT_ENCRYPT"):
        env_encrypt({"RINGRT_ENCRYPT": "maybe"})
    assert resolve_job(None, 0, 1, env={}).encrypt is None
    assert resolve_job(None, 0, 1, encrypt=False, env={"RINGRT_ENCRYPT": "1"}).encrypt is False


def test_slurm_fallback_when_rank_is_absent():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
           "SLURM_JOB_NODELIST": "node[03-05,9]", "SLURM_JOB_ID": "77"}
    job = resolve_job(None, None, None, env=env)
    assert (job.rank, job.world_size, job.source, job.master_addr) == (5, 8, "slurm", "node03")
    assert job.master_port == resolve_job(None, None, None, env=dict(env, SLURM_PROCID="0")) \
        .master_port                                  # every rank derives the same port


@pytest.mark.parametrize("rank_var,size_var,source", [
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "openmpi"),
    ("PMI_RANK", "PMI_SIZE", "pmi"),
])
def test_mpi_fallbacks(rank_var, size_var, source):
    job = resolve_job(None, None, None, env={rank_var: "1", size_var: "2"})
    assert (job.rank, job.world_size, job.source, job.master_addr) == (1, 2, source, "127.0.0.1")


def test_mpirun_ranks_of_one_job_agree_on_a_port_and_jobs_differ():
    def port(jobid, rank):
        env = {"OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": "4",
               "OMPI_MCA_ess_base_jobid": jobid}
        return resolve_job(None, None, None, env=env).master_port
    assert port("123", 0) == port("123", 3)
    assert port("123", 0) != port("456", 0)


def test_tcp_method_and_errors():
    job = resolve_job("tcp://10.0.0.1:999", 0, 2, env={})
    assert (job.master_addr, job.master_port, job.source) == ("10.0.0.1", 999, "tcp")
    with pytest.raises(ValueError, match="cannot tell this process's rank"):
        resolve_job(None, None, None, env={})
    with pytest.raises(ValueError, match="not supported"):
        resolve_job("file:///tmp/x", 0, 1, env={})
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        resolve_job("tcp://h:1", 2, 2, env={})


def test_first_slurm_host():
    assert _first_slurm_host("gpu1,gpu2") == "gpu1"
    assert _first_slurm_host("n[10-12]") == "n10"


def test_header_round_trip_and_garbage():
    raw = wire.pack(wire.DATA, 1, 11, 1, wire.INLINE, 3, 2, 99, 12345, 1, 7)
    assert len(raw) == wire.HEADER_BYTES == 40
    header = wire.unpack(raw + b"payload")
    assert (header.group, header.src, header.seq, header.count, header.index) == (3, 2, 99,
                                                                                   12345, 7)
    assert header.signature() == (1, 11, 12345, 1, 1)
    for garbage in (b"", b"x" * 39, b"\0" * 40):
        with pytest.raises(wire.BadFrame):
            wire.unpack(garbage)


def test_objects_round_trip_without_pickle():
    value = {"a": (1, [2, 3]), "arr": np.arange(6, dtype=np.int16).reshape(2, 3),
             "s": np.float32(2.5), "b": b"\x00", "n": None, 3: "int key"}
    back = _objects.decode(_objects.encode(value))
    assert back["a"] == (1, [2, 3]) and back[3] == "int key" and back["b"] == b"\x00"
    assert back["arr"].dtype == np.int16 and (back["arr"] == value["arr"]).all()
    assert isinstance(back["s"], np.float32)
    for bad in (object(), {1, 2}, np.array([object()]), 2**70):
        with pytest.raises(TypeError, match="never pickles"):
            _objects.encode(bad)


def test_chunks_and_segments_cover_exactly():
    for count in (0, 1, 5, 1000, 1001):
        for parts in (1, 2, 3, 4):
            bounds = segments.chunk_bounds(count, parts)
            assert bounds[0][0] == 0 and bounds[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    pieces = segments.segments(10, 10 + 3 * 2**20, 4)
    assert pieces[0][0] == 10 and pieces[-1][1] == 10 + 3 * 2**20
    assert all((b - a) * 4 <= segments.segment_bytes() for a, b in pieces)


def test_algorithm_choice_and_override(monkeypatch):
    assert choice.choose("all_reduce", 4).algorithm == "recursive_doubling"
    assert choice.choose("all_reduce", 16 << 20).algorithm == "ring"
    monkeypatch.setenv("RINGRT_ALGO", "all_reduce=ring")
    assert choice.choose("all_reduce", 4).algorithm == "ring"
    monkeypatch.setenv("RINGRT_ALGO", "all_reduce=bogus")
    with pytest.raises(ValueError, match="RINGRT_ALGO"):
        choice.choose("all_reduce", 4)


def test_reduce_ops_on_bool_and_avg():
    a, b = np.array([True, False, False]), np.array([True, True, False])
    combiner(ReduceOp.SUM, a.dtype)(a, b)
    assert a.tolist() == [True, True, False]
    x = np.array([2.0, 4.0])
    finish(ReduceOp.AVG, x, 2)
    assert x.tolist() == [1.0, 2.0]


def test_deadline_and_timeouts():
    assert seconds(datetime.timedelta(seconds=1.5)) == 1.5
    assert Deadline(None).remaining() is None and not Deadline(None).expired()
    assert Deadline(0).expired()
    with pytest.raises(ValueError):
        seconds(-1)
    with pytest.raises(ValueError):
        seconds(datetime.timedelta(seconds=-1))


def test_sentinel_verdicts():
    from ringrt._comm.sentinel import Sentinel

    sentinel = Sentinel.__new__(Sentinel)            # the judging logic only, no sockets
    sentinel.lost, sentinel.timeout, sentinel.departure_grace = {}, 5.0, 1.0
    sentinel._last_heard = {1: 100.0, 2: 100.0, 3: 100.0, 4: 97.0, 5: 100.0}
    sentinel._disconnected = {1: 100.5,               # closed after its last heartbeat: died
                              2: 99.0}                # heard from again after the drop: alive
    sentinel._departed = {3: 100.2}                   # said goodbye, grace over
    sentinel._judge(101.6)
    assert set(sentinel.lost) == {1, 3}
    assert "without a goodbye" in sentinel.lost[1] and "left the group" in sentinel.lost[3]
    sentinel._judge(100.0 + 5.5)                      # rank 4 silent for 8.5 s, rank 5 for 5.5
    assert {4, 5} <= set(sentinel.lost) and 2 in sentinel.lost   # 2 silent 5.5 s too
    assert "no heartbeat" in sentinel.lost[4]


def test_peer_lost_error_names_the_cause_not_the_ranks_that_left_after():
    from ringrt._process_group import ProcessGroup

    group = ProcessGroup.__new__(ProcessGroup)
    group.comm = type("Comm", (), {"rank": 0})()
    lost = {3: "it left the group (destroy_process_group or exit)",
            2: "it failed and exited: PeerLostError: ranks 4, 5 lost",
            4: "no heartbeat for 5.1 s (killed, frozen, or its link is cut)",
            5: "no heartbeat for 5.2 s (killed, frozen, or its link is cut)"}
    error = group.lost_error(lost, "all_reduce", 7)
    assert error.ranks == [4, 5] and "ranks [2, 3] have since left" in str(error)
    only_left = group.lost_error({3: lost[3]}, None, None)
    assert only_left.ranks == [3]


def test_gather_and_scatter_take_shared_memory_small_only_with_a_core_per_rank():
    slot = 16 << 20
    for op in ("gather", "scatter"):
        assert choice.choose(op, 64, slot, world=2).algorithm == "shm"
        assert choice.choose(op, 64, slot, world=4, oversubscribed=True).algorithm == "direct"
        assert choice.choose(op, 1 << 20, slot, world=4, oversubscribed=True).algorithm == "shm"
        assert choice.choose(op, 64, None, world=2).algorithm == "direct"  # no shared memory
