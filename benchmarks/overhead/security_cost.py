"""What securing the tcp links costs: all_reduce over each mechanism, interleaved.

Run it under ringrun; every rank builds one extra process group per mechanism over tcp, and
each size is timed on all of them in turns (``--rounds``), so load from elsewhere hits them
alike::

    ringrun -n 2 -m benchmarks.overhead.security_cost                    # one host, loopback tcp
    python -m benchmarks.cluster.collectives --security-cost                # 3 netlab hosts, gige

Mechanisms (``ringrt.LinkSecurity``): ``none`` (RINGRT_INSECURE_TCP: the unauthenticated
path, no token checked), ``plain`` (token-checked ZeroMQ PLAIN: the default on loopback),
``curve`` (CurveZMQ, authenticated and encrypted: the default across hosts). The table shows
each mechanism's median time relative to ``none`` and the microseconds it adds, then the
absolute medians (the slowest rank's, as nccl-tests).
"""

from __future__ import annotations

import functools
import json
import os
import time

import click

import ringrt as dist
from benchmarks.common import _machine, _measure, _table

MECHANISMS = ("none", "plain", "curve")


class Secured:
    """One mechanism's process group, as a system for ``_measure.measure``."""

    def __init__(self, name: str, group: dist.ProcessGroup):
        self.name, self.group = name, group

    def barrier(self) -> None:
        dist.barrier(group=self.group)

    def prepare(self, op: str, out, inp):
        return functools.partial(dist.all_reduce, out, group=self.group)

    def close(self) -> None:
        self.group.close()


def open_groups(timeout: float = 300.0) -> list[Secured]:
    """One world-sized group per mechanism, rendezvoused through the default group's store.
    The job token is ringrun's ``RINGRT_TOKEN``."""
    store, token = dist.get_store(), os.environ.get("RINGRT_TOKEN", "")
    settings = {"none": dist.LinkSecurity(token, insecure=True),
                "plain": dist.LinkSecurity(token, encrypt=False),
                "curve": dist.LinkSecurity(token, encrypt=True)}
    rank, world = dist.get_rank(), dist.get_world_size()
    return [Secured(name, dist.ProcessGroup(store, rank, world, timeout, f"security-{name}",
                                            settings[name])) for name in MECHANISMS]


CPU_SIZES = (4, 4096)                # bytes: small ops, where a per-message cost would show
CPU_OPS = 2000                       # ops per mechanism and round


def cpu_per_op(groups: list[Secured], rounds: int) -> dict[str, dict[int, float]]:
    """Microseconds of CPU (this process, every thread: zmq's I/O thread does the crypto) per
    all_reduce, mechanisms interleaved in ``rounds``, the mean over ranks. Latency on a
    loaded 2-core machine swings by tens of microseconds; CPU time per op does not."""
    import numpy as np

    used = {g.name: {n: 0.0 for n in CPU_SIZES} for g in groups}
    for nbytes in CPU_SIZES:
        array = np.zeros(nbytes // 4, np.float32)
        for r in range(rounds):
            for group in groups[r % len(groups):] + groups[:r % len(groups)]:
                group.barrier()
                start = time.process_time()
                for _ in range(CPU_OPS):
                    dist.all_reduce(array, group=group.group)
                used[group.name][nbytes] += time.process_time() - start
    world = dist.get_world_size()
    for name, per_size in used.items():
        for nbytes, seconds in per_size.items():
            total = np.array([seconds], np.float64)
            dist.all_reduce(total)
            per_size[nbytes] = float(total[0]) / world / (rounds * CPU_OPS) * 1e6
    return used


def cpu_report(used: dict[str, dict[int, float]]) -> str:
    lines = ["# CPU per all_reduce (us, process time of every thread, mean over ranks)",
             f"# {'size':>6} {'none':>8} {'plain':>8} {'curve':>8} {'+plain':>8} {'+curve':>8}"]
    for nbytes in CPU_SIZES:
        row = {name: used[name][nbytes] for name in MECHANISMS}
        lines.append(f"  {_table.format_size(nbytes):>6} {row['none']:8.1f} {row['plain']:8.1f} "
                     f"{row['curve']:8.1f} {row['plain'] - row['none']:8.1f} "
                     f"{row['curve'] - row['none']:8.1f}")
    return "\n".join(lines)


def report(records: list[dict], default: str) -> str:
    lines = [f"# machine: {_machine.summary()}",
             f"# all_reduce float32 over tcp, world {records[0]['world']}; the default here is "
             f"{default!r}; x/none = median time relative to no authentication, +us = added",
             f"# {'size':>6} {'plain/none':>10} {'curve/none':>10} {'+us plain':>10} "
             f"{'+us curve':>10} {'none us':>10} {'plain us':>10} {'curve us':>10}"]
    for group in _table._groups(records, ("bytes",)).values():
        median = {r["system"]: r["median_us"] for r in group}
        base = median["none"]
        lines.append(
            f"  {_table.format_size(group[0]['bytes']):>6} {median['plain'] / base:10.3f} "
            f"{median['curve'] / base:10.3f} {median['plain'] - base:10.1f} "
            f"{median['curve'] - base:10.1f} {base:10.1f} {median['plain']:10.1f} "
            f"{median['curve']:10.1f}")
    return "\n".join(lines)


@click.command()
@click.option("--min-bytes", "-b", default="4", show_default=True)
@click.option("--max-bytes", "-e", default="64M", show_default=True)
@click.option("--step-factor", "-f", default=4, show_default=True)
@click.option("--budget", default=0.3, show_default=True,
              help="Seconds of timed iterations per point and mechanism.")
@click.option("--rounds", default=3, show_default=True,
              help="Turns each mechanism takes at each size.")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False))
def main(min_bytes, max_bytes, step_factor, budget, rounds, json_path):
    """Time all_reduce over tcp with no authentication, PLAIN and CurveZMQ (under ringrun)."""
    os.environ["RINGRT_TRANSPORT"] = "tcp"          # on one host: loopback tcp, not ipc/shm
    dist.init_process_group()
    groups = open_groups()
    default = dist.stats()["transport"]["tcp_mechanism"]   # the default group's, over tcp
    plan = _measure.Budget(seconds=budget, min_iters=max(3, rounds))
    records = []
    for nbytes in _table.sweep(_table.parse_size(min_bytes), _table.parse_size(max_bytes),
                               step_factor):
        records += _measure.measure(groups, "all_reduce", nbytes, "float32", plan,
                                    "security", rounds)
    used = cpu_per_op(groups, rounds)
    if dist.get_rank() == 0:
        click.echo(report(records, default))
        click.echo(cpu_report(used))
        wrong = sum(r["wrong"] for r in records)
        click.echo(f"# #wrong total: {wrong}")
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"benchmark": "security_cost", "machine": _machine.describe(),
                           "world": dist.get_world_size(), "default": default,
                           "cpu_us_per_op": {name: {str(n): us for n, us in sizes.items()}
                                             for name, sizes in used.items()},
                           "results": records}, f, indent=1)
            click.echo(f"# wrote {json_path}")
    for group in groups:
        group.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
