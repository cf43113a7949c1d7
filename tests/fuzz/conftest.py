"""Hypothesis budgets for the fuzz tests, chosen by ``RINGRT_FUZZ``.

- ``ci`` (default, ``make test``): 200 examples per test, so that every parser sees at least
  200 inputs; the whole folder stays well under a minute on 2 cores.
- ``long`` (``make fuzz``): ``RINGRT_FUZZ_EXAMPLES`` examples per test (default 20,000), no
  per-test timeout; the inputs tried per parser are written to ``RINGRT_FUZZ_COUNTS``.

No example database is kept (nothing written into the work tree); a failure prints the
``@reproduce_failure`` blob to replay it.
"""

from __future__ import annotations

import json
import os
import time

from hypothesis import HealthCheck, settings

from tests.fuzz._tried import TRIED

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=200, **_COMMON)
LONG_EXAMPLES = int(os.environ.get("RINGRT_FUZZ_EXAMPLES", "20000"))
settings.register_profile("long", max_examples=LONG_EXAMPLES, **_COMMON)
PROFILE = os.environ.get("RINGRT_FUZZ", "ci")
settings.load_profile(PROFILE)
_STARTED = time.monotonic()


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("RINGRT_FUZZ_COUNTS")
    if not path or not TRIED:
        return
    record = {"profile": PROFILE, "max_examples_per_test": settings().max_examples,
              "seconds": round(time.monotonic() - _STARTED, 1), "exit_status": int(exitstatus),
              "inputs_tried": dict(sorted(TRIED.items()))}
    with open(path, "w") as out:
        json.dump(record, out, indent=1)
        out.write("\n")
