"""benchmarks/robustness/flake_hunt.py: a run's JUnit report read right, runs summed right,
and the shuffled order (tests/conftest.py) a permutation fixed by its seed."""

import os
import subprocess
import sys

from benchmarks.robustness.flake_hunt import REPO, failing_tests, summary

REPORT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.a" name="test_ok" time="0.1"/>
<testcase classname="tests.a" name="test_bad" time="0.1"><failure message="x">x</failure></testcase>
<testcase classname="tests.b" name="test_broken" time="0.1"><error message="y">y</error></testcase>
<testcase classname="tests.b" name="test_skip" time="0.0"><skipped message="z"/></testcase>
</testsuite></testsuites>"""


def test_a_junit_report_gives_counts_and_the_failing_tests(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text(REPORT)
    counts, failed = failing_tests(report)
    assert counts == {"passed": 1, "failed": 1, "errors": 1, "skipped": 1}
    assert failed == ["tests.a::test_bad", "tests.b::test_broken"]


def test_the_summary_counts_red_runs_and_each_test():
    runs = [{"mode": "plain", "failing": [], "passed": 3},
            {"mode": "shuffled", "failing": ["t::x"], "passed": 2, "failed": 1},
            {"mode": "loaded", "failing": ["t::x", "t::y"], "passed": 1, "failed": 2}]
    got = summary(runs)
    assert (got["runs"], got["red_runs"], got["flake_rate"]) == (3, 2, 0.667)
    assert got["failed_tests"] == {"t::x": 2, "t::y": 1}
    assert got["by_mode"]["loaded"] == {"runs": 1, "red": 1}
    assert got["tests_run_per_run"] == 3


def _order(seed: str | None) -> list[str]:
    env = {"RINGRT_TEST_SHUFFLE": seed} if seed else {}
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "tests/unit/test_settings.py",
                          "tests/unit/test_comments.py"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={**os.environ, **env})
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_the_shuffled_order_is_a_permutation_fixed_by_the_seed():
    plain, first, again = _order(None), _order("7"), _order("7")
    assert sorted(first) == sorted(plain) and len(plain) > 20
    assert first == again and first != plain
