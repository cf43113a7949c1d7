"""Suite-wide guards: no test may leave a rank process running. With
``RINGRT_TEST_SHUFFLE=SEED`` (benchmarks/robustness/flake_hunt.py) the test files run in a
random order, and the tests of each file too."""

import os
import random
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



def pytest_collection_modifyitems(session, config, items):
    seed = os.environ.get("RINGRT_TEST_SHUFFLE")
    if not seed:
        return
    shuffler = random.Random(int(seed))
    by_file: dict = {}
    for item in items:
        by_file.setdefault(item.nodeid.split("::")[0], []).append(item)
    files = list(by_file)
    shuffler.shuffle(files)
    items[:] = []
    for name in files:
        tests = by_file[name]
        shuffler.shuffle(tests)
        items.extend(tests)
