"""A group spanning hosts against the world group, on netlab: benchmarks/collectives/groups.py
run by one ``ringrun`` per lab host.

::

    .venv/bin/python -m benchmarks.collectives.groups_across_hosts \\
        --json benchmarks/results/groups-netlab-2x2.json

``--hosts`` lab hosts (netlab's ``--profile``, gige by default) of ``--nproc`` ranks each.
The group is ``new_group(all ranks)``: the same ranks as the world, so both run the same
two-level algorithms (shared memory inside a host: the world's host arena, the group's own
arena of its members on that host) and the ratio shows what the group costs over the world.
Needs root (netlab); the other options are groups.py's. Prints rank 0's table.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click

from benchmarks.common._paths import REPO
from tests.netlab._lab import LabUnavailable, outputs, running_lab, wait_jobs

SCRIPT = REPO / "benchmarks" / "collectives" / "groups.py"


@click.command()
@click.option("--hosts", default=2, show_default=True)
@click.option("--nproc", default=2, show_default=True, help="Ranks per host.")
@click.option("--profile", default="gige", show_default=True, help="netlab's link profile.")
@click.option("--ops", default="all_reduce,broadcast,all_gather,reduce_scatter",
              show_default=True)
@click.option("--sizes", default="4,4K,64K,1M,4M", show_default=True)
@click.option("--rounds", default=5, show_default=True)
@click.option("--budget", default=0.5, show_default=True)
@click.option("--json", "json_path", default=None, help="Write groups.py's record here.")
@click.option("--timeout", default=480.0, show_default=True, help="Seconds for the whole run.")
def main(hosts, nproc, profile, ops, sizes, rounds, budget, json_path, timeout):
    """Time a group of every rank against the world across netlab hosts."""
    args = ["--ops", ops, "--sizes", sizes, "--rounds", str(rounds), "--budget", str(budget)]
    if json_path:
        args += ["--json", str(Path(json_path).resolve())]
    outdir = Path(tempfile.mkdtemp(prefix="rrg-", dir="/tmp"))
    try:
        with running_lab(hosts, "--profile", profile) as lab:
            jobs = lab.ringrun_everywhere(SCRIPT, outdir, nproc, args, timeout=timeout,
                                          op_timeout=60, env={"OMP_NUM_THREADS": "1"},
                                          hosts=lab.names[:hosts])
            codes = wait_jobs(jobs, timeout + 10)
            click.echo(jobs[0].output())
            if any(code != 0 for code in codes.values()):
                click.echo(f"exit codes {codes}\n{outputs(jobs)}", err=True)
                sys.exit(1)
    except LabUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


if __name__ == "__main__":
    main()
