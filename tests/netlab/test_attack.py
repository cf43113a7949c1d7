"""A tokenless attacker on a fourth lab host attacks a job running on three.

The job (ringrun on hosts 0-2, 2 ranks each) runs tests/security's checked workload; the
attacker (tests/security/attacker.py, started in host 3's namespace with no token) finds the
ports every worker listens on and throws forged, wrong-credential, replayed and garbage
traffic at them and at the store on host 0. Across hosts the links are CurveZMQ: every result
stays right, the job finishes, and the ranks count exactly the connections the attacker made.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.netlab._lab import (
    HOSTS,
    MASTER_PORT,
    NPROC,
    REPO,
    WORKER,
    WORLD,
    ended_job_results,
    gige_lab_or_skip,
    outputs,
    wait_jobs,
)
from tests.security.captures import make_captures
from tests.security.test_attacks import STORE_REFUSED_ATTEMPTS

JOB_TIMEOUT = 80.0


@pytest.fixture(scope="module")
def lab4():
    """Three job hosts and one for the attacker, on netlab's gige profile."""
    yield from gige_lab_or_skip(HOSTS + 1)


@pytest.mark.timeout(150)
def test_attacker_on_a_fourth_host_changes_no_result(lab4, outdir):
    from tests.netlab._lab import TOKEN

    job_hosts, attacker_host = lab4.names[:HOSTS], lab4.names[HOSTS]
    make_captures(TOKEN, outdir / "captures")
    jobs = lab4.ringrun_everywhere(WORKER, outdir, NPROC, ["attacked"], timeout=JOB_TIMEOUT,
                                   op_timeout=30, hosts=job_hosts)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRT_")}
    env.update(PYTHONPATH=str(REPO), HOME=str(outdir / "home"))
    master = lab4.hosts[job_hosts[0]]
    attacker = lab4.start(attacker_host, [
        sys.executable, "-m", "tests.security.attacker", "--signal-dir", str(outdir),
        "--ranks", str(WORLD), "--store", f"{master}:{MASTER_PORT}",
        "--captures", str(outdir / "captures"), "--timeout", "60"],
        outdir / "attacker.log", timeout=JOB_TIMEOUT, env=env)
    codes = wait_jobs(jobs + [attacker], JOB_TIMEOUT + 10)
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n" \
        f"{outputs(jobs + [attacker])}"
    results = ended_job_results(jobs, outdir)
    report = json.loads((outdir / "report.json").read_text())

    assert all(len(ports) == 2 for ports in report["ports"].values()), report["ports"]
    assert all(host.startswith("10.") for ports in report["ports"].values()
               for host, _ in ports), "the attacker reached the workers over the lab network"
    attempts = sum(len(made) for made in report["attempts"].values())
    refused = sum(r["stats"]["transport"]["connections_refused"] for r in results.values())
    assert refused == attempts, (refused, attempts)
    print(f"{attempts} attack connections on {len(report['attempts'])} ports, all refused; "
          f"{results[0]['rounds']} rounds of collectives meanwhile")
    for rank, result in results.items():
        assert result["attacked"] and result["rounds"] > 5, result
        assert result["wrong"] == 0, f"rank {rank}: {result['wrong']} wrong results"
        assert not result["poisoned"]
        transport = result["stats"]["transport"]
        assert transport["tcp_mechanism"] == "curve" and transport["dropped_frames"] == 0
        assert set(transport["routes"].values()) == {"ipc", "tcp"}
    replies = report["store"]["replies"]
    assert [status for _, status in replies] == ["refused"] * STORE_REFUSED_ATTEMPTS, replies
