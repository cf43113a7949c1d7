"""The ``lab`` fixture: 3 simulated hosts on 1 Gbit/s, 0.2 ms links (netlab's ``gige``).

Module-scoped: brought up once per test module (``up`` takes ~0.2 s) and always torn down,
killing whatever still runs in it. Every test skips cleanly when netlab is absent or
``netlab check`` fails (not root, no network namespaces, no iptables, ...).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.netlab._lab")     # its helpers assert for the tests

from tests.netlab._lab import HOSTS, gige_lab_or_skip  # noqa: E402


@pytest.fixture(scope="module")
def lab():
    yield from gige_lab_or_skip(HOSTS)


@pytest.fixture
def outdir():
    """A fresh directory the workers on every lab host write to (the hosts share files)."""
    path = Path(tempfile.mkdtemp(prefix="rrn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def gige_after(lab):
    """Put every host back on the gige profile, without loss, after the test reshaped them."""
    yield lab
    lab.shape("all", "--profile", "gige", "--loss", "0%")
