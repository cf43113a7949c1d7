"""Recipes for the launchers people already use, each training the same DDP script over
"gloo" and over "ringrt" and comparing the parameters: torchrun, SLURM's srun (its environment
emulated) and a Kubernetes PyTorchJob (the environment its operator sets, the manifest's own
command). Cheap enough for ``make test``; docs/recipes/ says how to use each."""

from __future__ import annotations

import sys

import pytest

from tests.recipes import _jobs

WORLD = 2
pytestmark = pytest.mark.timeout(240)


def _train_twice(tmp_path, start) -> None:
    """Run ``start(backend, out_path)`` -> commands for gloo and for ringrt; compare."""
    outs = {}
    for backend in ("gloo", "ringrt"):
        outs[backend] = tmp_path / f"{backend}.npz"
        commands = start(backend, str(outs[backend]))
        _jobs.run_all(commands, timeout=150)
        for _, env in commands:
            assert not _jobs.leftover_ipc(env)
    _jobs.assert_same_params(outs["gloo"], outs["ringrt"])


@pytest.fixture
def ipc_dir(workdir):
    return str(workdir)


@pytest.mark.slow                # tests/torch/test_rendezvous.py runs torchrun in make test
def test_torchrun(tmp_path, ipc_dir):
    def start(backend, out):
        env = _jobs.base_env("torchrun", ipc_dir)
        return [([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  f"--nproc-per-node={WORLD}", _jobs.script("ddp_train.py"),
                  "--backend", backend, "--out", out], env)]
    _train_twice(tmp_path, start)


def srun_env(procid: int, ntasks: int, job_id: int) -> dict:
    """What ``srun -N 1 -n NTASKS`` sets in each task's environment (the part scripts read)."""
    return {"SLURM_PROCID": str(procid), "SLURM_NTASKS": str(ntasks),
            "SLURM_LOCALID": str(procid), "SLURM_NODEID": "0", "SLURM_NNODES": "1",
            "SLURM_JOB_ID": str(job_id), "SLURM_STEP_ID": "0", "SLURM_JOB_NUM_NODES": "1",
            "SLURM_JOB_NODELIST": "localhost", "SLURM_STEP_NODELIST": "localhost",
            "SLURM_NODELIST": "localhost", "SLURM_TASKS_PER_NODE": str(ntasks),
            "SLURM_NTASKS_PER_NODE": str(ntasks), "SLURMD_NODENAME": "localhost",
            "SLURM_CPUS_PER_TASK": "1", "SLURM_TASK_PID": "0"}


def test_srun_environment(tmp_path, ipc_dir):
    port = _jobs.free_port()

    def start(backend, out):
        commands = []
        for procid in range(WORLD):
            env = _jobs.base_env("srun", ipc_dir)
            # the batch script: MASTER_ADDR=$(scontrol show hostnames ... | head -1), a port,
            # one token for every task; srun then sets the SLURM_* variables of each task
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RINGRT_TOKEN="ab" * 16)
            env.update(srun_env(procid, WORLD, job_id=4242))
            commands.append(([sys.executable, _jobs.script("ddp_train.py"),
                              "--backend", backend, "--out", out], env))
        return commands
    _train_twice(tmp_path, start)


def pytorchjob_commands(manifest: dict) -> list[list[str]]:
    """The container command of the Master replica, then each Worker's."""
    specs = manifest["spec"]["pytorchReplicaSpecs"]
    commands = []
    for role in ("Master", "Worker"):
        container = specs[role]["template"]["spec"]["containers"][0]
        commands += [list(container["command"])] * specs[role]["replicas"]
    return commands


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(option) + 1] = value
    return argv


@pytest.mark.slow
def test_kubernetes_pytorchjob(tmp_path, ipc_dir):
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((_jobs.REPO / "examples/kubernetes/pytorchjob.yaml").read_text())
    commands = pytorchjob_commands(manifest)
    assert len(commands) == WORLD and commands[0][0] == "python"
    port = _jobs.free_port()

    def start(backend, out):
        started = []
        for rank, argv in enumerate(commands):
            env = _jobs.base_env("k8s", ipc_dir)
            # what the training operator sets in pod RANK: the master's service, its port,
            # the world; plus the manifest's own variables (the token from the Secret)
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                       RANK=str(rank), PYTHONUNBUFFERED="1", RINGRT_TOKEN="cd" * 16)
            argv = with_option(with_option(argv, "--backend", backend), "--out", out)
            started.append(([sys.executable, *argv[1:]], env))
        return started
    _train_twice(tmp_path, start)
