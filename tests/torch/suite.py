"""PyTorch's own distributed test suite on a backend, as torch's CI runs it (``make
test-torch-suite``).

torch's CI runs ``TestDistBackendWithSpawn`` (``torch.testing._internal.distributed.
distributed_test``) with the environment ``BACKEND``, ``WORLD_SIZE`` and ``TEMP_DIR``. Its
tests find a third-party backend through ``DistTestCases.backend_feature``: this module adds
"ringrt" to the "plugin", "subgroup" and "ddp" sets *before* the suite is imported (its skip
decorators read them at import), registers the backend, and runs every test, recording each
one's outcome as JSON::

    BACKEND=ringrt WORLD_SIZE=2 TEMP_DIR=$(mktemp -d) \\
        python -m tests.torch.suite --out ringrt-2.json [-k PATTERN]
    python -m tests.torch.suite --compare gloo-2.json ringrt-2.json

``RINGRT_SUITE_START=fork`` starts the ranks by fork instead (torch's former
``TestDistBackendWithFork``; no zmq context or thread of ringrt exists before the fork): a
test then costs about a second, not the 10-20 s of importing the suite in every spawned rank
on a loaded 2-core machine. ``--compare`` prints passed / skipped / failed for each file
and fails when a test that passed on the first backend did not pass on the second. Spawned
ranks import this module again (multiprocessing's spawn), so they register the backend the
same way.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import unittest

BACKEND = os.environ.get("BACKEND", "")

if BACKEND:                                  # the suite reads these at import
    os.environ.setdefault("RINGRT_TOKEN", secrets.token_hex(16))   # spawned ranks inherit it
    from torch.testing._internal.common_distributed import DistTestCases

    for _feature in ("plugin", "subgroup", "ddp"):
        DistTestCases.backend_feature[_feature].add("ringrt")

    import torch  # noqa: E402
    import ringrt.torch  # noqa: F401,E402 - registers the backend
    from torch.testing._internal.distributed.distributed_test import (  # noqa: E402
        DistributedTest,
        TestDistBackend,
    )

    class TestDistBackendWithSpawn(TestDistBackend, DistributedTest._DistTestBase):
        """torch's test/distributed/test_distributed_spawn.py, for any backend."""

        def setUp(self):
            super().setUp()
            if os.environ.get("RINGRT_SUITE_START") == "fork":
                self._start_processes(torch.multiprocessing.get_context("fork").Process)
            else:
                self._spawn_processes()


class _Recording(unittest.TextTestResult):
    """A unittest result that also keeps each test's outcome by name."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}

    def _note(self, test, outcome: str) -> None:
        self.outcomes[test.id().rsplit(".", 1)[-1]] = outcome

    def addSuccess(self, test):
        super().addSuccess(test)
        self._note(test, "passed")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._note(test, "skipped")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._note(test, "failed")

    def addError(self, test, err):
        super().addError(test, err)
        self._note(test, "failed")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._note(test, "passed")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._note(test, "failed")


def counts(outcomes: dict[str, str]) -> dict[str, int]:
    """How many tests passed, were skipped and failed."""
    return {kind: sum(1 for o in outcomes.values() if o == kind)
            for kind in ("passed", "skipped", "failed")}


def run(out: str, pattern: str | None) -> int:
    """Run the suite on $BACKEND at $WORLD_SIZE; write ``{"outcomes", "counts", ...}``."""
    loader = unittest.TestLoader()
    if pattern:
        loader.testNamePatterns = [f"*{pattern}*"]
    tests = loader.loadTestsFromTestCase(TestDistBackendWithSpawn)
    started = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2, resultclass=_Recording).run(tests)
    record = {"backend": BACKEND, "world_size": int(os.environ["WORLD_SIZE"]),
              "seconds": round(time.monotonic() - started, 1),
              "counts": counts(result.outcomes), "outcomes": result.outcomes}
    with open(out, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    print(f"{BACKEND} at world {record['world_size']}: {record['counts']}")
    return 0


def compare(reference_path: str, candidate_path: str) -> int:
    """Exit 1 when a test that passed in ``reference_path`` did not pass in the other."""
    with open(reference_path) as f:
        reference = json.load(f)
    with open(candidate_path) as f:
        candidate = json.load(f)
    for record in (reference, candidate):
        print(f"{record['backend']:>7} world {record['world_size']}: {record['counts']} "
              f"({record['seconds']} s)")
    lost = sorted(name for name, outcome in reference["outcomes"].items()
                  if outcome == "passed" and candidate["outcomes"].get(name) != "passed")
    by_outcome: dict[str, list[str]] = {}
    for name in lost:
        by_outcome.setdefault(candidate["outcomes"].get(name, "missing"), []).append(name)
    for outcome, names in sorted(by_outcome.items()):
        print(f"passed on {reference['backend']}, {outcome} on {candidate['backend']} "
              f"({len(names)}): {' '.join(names)}")
    failed = by_outcome.get("failed", []) + by_outcome.get("missing", [])
    if failed:
        print(f"FAIL: {len(failed)} test(s) pass on {reference['backend']} but fail on "
              f"{candidate['backend']}")
        return 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="where to write the outcomes (JSON)")
    parser.add_argument("-k", dest="pattern", help="run only tests whose name contains this")
    parser.add_argument("--compare", nargs=2, metavar=("REFERENCE", "CANDIDATE"))
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if not BACKEND or "WORLD_SIZE" not in os.environ or "TEMP_DIR" not in os.environ:
        parser.error("set BACKEND, WORLD_SIZE and TEMP_DIR as torch's CI does")
    return run(args.out or f"{BACKEND}-{os.environ['WORLD_SIZE']}.json", args.pattern)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
