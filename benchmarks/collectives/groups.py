"""Subgroups against the world group: the same op on the same ranks, interleaved in one job.

::

    ringrun -n 2 -m benchmarks.collectives.groups                                  # NumPy API
    ringrun -n 4 -m benchmarks.collectives.groups --api torch  # torch backend "ringrt"
    ringrun -n 2 -m benchmarks.collectives.groups --json benchmarks/results/groups-w2.json

A group of every rank (``new_group(all ranks)``, as a DeviceMesh dimension or ``split_group``
makes one) and the world group run each (op, size) point in turns, ``--rounds`` turns each,
so load from elsewhere on a shared machine hits both alike. Each turn: a barrier, a timed
loop (per-rank time of each call), a barrier; an iteration's time is the slowest rank's; the
medians over all turns are compared: ``group/world`` (the target is <= 1.1). Then one more
call on known inputs per system is checked against NumPy (``#wrong``). ``all_to_all_uneven``
is the MoE pattern: rank r sends ``(r + j) % 3 + 1`` parts of the size to rank j.

Exit status 1 if any result was wrong.
"""

from __future__ import annotations

import json
import sys
import time

import click
import numpy as np

from benchmarks.common import _machine, _table

OPS = ("all_reduce", "broadcast", "all_gather", "reduce_scatter", "all_to_all",
       "all_to_all_uneven")


def uneven_parts(src: int, dst: int) -> int:
    """Parts (of size / 6 / world elements) rank ``src`` sends ``dst`` (1, 2 or 3)."""
    return (src + dst) % 3 + 1


class NumpyApi:
    """The ops through ringrt's NumPy API."""

    def __init__(self):
        import ringrt

        self.dist = ringrt
        ringrt.init_process_group()
        self.rank, self.world = ringrt.get_rank(), ringrt.get_world_size()

    def array(self, values) -> np.ndarray:
        return np.ascontiguousarray(values, np.float32)

    def numpy(self, array) -> np.ndarray:
        return array

    def new_group(self):
        return self.dist.new_group(list(range(self.world)))

    def barrier(self) -> None:
        self.dist.barrier()

    def max_over_ranks(self, values: np.ndarray) -> np.ndarray:
        self.dist.all_reduce(values, op=self.dist.ReduceOp.MAX)
        return values

    def stats(self) -> dict:
        return self.dist.stats()

    def close(self) -> None:
        self.dist.destroy_process_group()


class TorchApi(NumpyApi):
    """The same ops through torch.distributed on the "ringrt" backend."""

    def __init__(self):
        import torch
        import torch.distributed as dist

        import ringrt.torch  # noqa: F401 - registers the backend

        self.torch, self.dist = torch, dist
        dist.init_process_group("ringrt")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def array(self, values):
        return self.torch.from_numpy(np.ascontiguousarray(values, np.float32))

    def numpy(self, array) -> np.ndarray:
        return array.numpy()

    def new_group(self):
        return self.dist.new_group(list(range(self.world)), backend="ringrt")

    def max_over_ranks(self, values: np.ndarray) -> np.ndarray:
        tensor = self.torch.from_numpy(values)
        self.dist.all_reduce(tensor, op=self.dist.ReduceOp.MAX)
        return values

    def stats(self) -> dict:
        import ringrt

        return ringrt.stats()

    def close(self) -> None:
        self.dist.destroy_process_group()


def make_call(api, op: str, count: int, group, known: bool = False):
    """(call, check): ``call()`` runs ``op`` once on ``group`` (None: the world); after it,
    ``check()`` counts wrong elements (inputs are zeros unless ``known``)."""
    rank, world, dist = api.rank, api.world, api.dist

    def values(n, src=rank, salt=0):
        return ((np.arange(n) + salt) % 13 + 1 + src) if known else np.zeros(n)

    if op in ("all_reduce", "broadcast"):
        x = api.array(values(count))
        if op == "all_reduce":
            want = sum(values(count, r) for r in range(world))
            return (lambda: dist.all_reduce(x, group=group)), lambda: _wrong(api, x, want)
        want = values(count, 0)
        return (lambda: dist.broadcast(x, src=0, group=group)), lambda: _wrong(api, x, want)
    block = max(1, count // world)
    if op == "all_gather":
        x, out = api.array(values(block)), api.array(np.zeros(block * world))
        want = np.concatenate([values(block, r) for r in range(world)])
        return (lambda: dist.all_gather_into_tensor(out, x, group=group)), \
            lambda: _wrong(api, out, want)
    if op == "reduce_scatter":
        x, out = api.array(values(block * world)), api.array(np.zeros(block))
        want = sum(values(block * world, r) for r in range(world))[rank * block:][:block]
        return (lambda: dist.reduce_scatter_tensor(out, x, group=group)), \
            lambda: _wrong(api, out, want)
    if op == "all_to_all":
        x, out = api.array(values(block * world)), api.array(np.zeros(block * world))
        want = np.concatenate([values(block * world, q)[rank * block:][:block]
                               for q in range(world)])
        return (lambda: dist.all_to_all_single(out, x, group=group)), \
            lambda: _wrong(api, out, want)
    part = max(1, count // (2 * world))
    ins = [api.array(values(part * uneven_parts(rank, j), salt=j)) for j in range(world)]
    outs = [api.array(np.zeros(part * uneven_parts(q, rank))) for q in range(world)]
    want = np.concatenate([values(part * uneven_parts(q, rank), q, rank) for q in range(world)])
    return (lambda: dist.all_to_all(outs, ins, group=group)), \
        lambda: _wrong(api, np.concatenate([api.numpy(o) for o in outs]), want)


def _wrong(api, got, want) -> int:
    got = got if isinstance(got, np.ndarray) else api.numpy(got)
    return int(np.count_nonzero(got != want.astype(np.float32)))


def _timed(api, call, iters: int) -> list[float]:
    clock, times = time.perf_counter, []
    api.barrier()
    for _ in range(iters):
        start = clock()
        call()
        times.append(clock() - start)
    api.barrier()
    return times


def point(api, op: str, nbytes: int, group, rounds: int, budget: float) -> dict:
    """One (op, size): group and world interleaved, ``rounds`` turns each."""
    count = max(1, nbytes // 4)
    systems = {"world": None, "group": group}
    calls = {name: make_call(api, op, count, g)[0] for name, g in systems.items()}
    for call in calls.values():
        for _ in range(_table.warmup_iterations(nbytes)):
            call()
    probe = np.array([min(_timed(api, calls["world"], 3))])
    per_op = float(api.max_over_ranks(probe)[0])
    iters = _table.iterations(per_op, budget / rounds, 5, 400)
    times = {name: [] for name in systems}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name] += _timed(api, call, iters)
    record = {"op": op, "nbytes": nbytes, "iters": iters * rounds}
    for name in systems:
        slowest = api.max_over_ranks(np.array(times[name]))
        record[name] = _table.summarize(slowest.tolist())
    wrong = np.array([0.0, 0.0])
    for i, (name, g) in enumerate(systems.items()):
        call, check = make_call(api, op, count, g, known=True)
        call()
        wrong[i] = check()
    wrong = api.max_over_ranks(wrong)
    record["wrong"] = {"world": int(wrong[0]), "group": int(wrong[1])}
    record["group_over_world"] = record["group"]["median_us"] / record["world"]["median_us"]
    return record


def _line(r: dict) -> str:
    return (f"{r['op']:>17} {_table.human(r['nbytes']):>9} {r['world']['median_us']:>10.1f} "
            f"{r['group']['median_us']:>10.1f} {r['group_over_world']:>7.2f} "
            f"{r['world']['p90_us']:>9.1f} {r['group']['p90_us']:>9.1f} {r['iters']:>6} "
            f"{r['wrong']['world'] + r['wrong']['group']:>6}")


def _write(path, api, comm, rounds, machine, records, algorithms=None) -> None:
    """The record so far (rewritten after every point: a run cut short keeps its points)."""
    if path:
        with open(path, "w") as out:
            json.dump({"api": api, "world": comm.world, "rounds": rounds, "machine": machine,
                       "complete": algorithms is not None, "algorithms_rank0": algorithms,
                       "records": records}, out, indent=1)


@click.command()
@click.option("--api", type=click.Choice(["numpy", "torch"]), default="numpy",
              show_default=True, help="ringrt's NumPy API or torch.distributed on 'ringrt'.")
@click.option("--ops", default=",".join(OPS), show_default=True,
              help=f"Comma-separated, of {', '.join(OPS)}.")
@click.option("--sizes", default="4,256,4K,64K,256K,1M,4M,16M", show_default=True,
              help="Comma-separated sizes in bytes (the whole array; 4K, 1M).")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True,
              help="Turns each system takes per point.")
@click.option("--budget", type=float, default=1.0, show_default=True,
              help="Seconds of timed calls per system and point (all rounds).")
@click.option("--json", "json_path", default=None, help="Write the records here (rank 0).")
def main(api: str, ops: str, sizes: str, rounds: int, budget: float,
         json_path: str | None) -> None:
    """A group of every rank against the world group, op by op and size by size."""
    comm = TorchApi() if api == "torch" else NumpyApi()
    group = comm.new_group()
    machine = _machine.describe() if comm.rank == 0 else None
    if comm.rank == 0:
        print(f"# groups vs world, {api} API, world {comm.world}, {rounds} interleaved turns; "
              f"{_machine.summary(machine)}")
        print(f"{'op':>17} {'size':>9} {'world us':>10} {'group us':>10} {'g/w':>7} "
              f"{'w p90':>9} {'g p90':>9} {'iters':>6} {'#wrong':>6}", flush=True)
    records = []
    for op in [o.strip() for o in ops.split(",") if o.strip()]:
        if op not in OPS:
            raise click.BadParameter(f"unknown op {op!r}: one of {', '.join(OPS)}")
        for nbytes in [_table.parse_size(s) for s in sizes.split(",") if s.strip()]:
            record = point(comm, op, nbytes, group, rounds, budget)
            records.append(record)
            if comm.rank == 0:
                print(_line(record), flush=True)
                _write(json_path, api, comm, rounds, machine, records)   # so far
    if comm.rank == 0:
        _write(json_path, api, comm, rounds, machine, records, comm.stats()["algorithms"])
    comm.close()
    if any(r["wrong"]["world"] or r["wrong"]["group"] for r in records):
        sys.exit(1)


if __name__ == "__main__":
    main()
