"""torch collectives on the "ringrt" backend against gloo, in one job, interleaved size by size.

::

    ringrun -n 4 -m benchmarks.torch.collectives                     # every op, 4 B .. 16 MiB
    ringrun -n 2 -m benchmarks.torch.collectives --op all_reduce --sizes 4,1M,16M
    ringrun -n 4 -m benchmarks.torch.collectives --json benchmarks/results/torch_collectives.json

The job's default group is "ringrt" (``import ringrt.torch``); a gloo group of every rank is
made in the same job. Each point: both warm up, agree on an iteration count that fills
``--budget``, then take turns (``--rounds``), each turn a barrier, a loop timing every call,
a barrier; an iteration's time is the slowest rank's; the table gives the median and mean
and their ratios ringrt/gloo (< 1: ringrt faster). One more call on known inputs is then
checked (``#wrong``, summed over ranks). With ``--json``, rank 0 adds this run (one world)
to the file, replacing an earlier run of the same world; the machine is recorded with it.
Exit status 1 if a result was wrong.
"""

from __future__ import annotations

import json
import os
import statistics
import sys

import click
import torch
import torch.distributed as dist

import ringrt.torch  # noqa: F401 - registers the backend
from benchmarks.common import _machine, _table

from benchmarks.torch import _ops
SYSTEMS = ("ringrt", "gloo")


@click.command()
@click.option("--op", "ops", multiple=True, type=click.Choice((*_ops.OPS, "all")),
              default=("all",), show_default=True, help="Repeat for several.")
@click.option("--sizes", default="4,64,1K,16K,256K,1M,4M,16M", show_default=True,
              help="Whole-array sizes in bytes (4, 16K, 1M, ...).")
@click.option("--budget", type=click.FloatRange(0.001), default=0.2, show_default=True,
              help="Seconds of timed iterations per point and backend.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Turns per point and backend, alternating which goes first.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(ops, sizes, budget, rounds, json_path):
    """Time every torch collective over ringrt and gloo (see the module docstring)."""
    torch.set_num_threads(1)
    dist.init_process_group("ringrt")
    groups = {"ringrt": dist.group.WORLD, "gloo": dist.new_group(backend="gloo")}
    rank, world = dist.get_rank(), dist.get_world_size()
    ops = [op for op in _ops.OPS if ("all" in ops or op in ops)
           and not (op == "send_recv" and world == 1)]
    size_list = [_table.parse_size(s) for s in sizes.split(",")]
    if rank == 0:
        click.echo(f"# torch collectives, world {world}: ringrt backend vs gloo, float32\n"
                   f"# machine: {_machine.summary()}")
    records = []
    for op in ops:
        op_records = []
        for nbytes in (size_list[:1] if op == "barrier" else size_list):
            op_records += measure(op, nbytes, groups, budget, rounds)
        if rank == 0:
            click.echo(format_table(op, op_records))
        records += op_records
    if rank == 0 and json_path:
        write_json(json_path, world, records)
        click.echo(f"# wrote {json_path}")
    wrong = sum(r["wrong"] for r in records)
    dist.destroy_process_group()
    sys.exit(1 if wrong else 0)


def measure(op: str, nbytes: int, groups: dict, budget: float, rounds: int) -> list[dict]:
    """One point: both backends, interleaved; returns one record per backend."""
    world = dist.get_world_size()
    count = max(world, nbytes // 4)
    cases = {name: _ops.prepare(op, count, group) for name, group in groups.items()}
    iters = {}
    for name, case in cases.items():
        warm = timed(case.run, groups[name], _table.warmup_iterations(nbytes))
        per_call = slowest(torch.tensor([statistics.median(warm)]))[0]
        iters[name] = -(-_table.iterations(per_call, budget, 5, 2000) // rounds)
    times = {name: [] for name in cases}
    for turn in range(rounds):
        order = SYSTEMS if turn % 2 == 0 else SYSTEMS[::-1]
        for name in order:
            times[name] += timed(cases[name].run, groups[name], iters[name])
    records = []
    for name, case in cases.items():
        seconds = slowest(torch.tensor(times[name], dtype=torch.float64))
        wrong = torch.tensor([case.check()])
        dist.all_reduce(wrong)
        records.append({"system": name, "op": op, "world": world, "bytes": count * 4,
                        "count": count, "iters": len(seconds), "wrong": int(wrong),
                        **_table.summarize(seconds)})
    return records


def timed(run, group, iters: int) -> list[float]:
    """Per-call times on this rank, barriers around the loop and nothing else in it."""
    import time

    clock, times = time.perf_counter, []
    dist.barrier(group=group)
    for _ in range(max(1, iters)):
        start = clock()
        run()
        times.append(clock() - start)
    dist.barrier(group=group)
    return times


def slowest(values: torch.Tensor) -> list[float]:
    """Element-wise max over ranks (through the ringrt default group, outside timed loops)."""
    values = values.double()
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values.tolist()


def format_table(op: str, records: list[dict]) -> str:
    lines = [f"\n## {op}",
             f"{'size':>8} {'ringrt us':>10} {'mean':>9} {'gloo us':>10} {'mean':>9} "
             f"{'median x':>9} {'mean x':>7} {'#wrong':>6}"]
    by_size = {}
    for r in records:
        by_size.setdefault(r["bytes"], {})[r["system"]] = r
    for nbytes, pair in sorted(by_size.items()):
        ours, theirs = pair["ringrt"], pair["gloo"]
        lines.append(
            f"{_table.format_size(nbytes):>8} {ours['median_us']:>10,.1f} "
            f"{ours['mean_us']:>9,.1f} {theirs['median_us']:>10,.1f} "
            f"{theirs['mean_us']:>9,.1f} {ours['median_us'] / theirs['median_us']:>9.2f} "
            f"{ours['mean_us'] / theirs['mean_us']:>7.2f} "
            f"{ours['wrong'] + theirs['wrong']:>6}")
    return "\n".join(lines)


def write_json(path: str, world: int, records: list[dict]) -> None:
    """Add this world's run to ``path`` (replacing an earlier run of the same world)."""
    doc = {"benchmark": "torch_collectives", "runs": []}
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
    doc["runs"] = [run for run in doc["runs"] if run["world"] != world]
    doc["runs"].append({"world": world, "machine": _machine.describe(),
                        "torch": torch.__version__, "records": records})
    doc["runs"].sort(key=lambda run: run["world"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(json_lines(doc))


def json_lines(doc: dict) -> str:
    """``doc`` as JSON with one line per record, so results in git diff line by line."""
    runs = []
    for run in doc["runs"]:
        head = json.dumps({k: v for k, v in run.items() if k != "records"})[:-1]
        records = ",\n".join("   " + json.dumps(r) for r in run["records"])
        runs.append(f"  {head}, \"records\": [\n{records}\n  ]}}")
    return (f'{{"benchmark": {json.dumps(doc["benchmark"])}, "runs": [\n'
            + ",\n".join(runs) + "\n]}\n")


if __name__ == "__main__":
    main()
