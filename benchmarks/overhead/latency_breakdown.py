"""Where a small all_reduce's microseconds go: the NumPy API and the torch backend, world 2.

Run under ``ringrun -n 2 -m benchmarks.overhead.latency_breakdown`` (writes
``benchmarks/results/latency_breakdown.json``). One job, torch's default group on backend
"ringrt", a 4-byte float32 all_reduce over shared memory, five ways interleaved round by
round (each round: a barrier, then ``--ops`` calls; per-op time = the round's time / ops,
rank 0's clock; the two ranks run in lockstep):

- *numpy*: ``ringrt.all_reduce`` on a NumPy view of the tensor, on the ringrt group behind
  torch's default group (the small all_reduce's fast path, its steps in C where
  ``ringrt/_native/_fastpath.c`` is built);
- *numpy, fast path in Python*: the same with the fast path's steps in Python
  (``ringrt.debug.use_fast_path(True, native=False)``, as without the C module);
- *numpy, general path*: the same with the fast path off (``ringrt.debug.use_fast_path``),
  every op through the general machinery;
- *backend*: the "ringrt" backend's ``allreduce([tensor], opts)`` called directly (its
  checks, the fast path on the tensor's memory, the completed torch ``Work``);
- *torch*: ``torch.distributed.all_reduce(tensor)`` (torch's Python API and c10d dispatch on
  top of the backend).

Then the general path's steps, each timed alone (``ringrt.debug.all_reduce_part_costs``,
``timeit`` less an empty call, both ranks at once), and the time the same ops spend in the
arena's waits for the peer (``ringrt.debug.all_reduce_wait``, as tracing times it). What
remains of the general path's median is the op's steps not timed alone: function calls and
``try``/``finally`` between the parts, and what a step costs inside an op beyond what it
costs in a warm ``timeit`` loop. The torch rows are differences of medians: backend - numpy (fast path), torch -
backend. Figures are medians over rounds; the machine may be shared, so read the ratios and
the parts together.
"""

from __future__ import annotations

import json
import statistics
import time

import click

import ringrt
from benchmarks.common import _backends, _machine
from benchmarks.common._paths import RESULTS
from ringrt import debug

RESULT = str(RESULTS / "latency_breakdown.json")


def _torch_world():
    """(the ringrt backend object of torch's default group, its ringrt group)."""
    import torch.distributed as tdist

    import ringrt.torch  # noqa: F401  (registers the backend)

    tdist.init_process_group("ringrt")
    backend = _backends.ringrt_backend_of(tdist.distributed_c10d._get_default_group())
    return backend, backend.ringrt_group


def _modes(backend, group, tensor) -> dict:
    import torch.distributed as tdist

    array = tensor.numpy()
    opts = tdist.AllreduceOptions()
    opts.asyncOp = False

    def general():
        debug.use_fast_path(False, group)
        try:
            for _ in range(GENERAL_BATCH):
                ringrt.all_reduce(array, group=group)
        finally:
            debug.use_fast_path(True, group)

    def python_steps():
        debug.use_fast_path(True, group, native=False)
        try:
            for _ in range(GENERAL_BATCH):
                ringrt.all_reduce(array, group=group)
        finally:
            debug.use_fast_path(True, group)

    return {"numpy": lambda: ringrt.all_reduce(array, group=group),
            "numpy, fast path in Python": python_steps,
            "numpy, general path": general,
            "backend": lambda: backend.allreduce([tensor], opts).wait(),
            "torch": lambda: tdist.all_reduce(tensor)}


GENERAL_BATCH = 100      # general-path ops per switch (the switch itself costs a few µs)
BATCHED = ("numpy, general path", "numpy, fast path in Python")


def _per_op_us(call, ops: int, group) -> float:
    ringrt.barrier(group=group)
    start = time.perf_counter()
    for _ in range(ops):
        call()
    return (time.perf_counter() - start) / ops * 1e6


def end_to_end(modes: dict, ops: int, rounds: int, group) -> dict[str, list[float]]:
    def calls(name: str) -> int:
        return ops // GENERAL_BATCH if name in BATCHED else ops

    for name, call in modes.items():                   # warm up
        _per_op_us(call, calls(name), group)
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, call in modes.items():
            per_call = _per_op_us(call, calls(name), group)
            times[name].append(per_call * calls(name) / ops)
    return times


def breakdown(medians: dict[str, float], parts: dict[str, float], wait: float
              ) -> list[tuple[str, float]]:
    """Rows (what, µs): the general path's parts, its wait, the rest; the fast path; the
    torch layers (on top of the fast path)."""
    general = medians["numpy, general path"]
    rows = list(parts.items())
    rows.append(("waiting for the peer (spin or futex sleep)", wait))
    rows.append(("the rest: calls between the parts, not timed alone",
                 general - sum(parts.values()) - wait))
    rows.append(("= NumPy all_reduce, general path (measured)", general))
    rows.append(("= NumPy all_reduce, fast path in Python (measured)",
                 medians["numpy, fast path in Python"]))
    rows.append(("= NumPy all_reduce, fast path (measured)", medians["numpy"]))
    rows.append(("torch backend: checks, tensor's address, Work (backend - numpy)",
                 medians["backend"] - medians["numpy"]))
    rows.append(("torch dispatch: dist.all_reduce, c10d (torch - backend)",
                 medians["torch"] - medians["backend"]))
    rows.append(("= torch dist.all_reduce (measured)", medians["torch"]))
    return rows


@click.command()
@click.option("--ops", default=2000, show_default=True, help="Calls per round and mode.")
@click.option("--rounds", default=15, show_default=True, help="Rounds (modes interleaved).")
@click.option("--number", default=20000, show_default=True, help="timeit calls per part.")
@click.option("--output", default=RESULT, show_default=True, type=click.Path(dir_okay=False))
def main(ops: int, rounds: int, number: int, output: str) -> None:
    """Time a 4-byte all_reduce three ways and its parts; print the table, write the JSON."""
    import torch
    import torch.distributed as tdist

    backend, group = _torch_world()
    if ringrt.get_world_size(group) != 2:
        raise click.UsageError("run it at world 2: ringrun -n 2 -m "
                               "benchmarks.overhead.latency_breakdown")
    tensor = torch.zeros(1, dtype=torch.float32)         # sums stay 0: checked below
    times = end_to_end(_modes(backend, group, tensor), ops, rounds, group)
    ringrt.barrier(group=group)
    parts = debug.all_reduce_part_costs(number, group=group)
    ringrt.barrier(group=group)
    wait = debug.all_reduce_wait(ops * 3, group=group)
    ringrt.barrier(group=group)
    wrong = int(tensor.numpy()[0] != 0)
    if ringrt.get_rank(group) == 0:
        _report(times, parts, wait, ops, rounds, number, wrong, output)
    tdist.destroy_process_group()


def _report(times, parts, wait, ops, rounds, number, wrong, output) -> None:
    machine = _machine.describe()
    medians = {name: statistics.median(t) for name, t in times.items()}
    rows = breakdown(medians, parts, wait)
    print(f"# {_machine.summary(machine)}")
    print(f"all_reduce float32 4 B, world 2, shared memory: median of {rounds} rounds x {ops} "
          f"ops; parts: timeit x {number}, less an empty call")
    for name, us in rows:
        print(f"  {name:<62} {us:7.2f}")
    print("  (min over rounds: " + ", ".join(f"{k} {min(t):.2f}" for k, t in times.items())
          + f"; #wrong {wrong})")
    record = {"benchmark": "latency_breakdown",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine,
              "world": 2, "bytes": 4, "ops_per_round": ops, "rounds": rounds,
              "timeit_number": number, "median_us": medians, "rounds_us": times,
              "parts_us": parts, "wait_us": wait, "rows": rows, "wrong": wrong}
    with open(output, "w") as file:
        json.dump(record, file, indent=1)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
