"""What DiLoCo's one-step delay (and its options, and DDP's compression) cost in accuracy: the
final validation loss of examples/train.py --task chars at equal samples.

    python -m benchmarks.training.diloco_delay [--ranks 4] [--samples 400000] [--seeds 0,1]

Runs ``ringrun -n RANKS examples/train.py --task chars`` once per configuration and seed (one
host, so DiLoCo runs between all ranks: ``--scope ranks``), reads each run's ``--log-json``
records and writes benchmarks/results/diloco-delay.json: per configuration and seed the
validation-loss curve, the final loss, and the final loss relative to synchronous DDP's with
the same seed. Losses, not timings: the machine's load changes how long a run takes, never
what it computes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from benchmarks.common import _machine, _paths

RESULTS = _paths.RESULTS / "diloco-delay.json"
REPO = _paths.REPO
CONFIGS = {
    "sync-ddp": [],
    "h10-nodelay": ["--sync-every", "10", "--sync-delay", "0"],
    "h10-delay1": ["--sync-every", "10", "--sync-delay", "1"],
    "h50-nodelay": ["--sync-every", "50", "--sync-delay", "0"],
    "h50-delay1": ["--sync-every", "50", "--sync-delay", "1"],
    "h50-f5-delay1": ["--sync-every", "50", "--fragments", "5", "--sync-delay", "1"],
    "h50-delay1-int8": ["--sync-every", "50", "--sync-delay", "1", "--outer-compress",
                        "int8", "--no-error-feedback"],
    # error feedback for int8 pseudo-gradients (docs/local-sgd.md): with and without
    "h50-delay1-int8-ef": ["--sync-every", "50", "--sync-delay", "1", "--outer-compress",
                           "int8", "--error-feedback"],
    "h10-delay1-int8": ["--sync-every", "10", "--sync-delay", "1", "--outer-compress", "int8",
                        "--no-error-feedback"],
    "h50-delay1-bf16": ["--sync-every", "50", "--sync-delay", "1", "--outer-compress", "bf16",
                        "--no-error-feedback"],
    "h50-delay1-bf16-ef": ["--sync-every", "50", "--sync-delay", "1", "--outer-compress",
                           "bf16", "--error-feedback"],
    "h10-delay1-int8-ef": ["--sync-every", "10", "--sync-delay", "1", "--outer-compress",
                           "int8", "--error-feedback"],
    # DiLoCo's outer momentum 0.9 was tuned for H = 500 over long runs; these short runs
    # (~2,600 inner steps) did better with 0.5 (see docs/local-sgd.md)
    "h10-m05-nodelay": ["--sync-every", "10", "--sync-delay", "0", "--outer-momentum", "0.5"],
    "h10-m05-delay1": ["--sync-every", "10", "--sync-delay", "1", "--outer-momentum", "0.5"],
    "h50-m05-nodelay": ["--sync-every", "50", "--sync-delay", "0", "--outer-momentum", "0.5"],
    "h50-m05-delay1": ["--sync-every", "50", "--sync-delay", "1", "--outer-momentum", "0.5"],
    "h10-localsgd": ["--sync-every", "10", "--sync-delay", "0", "--outer-lr", "1",
                     "--outer-momentum", "0"],
    # synchronous DDP, compressed (on one host the whole all-reduce is compressed)
    "ddp-bf16": ["--compress", "bf16"],
    "ddp-powersgd-r4": ["--compress", "powersgd", "--powersgd-rank", "4"],
}


def run_one(ranks: int, samples: int, seed: int, extra: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="rrt-dl-") as tmp:
        log = Path(tmp) / "log.jsonl"
        command = [str(Path(sys.executable).parent / "ringrun"), "-n", str(ranks),
                   "examples/train.py", "--task", "chars", "--epochs", "100", "--scope", "ranks",
                   "--batch-size", str(32 * ranks), "--hidden", "256", "--seed", str(seed),
                   "--eval-every", str(max(1, samples // (32 * ranks) // 10)),
                   "--max-samples", str(samples), "--val-samples", "8192",
                   "--log-json", str(log), *extra]
        subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=900)
        return [json.loads(line) for line in log.read_text().splitlines()]


@click.command()
@click.option("--ranks", default=4, show_default=True)
@click.option("--samples", default=400_000, show_default=True)
@click.option("--seeds", default="0,1", show_default=True)
@click.option("--only", default=None, help="Comma-separated configuration names.")
@click.option("--out", type=click.Path(dir_okay=False), default=str(RESULTS),
              show_default=True)
def main(ranks: int, samples: int, seeds: str, only: str | None, out: str) -> None:
    """Run every configuration and seed; print and record the final losses."""
    machine = _machine.describe()
    print(_machine.summary(machine))
    names = only.split(",") if only else list(CONFIGS)
    runs = {}
    for name in names:
        for seed in map(int, seeds.split(",")):
            curve = run_one(ranks, samples, seed, CONFIGS[name])
            runs.setdefault(name, {})[seed] = curve
            print(f"{name:24s} seed {seed}: final val loss {curve[-1]['val_loss']:.4f} after "
                  f"{curve[-1]['samples']:,} samples", flush=True)
    base = runs.get("sync-ddp", {})
    table = {name: {str(seed): {"final_val_loss": curve[-1]["val_loss"],
                                "vs_sync": (curve[-1]["val_loss"] / base[seed][-1]["val_loss"]
                                            if seed in base else None),
                                "curve": curve}
                    for seed, curve in by_seed.items()}
             for name, by_seed in runs.items()}
    Path(out).write_text(json.dumps({"machine": machine, "ranks": ranks, "samples": samples,
                                   "task": "chars, hidden 256, batch 32 per rank, Adam 3e-3",
                                   "configs": {n: CONFIGS[n] for n in names},
                                   "results": table}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
