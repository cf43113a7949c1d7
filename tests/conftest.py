"""Suite-wide guards: no test may leave a rank process running."""

import os
import shutil

import pytest

from tests import world


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    yield
    alive = []
    for pid in list(world._LIVE_PIDS):
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            world._LIVE_PIDS.discard(pid)
    assert not alive, f"test left rank processes running: {alive}"


@pytest.fixture
def workdir():
    """A short, fresh directory under /tmp (ipc paths cap at 107 bytes), removed afterwards."""
    path = world.short_tmpdir("rrt-")
    yield path
    shutil.rmtree(path, ignore_errors=True)

