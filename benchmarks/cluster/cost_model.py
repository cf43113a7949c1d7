"""Fit ringrt's α-β-γ cost model (``ringrt.tuning.cost_model``) to measurements, then
extrapolate.

Inputs are the sweeps of benchmarks/cluster/_sweep.py: the lab runs that
benchmarks/cluster/collectives.py wrote (``--lab``, default benchmarks/results/cluster.json; run
it with ``--algorithms``) and
loopback runs on this machine (``--loopback`` JSON, or measured now with
``--measure-loopback``: ``ringrun -n N`` for N = 2, 3 over ipc with shared memory off).
For every environment it prints the fitted α, β, γ, o, then predicted vs measured times,
then predictions at 8 ... 1024 ranks on 1, 10 and 100 Gbit/s links::

    .venv/bin/python -m benchmarks.cluster.cost_model                        # read both JSON files
    .venv/bin/python -m benchmarks.cluster.cost_model --measure-loopback  # measure loopback first

Extrapolation: α = ringrt's software time per step (the loopback fit at 2 ranks, which
do not share a core) + the link's one-way latency (LATENCY below); β = the slower of the
link (goodput = 95.6 % of line rate, as measured in the lab) and ringrt's own per-byte
software cost on one core (from the unshaped lab run: CPU seconds per byte moved);
γ = NumPy's float32 add on this machine, measured here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from benchmarks.common import _machine, _paths
from benchmarks.common._table import human
from ringrt.tuning import cost_model as cm

REPO, RESULTS = _paths.REPO, _paths.RESULTS
LINKS = {"1 Gbit/s": 1e9, "10 Gbit/s": 10e9, "100 Gbit/s": 100e9}
# One-way latency of a switched LAN hop through the kernel's TCP stack (assumed, typical).
LATENCY = {"1 Gbit/s": 50e-6, "10 Gbit/s": 25e-6, "100 Gbit/s": 10e-6}
WORLDS = (8, 16, 32, 64, 128, 256, 512, 1024)
PREDICT_SIZES = (8, 1 << 20, 64 << 20, 1 << 30)
SHOW_SIZES = (4, 1 << 16, 1 << 20, 1 << 26)
FIT_OPS = ("all_reduce", "all_gather", "reduce_scatter", "barrier")
LOOPBACK_OPS = ("all_reduce:ring,all_reduce:recursive_doubling,broadcast:binomial,"
                "broadcast:chain,all_gather:ring,all_gather:direct,reduce_scatter:ring,"
                "reduce_scatter:direct,barrier:recursive_doubling")


# -- measurements -> model points --------------------------------------------------------


def points_of(record: dict) -> list[cm.Measurement]:
    """Model points from one sweep record: forced algorithms, and ringrt's own choice where
    no forced run of the same algorithm and size exists."""
    segment = int(record.get("env", {}).get("RINGRT_SEGMENT_BYTES", cm.DEFAULT_SEGMENT))
    points = {}
    for r in sorted(record["results"], key=lambda r: r["algorithm"] != "default"):
        algorithm = r["algorithm"] if r["algorithm"] != "default" else r.get("chosen", "?")
        if r["op"] == "barrier":
            algorithm = "recursive_doubling"
        if algorithm not in cm.ALGORITHMS.get(r["op"], ()) or r["wrong"]:
            continue
        points[r["op"], algorithm, r["nbytes"]] = cm.Measurement(
            r["op"], algorithm, r["nbytes"], record["world"], r["median_s"], segment)
    return list(points.values())


def fitted(points: list[cm.Measurement]) -> list[cm.Measurement]:
    """The points the fit uses: ops in which every rank waits for every other. A broadcast
    or reduce root only sends, so back-to-back ones overlap and their timed latency is too
    short; they are predicted from the fit instead (an out-of-sample check)."""
    return [p for p in points if p.op in FIT_OPS]


def run_loopback(worlds: tuple[int, ...], max_bytes: str) -> list[dict]:
    """Run the sweep with ``ringrun -n N`` on this machine (ipc, shared memory off)."""
    records = []
    for world in worlds:
        with tempfile.TemporaryDirectory(prefix="rrm-") as tmp:
            out = Path(tmp) / "sweep.json"
            env = dict(os.environ, RINGRT_NO_SHM="1", PYTHONPATH=str(REPO))
            command = [sys.executable, "-m", "ringrt_launcher", "-n", str(world), "--quiet-ranks",
                       "--timeout", "120", "-m", "benchmarks.cluster._sweep", "--ops",
                       LOOPBACK_OPS, "--max-bytes", max_bytes, "--factor", "4", "--budget",
                       "0.5", "--out", str(out)]
            subprocess.run(command, cwd=REPO, env=env, check=True, timeout=1800)
            records.append(json.loads(out.read_text()))
    return records


def numpy_gamma(nbytes: int = 64 << 20, repeats: int = 5) -> float:
    """Seconds per byte of ``np.add(a, b, out=a)`` on float32 (the ring's reduction)."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.ones_like(a)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.add(a, b, out=a)
        best = min(best, time.perf_counter() - start)
    return best / nbytes


# -- tables -----------------------------------------------------------------------------


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fit_line(name: str, fit: cm.Fit) -> str:
    return (f"| {name} | {fit.alpha * 1e6:.0f} µs | {fit.bandwidth / 1e6:.1f} MB/s "
            f"({fit.beta * 1e9:.2f} ns/B) | {fit.gamma * 1e9:.3f} ns/B | "
            f"{fit.overhead * 1e6:.0f} µs | {fit.points} | {fit.rms_relative_error:.0%} | "
            f"{fit.max_relative_error:.0%} |")


FIT_HEADER = [("| measurements | α (per step) | 1/β (per-rank link) | γ (reduction) | "
               "o (extra message) | points | rms error | max error |"),
              "|---|---:|---:|---:|---:|---:|---:|---:|"]


def comparison_table(points: list[cm.Measurement], fit: cm.Fit, sizes=SHOW_SIZES) -> list[str]:
    """Predicted vs measured for the sizes closest to ``sizes``, per op/algorithm/world."""
    lines = ["| op | algorithm | ranks | size | measured | predicted | error |",
             "|---|---|---:|---:|---:|---:|---:|"]
    marks = {op: "" if op in FIT_OPS else " *" for op in cm.ALGORITHMS}
    by_case: dict[tuple, list[cm.Measurement]] = {}
    for p in points:
        by_case.setdefault((p.op, p.algorithm, p.world), []).append(p)
    for (op, algorithm, world), group in sorted(by_case.items()):
        shown = {min(group, key=lambda p, s=s: abs(np.log2(max(p.nbytes, 1) / s))).nbytes
                 for s in sizes}
        for p in sorted((p for p in group if p.nbytes in shown), key=lambda p: p.nbytes):
            predicted = cm.predict(op, algorithm, p.nbytes, world, fit.alpha, fit.beta,
                                   fit.gamma, fit.overhead, p.segment)
            lines.append(f"| {op}{marks[op]} | {algorithm} | {world} | {human(p.nbytes)} | "
                         f"{fmt_time(p.seconds)} | {fmt_time(predicted)} | "
                         f"{predicted / p.seconds - 1:+.0%} |")
    return lines


def scale_table(link: str, alpha: float, beta: float, gamma: float, overhead: float,
                op: str = "all_reduce") -> list[str]:
    """Best algorithm's predicted time for ``op`` at every world size and a few sizes."""
    head = " | ".join(human(s) for s in PREDICT_SIZES)
    lines = [(f"**{op} on {link}** (α = {alpha * 1e6:.0f} µs, 1/β = {1 / beta / 1e6:.0f} "
              f"MB/s, γ = {gamma * 1e9:.2f} ns/B, o = {overhead * 1e6:.0f} µs)"), "",
             f"| ranks | {head} | busbw at {human(PREDICT_SIZES[-1])} |",
             "|---:|" + "---:|" * (len(PREDICT_SIZES) + 1)]
    for world in WORLDS:
        cells = []
        for size in PREDICT_SIZES:
            algorithm = cm.best_algorithm(op, size, world, alpha, beta, gamma, overhead)
            seconds = cm.predict(op, algorithm, size, world, alpha, beta, gamma, overhead)
            cells.append(f"{fmt_time(seconds)} ({_short(algorithm)})")
        busbw = PREDICT_SIZES[-1] / seconds * cm.bus_factor(op, world)
        lines.append(f"| {world} | {' | '.join(cells)} | {busbw / 1e6:.0f} MB/s |")
    return lines


def crossover_table(links: dict[str, tuple[float, float, float]]) -> list[str]:
    """all_reduce: smallest size at which the ring beats recursive doubling, per world and
    link (ringrt uses one fixed threshold, ALL_REDUCE_SMALL = 64 KiB, at every world size)."""
    lines = [f"| ranks | {' | '.join(links)} |", "|---:|" + "---:|" * len(links)]
    for world in (3, *WORLDS):
        cells = [cm.crossover("all_reduce", "recursive_doubling", "ring", world, alpha, beta,
                              gamma) for alpha, beta, gamma in links.values()]
        lines.append(f"| {world} | " + " | ".join("never" if c is None else human(c)
                                                  for c in cells) + " |")
    return lines


def _short(algorithm: str) -> str:
    return {"recursive_doubling": "rd", "binomial": "tree"}.get(algorithm, algorithm)


def software_beta(record: dict, gamma: float) -> float | None:
    """ringrt's per-byte CPU cost per rank, excluding the reduction: from the largest ring
    all_reduce of an unshaped run, CPU seconds (all threads) per byte each rank sends."""
    rows = [r for r in record["results"] if r["op"] == "all_reduce"
            and (r["algorithm"] == "ring" or r.get("chosen") == "ring")]
    if not rows:
        return None
    big = max(rows, key=lambda r: r["nbytes"])
    n, size = record["world"], big["nbytes"]
    moved = 2 * (n - 1) / n * size
    cpu_seconds = big["cpu"] * big["median_s"] - gamma * (n - 1) / n * size
    return max(cpu_seconds, 0.0) / moved


# -- main -------------------------------------------------------------------------------


@click.command()
@click.option("--lab", "lab_path", default=str(RESULTS / "cluster.json"), show_default=True,
              type=click.Path(dir_okay=False), help="benchmarks/cluster/collectives.py's JSON.")
@click.option("--loopback", "loopback_path", default=str(RESULTS / "loopback.json"),
              show_default=True, type=click.Path(dir_okay=False))
@click.option("--measure-loopback", is_flag=True, help="Measure loopback now (and save it).")
@click.option("--loopback-max-bytes", default="16MiB", show_default=True)
@click.option("--json", "json_path", default=str(RESULTS / "cost_model.json"), show_default=True,
              type=click.Path(dir_okay=False))
def main(lab_path, loopback_path, measure_loopback, loopback_max_bytes, json_path):
    """Fit the cost model to lab and loopback measurements; print tables (see above)."""
    if measure_loopback:
        records = run_loopback((2, 3), loopback_max_bytes)
        Path(loopback_path).write_text(json.dumps({"machine": _machine.describe(),
                                                   "runs": records}, indent=1))
    environments = load(lab_path, loopback_path)
    gamma = numpy_gamma()
    click.echo(f"γ measured (np.add float32, 64 MiB, this machine): {gamma * 1e9:.3f} ns/B "
               f"({1 / gamma / 1e9:.2f} GB/s)\n")
    fits = {name: cm.fit(fitted(points), free=cm.PARAMETERS)
            for name, points in environments.items()}
    click.echo("\n".join(FIT_HEADER + [fit_line(n, f) for n, f in fits.items()]) + "\n")
    for name, points in environments.items():
        click.echo(f"### {name}: predicted vs measured\n")
        click.echo("\n".join(comparison_table(points, fits[name])) + "\n\n(* not fitted: "
                   "predicted from the fit of the other ops)\n")
    output = {"machine": _machine.describe(), "gamma_numpy": gamma,
              "fits": {n: vars(f) for n, f in fits.items()}}
    output["predictions"] = extrapolate(fits, gamma, lab_path)
    Path(json_path).write_text(json.dumps(output, indent=1))
    click.echo(f"wrote {json_path}", err=True)


def load(lab_path: str, loopback_path: str) -> dict[str, list[cm.Measurement]]:
    """Environment name -> its measured points ("lab gige", "loopback 2 ranks", ...)."""
    environments = {}
    if Path(lab_path).exists():
        for run in json.loads(Path(lab_path).read_text())["runs"]:
            environments[f"lab {run['profile']} ({run['world']} hosts)"] = points_of(run)
    if Path(loopback_path).exists():
        for record in json.loads(Path(loopback_path).read_text())["runs"]:
            environments[f"loopback {record['world']} ranks (ipc)"] = points_of(record)
    if not environments:
        raise click.ClickException("no measurements: run benchmarks/cluster/collectives.py "
                                   f"--algorithms ({lab_path}) or --measure-loopback ({loopback_path})")
    return {name: points for name, points in environments.items() if points}


def extrapolate(fits: dict[str, cm.Fit], gamma: float, lab_path: str) -> dict:
    """Print and return predictions at WORLDS ranks on every link of LINKS."""
    software = next((f for n, f in fits.items() if n.startswith("loopback 2")), None) or \
        next(iter(fits.values()))
    raw = _raw_run(lab_path)
    beta_sw = software_beta(raw, gamma) if raw else None
    click.echo(f"### Predictions: α = {software.alpha * 1e6:.0f} µs (software, loopback) + "
               f"one-way latency; β = max(link, ringrt software "
               f"{'%.2f GB/s' % (1 / beta_sw / 1e9) if beta_sw else 'unknown'}); "
               f"o = {software.overhead * 1e6:.0f} µs\n")
    tables, params = {}, {}
    for link, rate in LINKS.items():
        alpha = software.alpha + LATENCY[link]
        beta = max(cm.link_beta(rate), beta_sw or 0.0)
        lines = scale_table(link, alpha, beta, gamma, software.overhead)
        click.echo("\n".join(lines) + "\n")
        tables[link] = {"alpha": alpha, "beta": beta, "gamma": gamma,
                        "overhead": software.overhead, "table": lines}
        params[link] = (alpha, beta, gamma)
    crossover = crossover_table(params)
    click.echo("**all_reduce: ring beats recursive doubling from this size on** (ringrt: "
               "64 KiB at every world size)\n\n" + "\n".join(crossover) + "\n")
    return {"software_beta": beta_sw, "links": tables, "crossover": crossover}


def _raw_run(lab_path: str) -> dict | None:
    if not Path(lab_path).exists():
        return None
    runs = json.loads(Path(lab_path).read_text())["runs"]
    return next((run for run in runs if run["profile"].startswith("raw")), None)


if __name__ == "__main__":
    main()
