"""The collective benchmark's arithmetic and text (benchmarks/common/_table.py, the expected results
of benchmarks/common/_measure.py, the targets verdicts): pure logic, no sockets, no timing."""

import numpy as np
import pytest

from benchmarks.collectives import targets
from benchmarks.common import _backends, _measure, _table


def test_parse_and_format_sizes():
    assert [_table.parse_size(s) for s in ("4", "16K", "64M", "1G", "16KiB", "2kb")] == \
        [4, 16384, 64 << 20, 1 << 30, 16384, 2048]
    assert [_table.format_size(n) for n in (4, 1024, 16 << 10, 64 << 20, 1536)] == \
        ["4", "1K", "16K", "64M", "1536"]
    with pytest.raises(ValueError, match="16X"):
        _table.parse_size("16X")


def test_sweep_steps_like_nccl_tests():
    assert _table.sweep(4, 64, 2) == [4, 8, 16, 32, 64]
    assert _table.sweep(4, 64 << 20, 4)[-1] == 64 << 20
    assert len(_table.sweep(4, 64 << 20, 2)) == 25
    assert _table.sweep(4, 100, 4) == [4, 16, 64]
    with pytest.raises(ValueError):
        _table.sweep(4, 64, 1)
    with pytest.raises(ValueError):
        _table.sweep(64, 4, 2)


def test_element_count_rounds_split_ops_to_the_world():
    assert _table.element_count("all_reduce", 4, 4, 4) == 1
    assert _table.element_count("broadcast", 2, 4, 4) == 1
    assert _table.element_count("all_gather", 4, 4, 4) == 4
    assert _table.element_count("reduce_scatter", 40, 4, 3) == 9
    assert _table.element_count("reduce_scatter", 1 << 20, 4, 4) == 1 << 18


@pytest.mark.parametrize("op, world, factor", [
    ("all_reduce", 4, 1.5), ("all_reduce", 2, 1.0), ("all_reduce", 1, 0.0),
    ("reduce_scatter", 4, 0.75), ("all_gather", 2, 0.5), ("broadcast", 4, 1.0)])
def test_bus_factors_are_nccl_tests(op, world, factor):
    assert _table.bus_factor(op, world) == pytest.approx(factor)


def test_bandwidths():
    algbw, busbw = _table.bandwidths("all_reduce", 1_000_000_000, 2.0, 4)
    assert (algbw, busbw) == (pytest.approx(0.5), pytest.approx(0.75))
    assert _table.bandwidths("broadcast", 10, 0.0, 2) == (0.0, 0.0)


def test_an_iteration_takes_the_slowest_rank_then_median_and_mean():
    per_rank = [[1e-6, 5e-6, 2e-6], [3e-6, 1e-6, 2e-6]]
    assert _table.slowest_rank(per_rank) == [3e-6, 5e-6, 2e-6]
    stats = _table.summarize(_table.slowest_rank(per_rank))
    assert stats["median_us"] == pytest.approx(3.0)
    assert stats["mean_us"] == pytest.approx(10 / 3)
    assert (stats["min_us"], stats["max_us"]) == (pytest.approx(2.0), pytest.approx(5.0))
    assert _table.summarize([1e-6, 2e-6, 3e-6, 100e-6])["median_us"] == pytest.approx(2.5)


def test_iterations_fill_the_budget_within_bounds():
    assert _table.iterations(10e-6, 0.25, 5, 2000) == 2000
    assert _table.iterations(1e-3, 0.25, 5, 2000) == 250
    assert _table.iterations(0.2, 0.25, 5, 2000) == 5
    assert _table.iterations(0.0, 0.25, 5, 2000) == 2000


def test_ratio_is_ringrt_over_other():
    assert _table.ratio(50.0, 100.0) == 0.5
    assert _table.ratio(None, 1.0) is None and _table.ratio(1.0, 0.0) is None


def _rec(system, median, run="r1", nbytes=4, op="all_reduce", world=2):
    return _table.record(system=system, op=op, world=world, nbytes=nbytes, count=nbytes // 4,
                         dtype="float32", seconds=[median * 1e-6] * 3, warmup=1, wrong=0,
                         run=run)


def test_record_fields_and_bandwidth():
    rec = _rec("gloo", 100.0, nbytes=1 << 20)
    assert rec["redop"] == "sum" and rec["root"] == -1 and rec["iters"] == 3
    assert rec["algbw"] == pytest.approx((1 << 20) / 100e-6 / 1e9)
    assert rec["busbw"] == pytest.approx(rec["algbw"])               # world 2: 2(n-1)/n = 1
    bcast = _rec("ringrt", 1.0, op="broadcast")
    assert (bcast["redop"], bcast["root"]) == ("none", 0)


def test_table_rows_carry_the_ratio_to_ringrt():
    text = _table.format_table([_rec("ringrt", 50.0), _rec("gloo", 200.0),
                                _rec("ringrt", 80.0, nbytes=16), _rec("gloo", 40.0, nbytes=16)])
    rows = [line for line in text.splitlines() if not line.startswith("#") and line.strip()]
    assert len(rows) == 4
    assert rows[0].split()[-1] == "-"
    assert rows[1].split()[-1] == "0.25" and rows[3].split()[-1] == "2.00"
    assert "#wrong" in text and "busbw" in text


def test_compare_table_pairs_each_ratio_with_its_own_run():
    records = [_rec("ringrt", 10.0, "shm"), _rec("gloo", 40.0, "shm"), _rec("mpi-shm", 5.0, "shm"),
               _rec("ringrt", 30.0, "tcp"), _rec("gloo", 60.0, "tcp"), _rec("mpi-tcp", 60.0, "tcp"),
               _rec("ringrt", 20.0, "ringrun"), _rec("gloo", 10.0, "ringrun")]
    rows = [line.split() for line in _table.compare_table(records).splitlines()
            if line.strip() and not line.startswith("#")]
    assert rows == [["4", "shm", "0.25", "2.00", "10.0", "40.0", "5.0", "shm"],     # ratios lead
                    ["4", "tcp", "0.50", "0.50", "30.0", "60.0", "60.0", "tcp"],
                    ["4", "ringrun", "2.00", "-", "20.0", "10.0", "-", "-"]]


def test_machine_description_measures_copy_bandwidth_and_cores():
    from benchmarks.common import _machine

    assert 0.1 < _machine.copy_bandwidth(1 << 20, repeats=2) < 1000            # GB/s
    info = {"cpus": 16, "cpus_usable": 4, "copy_gb_s": 12.34, "cpu_model": "Some CPU"}
    assert _machine.summary(info) == "16 cores (4 usable), NumPy copy 12.3 GB/s (Some CPU)"
    info["cpus_usable"] = 16
    assert _machine.summary(info).startswith("16 cores, NumPy copy 12.3 GB/s")


def _simulate(op, count, world):
    """Every rank's known inputs, the collective done in NumPy, and _measure.expected."""
    dtype = np.dtype("float32")
    outs, inps = zip(*[_measure.buffers(op, count, dtype, world) for _ in range(world)],
                     strict=True)
    for rank in range(world):
        _measure.fill_known(op, outs[rank], inps[rank], rank)
    if op == "all_reduce":
        result = [sum(outs)] * world
    elif op == "broadcast":
        result = [outs[0].copy()] * world
    elif op == "reduce_scatter":
        result = np.split(sum(inps), world)
    else:
        result = [np.concatenate(inps)] * world
    for rank in range(world):
        np.testing.assert_array_equal(result[rank],
                                      _measure.expected(op, outs[rank], rank, world))


@pytest.mark.parametrize("op", _table.OPS)
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_expected_results_match_numpy(op, world):
    for nbytes in (4, 52, 4096):
        _simulate(op, _table.element_count(op, nbytes, 4, world), world)


def test_launcher_and_mpi_transport_detection():
    assert _backends.launcher({"RINGRT_RESTART_COUNT": "0", "RANK": "0"}) == "ringrun"
    assert _backends.launcher({"OMPI_COMM_WORLD_SIZE": "4"}) == "mpirun"
    assert _backends.launcher({}) == "none"
    assert _backends.mpi_label({"OMPI_MCA_btl": "tcp,self"}) == "mpi-tcp"
    assert _backends.mpi_label({"OMPI_MCA_btl": "self,vader,tcp"}) == "mpi-shm"
    assert _backends.mpi_label({}) == "mpi-shm"


def test_targets_verdicts():
    ringrt = {"median_us": 40.0, "mean_us": 60.0}
    assert targets.verdict(ringrt, {"median_us": 100.0, "mean_us": 200.0}, None, 4) == []
    misses = targets.verdict(ringrt, {"median_us": 100.0, "mean_us": 100.0}, None, 4)
    assert misses == ["mean 0.60x gloo > 0.5"]
    assert targets.verdict(ringrt, None, 30.0, 4) == []                      # MPI from 1 MiB
    assert targets.verdict(ringrt, None, 30.0, 1 << 20) == ["median 1.33x mpi-tcp > 1"]


def test_targets_report_counts_failures():
    records = []
    for nbytes in targets.SIZES:
        records += [_rec("ringrt", 10.0, nbytes=nbytes), _rec("gloo", 100.0, nbytes=nbytes)]
    text, failed = targets.format_report(records, 2)
    assert failed == 0 and "5 of 5 points PASS" in text
    records[-2] = _rec("ringrt", 30000.0, nbytes=64 << 20)                  # > gloo and MPI
    text, failed = targets.format_report(records, 2)
    row = next(line for line in text.splitlines() if line.split()[:1] == ["64M"])
    assert failed == 1 and "FAIL" in row and "x mpi-tcp" in row


def test_compare_plans_both_mpi_transports_or_falls_back_to_ringrun():
    from benchmarks.collectives import compare

    runs = compare.plan_runs([2, 4], ["shm", "tcp"], None)
    assert [label for label, _ in runs] == ["mpirun-shm-w2", "mpirun-tcp-w2", "mpirun-shm-w4",
                                            "mpirun-tcp-w4"]
    argv = runs[1][1](["benchmarks.collectives.sweep", "--op", "all"])
    assert argv[0] == "mpirun" and "--oversubscribe" in argv and argv[-3:] == \
        ["benchmarks.collectives.sweep", "--op", "all"]
    assert argv[argv.index("--mca") + 1:argv.index("--mca") + 3] == ["btl", "tcp,self"]
    assert "--mca" not in runs[0][1](["benchmarks.collectives.sweep"])
    fallback = compare.plan_runs([4], ["shm", "tcp"], "mpirun not found")
    assert [label for label, _ in fallback] == ["ringrun-w4"]
    assert fallback[0][1](["benchmarks.collectives.targets"])[-4:] == \
        ["-n", "4", "-m", "benchmarks.collectives.targets"]


def test_plot_series_take_the_median_over_runs():
    from benchmarks.collectives import plot

    records = [_rec("ringrt", 10.0, "a"), _rec("ringrt", 30.0, "b"), _rec("ringrt", 20.0, "c"),
               _rec("gloo", 5.0, "a", nbytes=16), _rec("gloo", 7.0, "a", world=4)]
    lines = plot.series(records, "all_reduce")
    assert lines[("ringrt", 2)] == [(4, pytest.approx(20.0))]
    assert lines[("gloo", 2)] == [(16, 5.0)] and lines[("gloo", 4)] == [(4, 7.0)]


def test_readme_report_puts_ratios_first_and_pairs_runs():
    from benchmarks.collectives import report

    def rec(system, run, us, world=2, nbytes=4):
        return {"system": system, "run": run, "op": "all_reduce", "world": world,
                "bytes": nbytes, "median_us": us, "mean_us": us * 2}

    doc = {"runs": [{"run": "shm", "date": "d", "cpus": 2, "loadavg_start": [1.0],
                     "machine": {"cpus": 2, "cpus_usable": 2, "copy_gb_s": 9.8,
                                 "cpu_model": "X"}}],
           "results": [rec("ringrt", "shm", 10), rec("gloo", "shm", 40), rec("mpi-shm", "shm", 5),
                       rec("ringrt", "tcp", 30), rec("mpi-tcp", "tcp", 60)]}
    row = report.all_reduce_table(doc)[2]
    assert row == "| 2 | 4 B | 0.25 | 0.50 | 10.0 | 40.0 | 5.0 | 60.0 |"
    assert "NumPy copy 9.8 GB/s" in report.run_lines(doc)[0]
    assert report.worst_ratios(doc)[2] == "| all_reduce | 0.25 | 0.25 |"


def test_summarize_reports_tails_and_stalls():
    seconds = [1e-6] * 95 + [10e-6] * 5        # five stalls of 10x the median
    stats = _table.summarize(seconds)
    assert stats["p50_us"] == pytest.approx(1.0) and stats["p90_us"] == pytest.approx(1.0)
    assert stats["p99_us"] == pytest.approx(10.0) and stats["stalled"] == 5
    assert stats["stalled_share"] == pytest.approx(50 / 145)
    assert _table.summarize([2e-6, 9e-6])["stalled"] == 0     # 9 < 5 x median 5.5
    assert np.percentile(seconds, 90) * 1e6 == pytest.approx(stats["p90_us"])


def test_shm_lines_name_each_system_on_ringrt():
    records = [{"bytes": 4, "system": "ringrt",
                "shm": {"waits": 10, "sleeps": 1, "timeouts": 0, "missed_wakeups": 0}},
               {"bytes": 4, "system": "torch-ringrt",
                "shm": {"waits": 7, "sleeps": 3, "timeouts": 0, "missed_wakeups": 0}},
               {"bytes": 4, "system": "gloo", "shm": None}]
    lines = _table.shm_lines(records).splitlines()
    assert lines[1:] == ["#        4 ringrt: 10 / 1 / 0 / 0",
                         "#        4 torch-ringrt: 7 / 3 / 0 / 0"]
    assert _table.shm_lines(records[2:]) == ""
