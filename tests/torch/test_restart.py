"""ringrun --max-restarts with torch over "ringrt": the group restarts at a fresh rendezvous
(env:// through ringrt's store, keys per attempt) and finishes."""

from __future__ import annotations

import pytest

from tests.launcher._ringrun import run


@pytest.mark.timeout(120)
def test_a_failed_attempt_restarts_and_the_next_one_finishes():
    result = run("-n", "2", "--max-restarts", "1", "tests/torch/scripts/restart_job.py",
                 timeout=100)
    assert result.returncode == 0, result
    for rank in (0, 1):
        assert f"attempt 1 rank {rank} sums 3 2" in result.stdout, result
    assert "attempt 0 rank" not in result.stdout            # nobody finished the first attempt
    assert "restart" in (result.stdout + result.stderr).lower()
