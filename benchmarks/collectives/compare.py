"""Run the collective benchmark against gloo and Open MPI at several world sizes, with MPI over
shared memory (its default) and over TCP (``--mca btl tcp,self``), and merge the runs into
one JSON, one table and one plot. ``make bench`` runs this.

::

    python -m benchmarks.collectives.compare  # worlds 2,4; all ops; x4 size steps
    python -m benchmarks.collectives.compare --worlds 4 --op all_reduce -f 2
    python -m benchmarks.collectives.compare --targets  # the all_reduce targets, MPI over TCP

Each run is one ``mpirun`` in which ringrt, gloo and MPI take turns size by size, so every
ratio compares measurements taken within seconds of each other (ringrt and gloo are measured
again in each run; the merged table shows the median of their runs, and each ratio pairs
MPI with the ringrt of its own run). Without mpirun or mpi4py the runs fall back to
``ringrun`` (ringrt and gloo) and say so.

mpirun gets ``--bind-to none`` so its ranks are scheduled as ringrun's are (Open MPI would pin
each rank of a 2-rank job to one core, with ringrt's and gloo's helper threads on it), and
``--oversubscribe`` for world 4 on 2 cores. ringrt rendezvouses through MPI (see
``_backends``): no port to agree on; the token is fresh per invocation.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

import click

from benchmarks.common import _machine, _noise, _table

PLOT_TITLE = ("collectives on 2 cores: ringrt vs torch gloo vs Open MPI (shm, tcp); "
              "median over runs")
TRANSPORTS = {"shm": [], "tcp": ["--mca", "btl", "tcp,self"]}


def mpi_available() -> str | None:
    """Why MPI cannot be compared here, or None if it can."""
    if shutil.which("mpirun") is None:
        return "mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
    try:
        import mpi4py  # noqa: F401  (the package only: MPI_Init happens at mpi4py.MPI)
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[compare]')"
    return None


def mpirun_command(world: int, transport: str, module_args: list[str]) -> list[str]:
    root = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return ["mpirun", *root, "--oversubscribe", "--bind-to", "none", "-n", str(world),
            *TRANSPORTS[transport], "-x", "RINGRT_TOKEN", "-x", "OMP_NUM_THREADS",
            "-x", "PYTHONUNBUFFERED", sys.executable, "-m", *module_args]


def ringrun_command(world: int, module_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "ringrt_launcher", "-n", str(world), "-m", *module_args]


def plan_runs(worlds: list[int], transports: list[str], mpi_missing: str | None):
    """(label, command-maker) per run: mpirun per transport, or one ringrun per world.
    A command-maker takes the benchmark module's argv (module name first)."""
    runs = []
    for world in worlds:
        if mpi_missing:
            runs.append((f"ringrun-w{world}", lambda args, w=world: ringrun_command(w, args)))
        else:
            runs += [(f"mpirun-{t}-w{world}",
                      lambda args, w=world, t=t: mpirun_command(w, t, args)) for t in transports]
    return runs


def run_all(runs, module_args: list[str], tmp: str, timeout: float) -> tuple[list, list]:
    """Run each planned run with ``--json`` into ``tmp``; (JSON paths written, failures)."""
    env = dict(os.environ, RINGRT_TOKEN=secrets.token_hex(16), PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MASTER_PORT", None)              # ringrt rendezvouses through MPI instead
    paths, failed = [], []
    for label, command in runs:
        path = os.path.join(tmp, f"{label}.json")
        args = [*module_args, "--json", path]
        if module_args[0] == "benchmarks.collectives.sweep":
            args += ["--run-label", label]
        argv = command(args)
        click.echo(f"\n# === {label}: {' '.join(argv)}", err=True)
        try:
            code = subprocess.run(argv, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        if os.path.exists(path):
            paths.append(path)
        if code != 0:
            failed.append(f"{label} (exit {code})")
    return paths, failed


def merge(paths: list[str]) -> dict:
    """One document from several runs' JSON: every run's meta, every record, op-major."""
    runs, records = [], []
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        runs += doc["runs"]
        records += doc["results"]
    order = {op: i for i, op in enumerate(_table.OPS)}
    records.sort(key=lambda r: (order[r["op"]], r["world"], r["bytes"]))
    return {"benchmark": "collectives", "runs": runs, "results": records}


@click.command()
@click.option("--worlds", default="2,4", show_default=True)
@click.option("--transports", default="shm,tcp", show_default=True,
              help="MPI transports: shm (Open MPI's default) and/or tcp (--mca btl tcp,self).")
@click.option("--op", "op_name", default="all", show_default=True)
@click.option("--min-bytes", "-b", default="4", show_default=True)
@click.option("--max-bytes", "-e", default="64M", show_default=True)
@click.option("--step-factor", "-f", default=4, show_default=True)
@click.option("--budget", default=0.2, show_default=True,
              help="Seconds of timed iterations per point and system.")
@click.option("--out", "out_path", default="benchmarks/results/collectives.json",
              show_default=True, type=click.Path(dir_okay=False))
@click.option("--plot", "plot_path", default="benchmarks/results/collectives.png",
              show_default=True, help="'' for no plot.")
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds per run.")
@click.option("--targets", "targets_path", default=None, type=click.Path(dir_okay=False),
              help="Instead: run benchmarks.collectives.targets per world (MPI over TCP) and "
                   "write the records here.")
@click.option("--torch-ringrt", is_flag=True,
              help="Also time torch.distributed over the ringrt backend in each run.")
def main(worlds, transports, op_name, min_bytes, max_bytes, step_factor, budget, out_path,
         plot_path, timeout, targets_path, torch_ringrt):
    """Run every (world, MPI transport), merge, print the comparison, plot it."""
    mpi_missing = mpi_available()
    if mpi_missing:
        click.echo(f"# MPI skipped: {mpi_missing}; running ringrt and gloo under ringrun")
    world_list = [int(w) for w in worlds.split(",")]
    if targets_path:
        module_args = ["benchmarks.collectives.targets"]
        runs = plan_runs(world_list, ["tcp"], mpi_missing)
    else:
        systems = "gloo" if mpi_missing else "gloo,mpi"
        module_args = ["benchmarks.collectives.sweep", "--compare",
                       systems + (",torch-ringrt" if torch_ringrt else ""), "--op", op_name,
                       "-b", min_bytes, "-e", max_bytes, "-f", str(step_factor),
                       "--budget", str(budget)]
        runs = plan_runs(world_list, [t for t in transports.split(",") if t], mpi_missing)
    with tempfile.TemporaryDirectory(prefix="ringrt-bench-") as tmp:
        paths, failed = run_all(runs, module_args, tmp, timeout)
        if not paths:
            raise click.ClickException("no run produced results: " + ", ".join(failed))
        if targets_path:
            write_targets(paths, targets_path)
        else:
            write(merge(paths), out_path, plot_path)
    if failed:
        raise click.ClickException("runs that failed: " + ", ".join(failed))


def write_targets(paths: list[str], out_path: str) -> None:
    """One document from the per-world targets runs."""
    doc = {"benchmark": "targets", "passed": {}, "runs": [], "results": []}
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        doc["passed"][str(part["world"])] = part["passed"]
        doc["runs"] += part["runs"]
        doc["results"] += part["results"]
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        f.write(_table.json_text(doc))
    click.echo(f"# wrote {out_path}")


def write(merged: dict, out_path: str, plot_path: str) -> None:
    records = merged["results"]
    click.echo("")
    for run in merged["runs"]:
        start = run.get("loadavg_start", ["?"])[0]
        machine = _machine.summary(run["machine"]) if "machine" in run else "machine unknown"
        click.echo(f"# run {run['run']}: {run['date']}, {machine}, load average {start:.3} at "
                   f"start, {run['loadavg'][0]:.3} at end")
        for when, ranks in run.get("noise", {}).items():
            click.echo(f"#   noise at {when}: {_noise.summary(ranks)}")
    click.echo("\n" + _table.compare_table(records))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        f.write(_table.json_text(merged))
    click.echo(f"# wrote {out_path}")
    if plot_path:
        from benchmarks.collectives import plot

        try:
            plot.plot(records, plot_path, title=PLOT_TITLE)
            click.echo(f"# wrote {plot_path}")
        except ImportError:
            click.echo("# no plot: matplotlib is not installed")


if __name__ == "__main__":
    main()
