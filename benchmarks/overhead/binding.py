"""``ringrun --bind``: the same jobs with and without binding, interleaved.

Each round runs (the modes' order rotating from round to round), for every mode, ``ringrun -n N --bind MODE`` of a DDP training step
(benchmarks.training.train_step, ringrt only, world N) and of all_reduce at a few sizes
(benchmarks.collectives.sweep), so load from elsewhere hits the modes alike. Reported: each mode's
median over rounds of the jobs' medians, and its ratio to ``none``::

    python -m benchmarks.overhead.binding --nproc 2 --rounds 3 --json benchmarks/results/binding.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import click

from benchmarks.common import _machine

MODES = ("none", "core", "numa")


def _ringrun(nproc: int, mode: str, module_args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    subprocess.run([sys.executable, "-m", "ringrt_launcher", "-n", str(nproc), "--bind", mode,
                    "--quiet-ranks", "-m", *module_args], env=env, check=True, timeout=600,
                   stdout=subprocess.DEVNULL)


def train_step_ms(nproc: int, mode: str, steps: int) -> dict[str, float]:
    """Median step time (ms) per DDP mode of benchmarks.training.train_step at world ``nproc``."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        _ringrun(nproc, mode, ["benchmarks.training.train_step", "--worlds", str(nproc),
                               "--no-torch", "--steps", str(steps), "--json", out.name])
        results = json.load(open(out.name))["results"]
    return {f"step {r['mode']}": r["median_s"] * 1e3 for r in results if r["world"] == nproc}


def all_reduce_us(nproc: int, mode: str, sizes: str) -> dict[str, float]:
    """Median all_reduce time (us) per size of benchmarks.collectives.sweep."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        _ringrun(nproc, mode, ["benchmarks.collectives.sweep", "--sizes", sizes, "--budget", "0.3",
                               "--no-progress", "--json", out.name])
        results = json.load(open(out.name))["results"]
    return {f"all_reduce {r['bytes']} B": r["median_us"] for r in results}


@click.command()
@click.option("--nproc", default=2, show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--steps", default=30, show_default=True, help="Timed training steps per job.")
@click.option("--sizes", default="4,64K,4M", show_default=True, help="all_reduce sizes.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def main(nproc: int, rounds: int, steps: int, sizes: str, json_path: str | None) -> None:
    info = _machine.describe()
    print(_machine.summary(info))
    samples: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    for round_index in range(rounds):
        for mode in MODES[round_index % 3:] + MODES[:round_index % 3]:   # rotate who goes first
            figures = {**train_step_ms(nproc, mode, steps), **all_reduce_us(nproc, mode, sizes)}
            for name, value in figures.items():
                samples[mode].setdefault(name, []).append(value)
    medians = {mode: {name: statistics.median(v) for name, v in by_name.items()}
               for mode, by_name in samples.items()}
    print(f"world {nproc}, {rounds} interleaved rounds; median (step ms, all_reduce us) and "
          "ratio to --bind none (< 1: faster)")
    print(f"{'figure':<24}" + "".join(f"{mode:>10}" for mode in MODES)
          + "".join(f"{mode + '/none':>11}" for mode in MODES[1:]))
    for name, base in medians["none"].items():
        row = [medians[mode][name] for mode in MODES]
        print(f"{name:<24}" + "".join(f"{v:>10.2f}" for v in row)
              + "".join(f"{v / base:>11.3f}" for v in row[1:]))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"benchmark": "binding", "machine": info, "nproc": nproc,
                       "rounds": rounds, "samples": samples, "medians": medians,
                       "ratio_to_none": {mode: {n: medians[mode][n] / medians["none"][n]
                                                for n in medians["none"]}
                                         for mode in MODES[1:]}}, f, indent=1)


if __name__ == "__main__":
    main()
