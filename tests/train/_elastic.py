"""Reading what ``examples/train.py --elastic --sample-log DIR`` left: per-generation step
records, the schedule of world sizes, the exactly-once check, and a replay of the schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "train.py"


def steps_by_generation(logdir: Path) -> dict[int, list[dict]]:
    """generation -> every step record of its ranks (each with its "rank")."""
    found = defaultdict(list)
    for path in Path(logdir).glob("gen*-rank*.jsonl"):
        gen_part, rank_part = path.stem.split("-")
        gen, rank = int(gen_part[3:]), int(rank_part[4:])
        text = path.read_text()
        complete = text[:text.rfind("\n") + 1]       # a line being written is not read yet
        for line in complete.splitlines():
            if line.strip():
                found[gen].append(dict(json.loads(line), rank=rank))
    return dict(found)


def schedule_of(steps: dict[int, list[dict]]) -> list[tuple[int, int, int]]:
    """[(generation, world size, step it resumed from)] in generation order."""
    return [(gen, len({r["rank"] for r in records}), min(r["step"] for r in records) - 1)
            for gen, records in sorted(steps.items())]


def check_each_sample_once(steps, schedule, epochs: int, samples: int) -> None:
    """Each epoch's indices, over the steps that count, are range(samples) exactly once.
    A generation's steps after the checkpoint the next one resumed from were redone: skipped."""
    counted = defaultdict(list)
    for index, (gen, _, start) in enumerate(schedule):
        end = schedule[index + 1][2] if index + 1 < len(schedule) else float("inf")
        for record in steps[gen]:
            if start < record["step"] <= end:
                counted[record["epoch"]].extend(record["indices"])
    assert sorted(counted) == list(range(epochs)), sorted(counted)
    for epoch, indices in counted.items():
        assert Counter(indices) == Counter(range(samples)), f"epoch {epoch}"


def replay(schedule, train_args: list[str], workdir: Path, env: dict) -> Path:
    """The same schedule of world sizes on this machine: one plain ringrun per segment, each
    resuming from the previous one's checkpoint. Returns the final parameters (.npz)."""
    ckpt, final = Path(workdir) / "replay-ckpt", Path(workdir) / "replay.npz"
    for index, (_, world, start) in enumerate(schedule):
        stop = schedule[index + 1][2] if index + 1 < len(schedule) else 0
        args = [*train_args, "--ckpt-dir", str(ckpt), "--stop-at-step", str(stop),
                "--save-params", str(final), *(["--resume"] if start else [])]
        proc = subprocess.run([sys.executable, "-m", "ringrt_launcher", "-n", str(world),
                               str(TRAIN), *args], cwd=REPO, env=dict(os.environ, **env),
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return final
