"""Recipes for the frameworks that start the processes themselves, and for mpirun: each trains
the same model over "gloo" and over "ringrt" and compares the parameters (bit for bit at world
2). Slow and download-heavy: they run under ``make test-recipes`` only (RINGRT_RECIPES=1), in
.venv-recipes, installing their framework when it is missing, and skip when they cannot."""

from __future__ import annotations

import shutil
import sys
import tempfile

import pytest

from tests.recipes import _jobs

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def _slow():
    _jobs.slow_recipes_enabled()


@pytest.fixture
def ipc_dir(workdir):
    return str(workdir)


def _train_twice(tmp_path, start, timeout=240) -> str:
    """Run ``start(backend, out)`` -> [(argv, env)] for gloo, then ringrt; compare params."""
    outs, logs = {}, []
    for backend in ("gloo", "ringrt"):
        outs[backend] = tmp_path / f"{backend}.npz"
        commands = start(backend, str(outs[backend]))
        logs += _jobs.run_all(commands, timeout=timeout)
        for _, env in commands:
            assert not _jobs.leftover_ipc(env)
    _jobs.assert_same_params(outs["gloo"], outs["ringrt"])
    return "\n".join(logs)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize("launch", ["lightning-spawns", "ringrun"])
def test_lightning(tmp_path, ipc_dir, strategy, launch):
    _jobs.ensure_module("lightning", "lightning")

    def start(backend, out):
        args = [_jobs.script("lightning_train.py"), "--strategy", strategy,
                "--backend", backend, "--out", out]
        env = _jobs.base_env("lightning", ipc_dir)
        if launch == "ringrun":
            return [([sys.executable, "-m", "ringrt_launcher", "-n", "2", *args], env)]
        return [([sys.executable, *args], env)]
    log = _train_twice(tmp_path, start)
    assert log.count("done over ringrt") == 2


def test_ray_train(tmp_path, ipc_dir):
    _jobs.ensure_module("ray.train", "ray[train]")
    ray_dir = tempfile.mkdtemp(prefix="rrray-", dir="/tmp")   # short: Ray's sockets live there

    def start(backend, out):
        env = _jobs.base_env(f"ray-{tmp_path.name}", ipc_dir)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        return [([sys.executable, _jobs.script("ray_train.py"), "--backend", backend,
                  "--out", out, "--temp-dir", ray_dir], env)]
    try:
        log = _train_twice(tmp_path, start, timeout=280)
    finally:
        _jobs.rmtree(ray_dir)
    assert log.count("done over ringrt") >= 2
    # the note for the docs: whether the worker_process_setup_hook was still needed
    print(next(line for line in log.splitlines() if "worker_process_setup_hook" in line))


def test_accelerate_refuses_the_backend_by_name():
    """docs/recipes/accelerate.md says asking Accelerate for "ringrt" is refused: still so?"""
    _jobs.ensure_module("accelerate", "accelerate")
    with pytest.raises(ValueError, match="ringrt is not available"):
        _partial_state_with_backend("ringrt")


def _partial_state_with_backend(backend: str):
    """What ``Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend=...)])`` does for a
    CPU job of 2 processes, without starting one: the backend check comes first."""
    import os

    from accelerate.state import PartialState

    saved = dict(os.environ)
    os.environ.update(LOCAL_RANK="0", RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(_jobs.free_port()))
    try:
        PartialState._reset_state()
        return PartialState(cpu=True, backend=backend)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        PartialState._reset_state()


def test_accelerate(tmp_path, ipc_dir):
    _jobs.ensure_module("accelerate", "accelerate")

    def start(backend, out):
        env = _jobs.base_env("accelerate", ipc_dir)
        return [([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc-per-node=2", _jobs.script("accelerate_train.py"),
                  "--backend", backend, "--out", out], env)]
    log = _train_twice(tmp_path, start)
    assert log.count("done over ringrt") == 2


def test_mpirun(tmp_path, ipc_dir):
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("mpirun not found (make test-recipes installs Open MPI with apt when root)")
    port = _jobs.free_port()

    def start(backend, out):
        env = _jobs.base_env("mpirun", ipc_dir)
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RINGRT_TOKEN="ef" * 16,
                   OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        return [([mpirun, "-n", "2", "--oversubscribe", "-x", "MASTER_ADDR", "-x", "MASTER_PORT",
                  "-x", "RINGRT_TOKEN", sys.executable, _jobs.script("ddp_train.py"),
                  "--backend", backend, "--out", out], env)]
    log = _train_twice(tmp_path, start)
    assert log.count("done over ringrt") == 2


def test_kubeflow_trainjob(tmp_path, ipc_dir):
    """The TrainJob manifest's torchrun command on 2 "nodes", with the PET_* variables."""
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((_jobs.REPO / "examples/kubernetes/trainjob.yaml").read_text())
    trainer = manifest["spec"]["trainer"]
    argv = list(trainer["command"])
    assert argv[0] == "torchrun"
    port = _jobs.free_port()

    def start(backend, out):
        args = list(argv[1:])
        args[args.index("--backend") + 1] = backend
        args[args.index("--out") + 1] = out
        commands = []
        for node in range(trainer["numNodes"]):
            env = _jobs.base_env("trainjob", ipc_dir)
            env.update(PET_NNODES=str(trainer["numNodes"]),
                       PET_NPROC_PER_NODE=str(trainer["numProcPerNode"]),
                       PET_NODE_RANK=str(node), PET_MASTER_ADDR="127.0.0.1",
                       PET_MASTER_PORT=str(port), RINGRT_TOKEN="12" * 16)
            commands.append(([sys.executable, "-m", "torch.distributed.run", *args], env))
        return commands
    log = _train_twice(tmp_path, start)
    assert log.count("done over ringrt") == 2
