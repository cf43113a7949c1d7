"""The timeline across hosts: 3 lab hosts, one rank each, RINGRT_TRACE on a disk
they share. Ranks on other hosts than rank 0 measure their clock offset by ping rounds; lab
hosts are namespaces of one kernel, so the true offset is 0 and each estimate must lie within
its own error bound of it (which the lab's 0.2 ms links make a few hundred microseconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ringrt._observe.merge import validate
from tests.netlab._lab import ended_job_results, outputs, wait_jobs

SCRIPT = Path(__file__).with_name("trace_worker.py")


@pytest.mark.timeout(90)
def test_trace_across_hosts_aligns_clocks_within_the_measured_bound(lab, outdir):
    path = outdir / "trace.json"
    jobs = lab.ringrun_everywhere(SCRIPT, outdir, 1, env={"RINGRT_TRACE": str(path)},
                                  timeout=45, op_timeout=20)
    codes = wait_jobs(jobs, 55)
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{outputs(jobs)}"
    results = ended_job_results(jobs, outdir, world=3)
    assert {r["sum"] for r in results.values()} == {3.0 ** 5}
    trace = json.loads(path.read_text())          # merged by rank 0 (the disk is shared)
    assert validate(trace) == []
    clocks = trace["otherData"]["clock_offsets"]
    assert clocks["0"] == {"clock_offset_s": 0.0, "clock_error_s": 0.0}
    for rank in ("1", "2"):
        offset, error = clocks[rank]["clock_offset_s"], clocks[rank]["clock_error_s"]
        assert 0 < error < 0.05, clocks
        assert abs(offset) <= error, clocks
    ops = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "collective"]
    names = {rank: [e["name"] for e in sorted(ops, key=lambda e: e["ts"]) if e["pid"] == rank]
             for rank in range(3)}
    assert names[0] == names[1] == names[2] == \
        ["clock_sync #0"] + [f"all_reduce #{n}" for n in range(1, 6)] + ["barrier #6"]
