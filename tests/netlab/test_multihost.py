"""ringrun across 3 lab hosts (2 ranks each, world 6): rendezvous, every collective, routes;
then the same job under 5 % packet loss and on Wi-Fi-like links: still correct, only slower.

Timeouts nest: a collective's timeout inside the ranks (ringrun --timeout) < netlab exec
--timeout around each ringrun < the wait here < pytest-timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netlab._lab import NPROC, WORKER, WORLD, ended_job_results, outputs, wait_jobs


def run_job(lab, outdir, *args, timeout=60.0, op_timeout=20.0) -> dict[int, dict]:
    """Run the worker on every host; assert every ringrun succeeded and no worker survives;
    return rank -> its result."""
    jobs = lab.ringrun_everywhere(WORKER, outdir, NPROC, args, timeout=timeout,
                                  op_timeout=op_timeout)
    codes = wait_jobs(jobs, timeout + 10)
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{outputs(jobs)}"
    return ended_job_results(jobs, outdir)


def expected_route(rank: int, peer: int) -> str:
    return "ipc" if rank // NPROC == peer // NPROC else "tcp"


def assert_correct(results: dict[int, dict]) -> None:
    for rank, result in results.items():
        assert result["cases"] > 0
        assert not result["failures"], f"rank {rank}: wrong results: {result['failures'][:20]}"


@pytest.mark.timeout(100)
def test_every_collective_across_three_hosts(lab, outdir):
    results = run_job(lab, outdir, "check", timeout=75)
    assert_correct(results)
    hosts = results[0]["hosts"]
    assert hosts == [lab.names[r // NPROC] for r in range(WORLD)], hosts
    for rank, result in results.items():
        assert result["hostname"] == lab.names[rank // NPROC]
        want = {str(peer): expected_route(rank, peer) for peer in range(WORLD) if peer != rank}
        assert result["routes"] == want, f"rank {rank} routes"


@pytest.mark.timeout(110)
@pytest.mark.parametrize("shaping", [pytest.param(("--loss", "5%"), marks=pytest.mark.slow),
                                     ("--profile", "wifi")],
                         ids=["loss5pct", "wifi"])
def test_still_correct_under_loss_and_wifi(gige_after, outdir, shaping):
    lab = gige_after
    baseline = run_job(lab, subdir(outdir, "gige"), "workload", timeout=30, op_timeout=15)
    lab.shape("all", *shaping)
    shaped = run_job(lab, subdir(outdir, "shaped"), "workload", timeout=45, op_timeout=30)
    assert_correct(baseline)
    assert_correct(shaped)
    for rank, result in shaped.items():
        assert set(result["routes"].values()) == {"ipc", "tcp"}, rank
    print(f"workload {shaping}: {shaped[0]['seconds']:.2f} s vs gige "
          f"{baseline[0]['seconds']:.2f} s")


def subdir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    return path
