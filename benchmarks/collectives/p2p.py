"""ringrt's own point-to-point (NumPy arrays): ping-pong and ring exchange, sizes swept.

::

    ringrun -n 2 -m benchmarks.collectives.p2p                          # shared memory (one host)
    RINGRT_P2P=sockets ringrun -n 2 -m benchmarks.collectives.p2p  # the socket path, for comparison
    ringrun -n 4 -m benchmarks.collectives.p2p --sizes 4,1M --pattern exchange

``pingpong``: rank 0 sends to rank 1, which sends back (one round trip per iteration; other
ranks idle). ``exchange``: every rank ``isend``s to the next and ``recv``s from the previous
(as ``benchmarks.torch.collectives``' send_recv, without torch). Each point: warm-up, then a
barrier, a timed loop, a barrier; an iteration's time is the slowest rank's; median and mean;
the last iteration's data is checked (``#wrong``). The path (shm or sockets) is a property
of the job, so comparing both takes two runs.
"""

from __future__ import annotations

import time

import click
import numpy as np

import ringrt as dist
from benchmarks.common import _machine, _table

PATTERNS = ("pingpong", "exchange")


@click.command()
@click.option("--sizes", default="4,64,1K,16K,256K,1M,4M,16M", show_default=True,
              help="Message sizes in bytes (4, 16K, 1M, ...).")
@click.option("--pattern", "patterns", multiple=True, type=click.Choice(PATTERNS),
              default=PATTERNS, show_default=True)
@click.option("--budget", type=click.FloatRange(0.001), default=0.2, show_default=True,
              help="Seconds of timed iterations per point.")
def main(sizes, patterns, budget):
    """Time ringrt's send/recv (see the module docstring)."""
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    if world < 2:
        raise click.UsageError("point-to-point needs at least 2 ranks (ringrun -n 2)")
    if rank == 0:
        click.echo(f"# ringrt point-to-point, world {world}, path "
                   f"{dist.stats()['p2p']['path']}\n# machine: {_machine.summary()}\n"
                   f"{'pattern':>9} {'size':>6} {'median us':>10} {'mean us':>9} {'#wrong':>6}")
    for pattern in patterns:
        for nbytes in (_table.parse_size(s) for s in sizes.split(",")):
            summary, wrong = measure(pattern, nbytes, budget, rank, world)
            if rank == 0:
                click.echo(f"{pattern:>9} {_table.format_size(nbytes):>6} "
                           f"{summary['median_us']:>10,.1f} {summary['mean_us']:>9,.1f} "
                           f"{wrong:>6}")
    dist.destroy_process_group()


def measure(pattern: str, nbytes: int, budget: float, rank: int, world: int):
    """One point: (median/mean of the slowest rank's iteration times, wrong elements)."""
    count = max(1, nbytes // 4)
    out = np.full(count, rank + 1, np.float32)
    into = np.zeros(count, np.float32)
    step = _STEPS[pattern]
    warm = timed(step, out, into, rank, world, _table.warmup_iterations(nbytes))
    per_call = slowest(np.array([np.median(warm)]))[0]
    times = timed(step, out, into, rank, world, _table.iterations(per_call, budget, 5, 5000))
    want = {"pingpong": 2 - rank, "exchange": (rank - 1) % world + 1}[pattern]
    wrong = np.array([0 if pattern == "pingpong" and rank > 1 else int((into != want).sum())])
    dist.all_reduce(wrong)
    return _table.summarize(slowest(np.array(times))), int(wrong[0])


def _pingpong(out, into, rank, world):
    if rank == 0:
        dist.send(out, 1)
        dist.recv(into, 1)
    elif rank == 1:
        dist.recv(into, 0)
        dist.send(out, 0)


def _exchange(out, into, rank, world):
    dist.isend(out, (rank + 1) % world)
    dist.recv(into, (rank - 1) % world)


_STEPS = {"pingpong": _pingpong, "exchange": _exchange}


def timed(step, out, into, rank: int, world: int, iters: int) -> list[float]:
    """Per-iteration times on this rank, barriers around the loop and nothing else in it."""
    clock, times = time.perf_counter, []
    dist.barrier()
    for _ in range(max(1, iters)):
        start = clock()
        step(out, into, rank, world)
        times.append(clock() - start)
    dist.barrier()
    return times


def slowest(values: np.ndarray) -> list[float]:
    """Element-wise max over ranks (outside the timed loop)."""
    values = values.astype(np.float64)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values.tolist()


if __name__ == "__main__":
    main()
