"""Reading what ``examples/train.py --elastic --sample-log DIR`` left: per-generation step
records, the schedule of world sizes, the exactly-once check, and a replay of the schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from benchmarks.robustness._chaos_round import (  # noqa: F401 (re-exported)
    sample_problems,
    schedule_of,
)

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


def check_each_sample_once(steps, schedule, epochs: int, samples: int) -> None:
    """Each epoch's indices, over the steps that count, are range(samples) exactly once
    (the chaos soak's check: benchmarks/robustness/_chaos_round.py)."""
    problems = sample_problems(steps, schedule, epochs, samples)
    assert not problems, problems


def replay(schedule, train_args: list[str], workdir: Path, env: dict, script: Path = TRAIN
           ) -> Path:
    """The same schedule of world sizes on this machine: one plain ringrun per segment of
    ``script`` (default examples/train.py), each resuming from the previous one's checkpoint.
    Returns the final parameters (.npz)."""
    ckpt, final = Path(workdir) / "replay-ckpt", Path(workdir) / "replay.npz"
    for index, (_, world, start) in enumerate(schedule):
        stop = schedule[index + 1][2] if index + 1 < len(schedule) else 0
        args = [*train_args, "--ckpt-dir", str(ckpt), "--stop-at-step", str(stop),
                "--save-params", str(final), *(["--resume"] if start else [])]
        proc = subprocess.run([sys.executable, "-m", "ringrt_launcher", "-n", str(world),
                               str(script), *args], cwd=REPO, env=dict(os.environ, **env),
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return final
