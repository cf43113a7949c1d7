"""Flaky tests, counted: run the suite many times, in file order, in a shuffled order and under
CPU load, and count which tests failed in which runs.

::

    python -m benchmarks.robustness.flake_hunt --runs 20            # make flake-hunt
    python -m benchmarks.robustness.flake_hunt --runs 3 --paths tests/dist --modes shuffled,loaded

Runs cycle through ``--modes``:

- ``plain``: ``pytest`` as ``make test`` runs it;
- ``shuffled``: test files in a random order and the tests of each file too (seeded per run,
  ``RINGRT_TEST_SHUFFLE``, read by tests/conftest.py), so a test that only passes after
  another one, or only when it runs first, shows up;
- ``loaded``: file order, with ``--load`` busy processes running beside the suite the whole
  time (on a 2-core machine, 2 of them halve every rank's share of the CPU), so a test that
  races its own threads or processes against a fixed sleep shows up.

Each run's JUnit report gives its failing tests; the record (``--out``, default
``benchmarks/results/flake_hunt.json``, rewritten after every run) lists every run
(mode, seed, seconds, passed, failed, failing test ids) and per test how many runs it failed
in. A run's *flake rate* is the share of runs with any failure. The record states the
machine; it reports no timings to compare, so it needs no baseline.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import click

from benchmarks.common import _machine
from benchmarks.common._paths import RESULTS

REPO = Path(__file__).resolve().parents[2]
MODES = ("plain", "shuffled", "loaded")


def failing_tests(junit_xml: Path) -> tuple[dict, list[str]]:
    """(counts by outcome, ids of the tests that failed or errored) from a JUnit report."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failed = []
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcomes = {child.tag for child in case}
        if "failure" in outcomes:
            counts["failed"] += 1
            failed.append(test_id)
        elif "error" in outcomes:
            counts["errors"] += 1
            failed.append(test_id)
        elif "skipped" in outcomes:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts, failed


def _busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(count)]


def run_once(paths: list[str], mode: str, seed: int, load: int, timeout_s: float,
             repo: Path = REPO) -> dict:
    """One run of the suite of the checkout ``repo`` (with its own ``.venv`` if it has one);
    its record."""
    env = dict(os.environ)
    if mode == "shuffled":
        env["RINGRT_TEST_SHUFFLE"] = str(seed)
    with tempfile.TemporaryDirectory(prefix="flake-hunt-") as scratch:
        report = Path(scratch) / "junit.xml"
        venv_python = repo / ".venv" / "bin" / "python"
        python = str(venv_python) if venv_python.exists() else sys.executable
        command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", *paths]
        loops = _busy_loops(load) if mode == "loaded" else []
        started = time.monotonic()
        try:
            proc = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True,
                                  timeout=timeout_s)
            returncode, tail = proc.returncode, proc.stdout[-3000:]
        except subprocess.TimeoutExpired as exc:
            returncode = "timed out"
            tail = (exc.stdout or b"")[-3000:].decode(errors="replace") \
                if isinstance(exc.stdout, bytes) else str(exc.stdout or "")[-3000:]
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()
        seconds = time.monotonic() - started
        counts, failed = failing_tests(report) if report.exists() else ({}, ["(no report)"])
    return {"mode": mode, "seed": seed, "seconds": round(seconds, 1), "exit": returncode,
            **counts, "failing": failed, "output_tail": tail if failed else ""}


def _commit(repo: Path) -> str:
    """The checkout's commit (and "+changes" if its tree differs from it)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--short") else "")


def summary(runs: list[dict]) -> dict:
    by_test: dict[str, int] = {}
    for run in runs:
        for test_id in run["failing"]:
            by_test[test_id] = by_test.get(test_id, 0) + 1
    red = sum(1 for run in runs if run["failing"])
    by_mode = {mode: {"runs": sum(r["mode"] == mode for r in runs),
                      "red": sum(r["mode"] == mode and bool(r["failing"]) for r in runs)}
               for mode in MODES}
    return {"runs": len(runs), "red_runs": red,
            "flake_rate": round(red / len(runs), 3) if runs else None,
            "tests_run_per_run": max((r.get("passed", 0) + r.get("failed", 0) +
                                      r.get("errors", 0) for r in runs), default=0),
            "by_mode": by_mode, "failed_tests": dict(sorted(by_test.items()))}


@click.command()
@click.option("--runs", default=20, show_default=True, help="Runs of the suite.")
@click.option("--modes", default="plain,shuffled,loaded", show_default=True,
              help="Comma-separated modes the runs cycle through.")
@click.option("--paths", default="tests", show_default=True,
              help="Comma-separated test paths (pytest arguments).")
@click.option("--load", default=2, show_default=True,
              help="Busy processes beside a 'loaded' run.")
@click.option("--seed", default=1, show_default=True, help="First shuffle seed.")
@click.option("--run-timeout", default=1800.0, show_default=True,
              help="Seconds one run may take before it counts as failed (timed out).")
@click.option("--repo", type=click.Path(file_okay=False, exists=True), default=str(REPO),
              show_default=True, help="The checkout whose suite runs (e.g. an older commit's "
              "worktree, for a before/after rate; 'shuffled' needs its tests/conftest.py hook).")
@click.option("--out", type=click.Path(dir_okay=False),
              default=str(RESULTS / "flake_hunt.json"), show_default=True)
def main(runs, modes, paths, load, seed, run_timeout, repo, out):
    """Run the suite RUNS times and count the tests that failed."""
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = set(chosen) - set(MODES)
    if unknown or not chosen:
        raise click.BadParameter(f"modes must be among {', '.join(MODES)}; got {modes!r}")
    shuffle_seeds = random.Random(seed)
    records = []
    for index in range(runs):
        mode = chosen[index % len(chosen)]
        run_seed = shuffle_seeds.randrange(1 << 30)
        record = run_once(paths.split(","), mode, run_seed, load, run_timeout, Path(repo))
        records.append(record)
        click.echo(f"run {index + 1}/{runs} {mode:8s} {record['seconds']:7.1f} s  "
                   f"passed {record.get('passed', '?')} failed {len(record['failing'])}"
                   + (f": {', '.join(record['failing'])}" if record["failing"] else ""))
        result = {"machine": _machine.describe(), "repo": _commit(Path(repo)), "paths": paths,
                  "modes": chosen,
                  "load": load, "runs": records, "summary": summary(records)}
        Path(out).write_text(json.dumps(result, indent=1) + "\n")    # after every run
    click.echo(json.dumps(summary(records), indent=1))


if __name__ == "__main__":
    main()
