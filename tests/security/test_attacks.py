"""A tokenless process attacks a running job on this machine.

Single host, default mode (ipc + shared memory) and over tcp (``RINGRT_TRANSPORT=tcp``, the
path peers on different hosts take): the attacker (``attacker.py``) finds every port the
workers listen on and throws forged, wrong-credential, replayed and garbage traffic at it,
and at the store. Every collective result must stay right, the job must finish, nothing the
attacker sent may reach a mailbox, and the ranks' counters must show each refused connection.
The same attack from a fourth host of a netlab cluster is in ``tests/netlab``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.captures import make_captures
from tests.world import REPO, kill_tree, run_world, short_tmpdir

AS_ROOT = os.geteuid() == 0
STORE_REFUSED_ATTEMPTS = 3         # a plain set, a plain get, a sealed set without a session


def start_attacker(signals: Path, ranks: int, store: str) -> subprocess.Popen:
    """The attacker process: no token in its environment, its own empty home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRT_")}
    env.update(HOME=str(signals / "home"), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "tests.security.attacker", "--signal-dir", str(signals),
           "--ranks", str(ranks), "--store", store, "--captures", str(signals / "captures"),
           "--timeout", "60"] + (["--as-nobody"] if AS_ROOT else [])
    with open(signals / "attacker.log", "w") as log:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def run_attacked_job(world_size: int, env: dict) -> tuple:
    """Run the workers with the attacker alongside; returns (world, report, store stats)."""
    signals = Path(short_tmpdir("rrs-"))
    token = secrets.token_hex(16)
    make_captures(token, signals / "captures")
    started = {}

    def on_started(server, procs):
        started["server"] = server
        started["attacker"] = start_attacker(signals, world_size, f"127.0.0.1:{server.port}")

    try:
        world = run_world("tests.security.workers:under_attack", world_size, timeout=100,
                          args={"signal_dir": str(signals)}, env=env, on_started=on_started,
                          token=token)
        assert started["attacker"].wait(timeout=30) == 0, (signals / "attacker.log").read_text()
        report = json.loads((signals / "report.json").read_text())
        return world, report, started["server"].stats()
    finally:
        if "attacker" in started:
            kill_tree(started["attacker"])
        shutil.rmtree(signals, ignore_errors=True)


def assert_job_unharmed(world, report: dict, store_stats: dict) -> None:
    for result in world.ranks:
        values = result.values
        assert values["attacked"] and values["rounds"] > 10, values
        assert values["wrong"] == 0, f"rank {result.rank}: {values['wrong']} wrong results"
        assert not values["poisoned"], "the attacker wrote into the store"
    replies = report["store"]["replies"]
    assert [status for _, status in replies] == ["refused"] * STORE_REFUSED_ATTEMPTS, replies
    assert store_stats["refused"] >= STORE_REFUSED_ATTEMPTS
    assert store_stats["handshake_failures"] + store_stats["incomplete_connections"] >= 3
    assert store_stats["forged_frames"] == 0           # no session: it had none to forge


@pytest.mark.timeout(150)
def test_single_host_default_mode_exposes_nothing_to_a_tokenless_attacker():
    world, report, store_stats = run_attacked_job(3, {})
    assert report["ports"] == {"0": [], "1": [], "2": []}, "a worker listens on tcp"
    assert_job_unharmed(world, report, store_stats)
    for result in world.ranks:
        transport = result.values["stats"]["transport"]
        assert transport["connections_accepted"] == 0
        assert set(transport["routes"].values()) == {"ipc"}
        assert result.values["stats"]["shm"]["waits"] > 0          # world ops took shm
    if AS_ROOT:     # another user cannot even connect to the ipc sockets
        assert report["ipc"] and set(report["ipc"].values()) == {"permission denied"}, \
            report["ipc"]


@pytest.mark.timeout(150)
def test_single_host_over_tcp_refuses_and_counts_every_attack():
    world, report, store_stats = run_attacked_job(3, {"RINGRT_TRANSPORT": "tcp",
                                                      "RINGRT_NO_SHM": "1"})
    assert all(len(ports) == 2 for ports in report["ports"].values()), report["ports"]
    assert_job_unharmed(world, report, store_stats)
    attempts = sum(len(made) for made in report["attempts"].values())
    refused = sum(r.values["stats"]["transport"]["connections_refused"] for r in world.ranks)
    denied = sum(r.values["stats"]["transport"]["zap_denied"] for r in world.ranks)
    dropped = sum(r.values["stats"]["transport"]["dropped_frames"] for r in world.ranks)
    assert refused == attempts, (refused, attempts)
    # PLAIN guesses and replayed PLAIN handshakes reach our ZAP handler and are denied there
    plain_tries = sum(sum(1 for a in made if "plain" in a) for made in report["attempts"].values())
    assert denied >= plain_tries
    assert dropped == 0                               # nothing reached a mailbox


@pytest.mark.timeout(60)
def test_ranks_holding_different_tokens_fail_fast_saying_so():
    world = run_world("tests.security.workers:mismatched_link_token", 2, timeout=40,
                      env={"RINGRT_TRANSPORT": "tcp", "RINGRT_NO_SHM": "1"})
    for result in world.ranks:          # each sees the other's card unsigned by its token
        kind, message = result.values["outcome"]
        assert kind == "DistError" and "not signed with this job's token" in message, message
        assert "RINGRT_TOKEN" in message and result.values["took"] < 10
