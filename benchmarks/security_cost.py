"""What securing the tcp links costs: all_reduce over each mechanism, interleaved (issue 10).

Run it under ringrun; every rank builds one extra process group per mechanism over tcp, and
each size is timed on all of them in turns (``--rounds``), so load from elsewhere hits them
alike::

    ringrun -n 2 -m benchmarks.security_cost                    # one host, loopback tcp
    python -m benchmarks.cluster --security-cost                # 3 netlab hosts, gige

Mechanisms (``ringrt/_comm/auth.py``): ``none`` (RINGRT_INSECURE_TCP: the unauthenticated
path before issue 10), ``plain`` (token-checked ZeroMQ PLAIN: the default on loopback),
``curve`` (CurveZMQ, authenticated and encrypted: the default across hosts). The table shows
each mechanism's median time relative to ``none`` and the microseconds it adds, then the
absolute medians (the slowest rank's, as nccl-tests).
"""

from __future__ import annotations

import functools
import json
import os

import click

import ringrt as dist
from benchmarks import _machine, _measure, _table
from ringrt._comm.auth import LinkSecurity
from ringrt._env import job_token
from ringrt._process_group import ProcessGroup

MECHANISMS = ("none", "plain", "curve")


class Secured:
    """One mechanism's process group, as a system for ``_measure.measure``."""

    def __init__(self, name: str, group: ProcessGroup):
        self.name, self.group = name, group

    def barrier(self) -> None:
        dist.barrier(group=self.group)

    def prepare(self, op: str, out, inp):
        return functools.partial(dist.all_reduce, out, group=self.group)

    def close(self) -> None:
        self.group.close()


def open_groups(timeout: float = 300.0) -> list[Secured]:
    """One world-sized group per mechanism, rendezvoused through the default group's store."""
    store, token = dist.get_store(), job_token()
    settings = {"none": LinkSecurity(token, insecure=True),
                "plain": LinkSecurity(token, encrypt=False),
                "curve": LinkSecurity(token, encrypt=True)}
    rank, world = dist.get_rank(), dist.get_world_size()
    return [Secured(name, ProcessGroup(store, rank, world, timeout, f"security-{name}",
                                       settings[name])) for name in MECHANISMS]


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
    default = LinkSecurity(job_token()).mechanism(groups[0].group.comm.transport.
                                                  _endpoints.bind_addr)
    plan = _measure.Budget(seconds=budget, min_iters=max(3, rounds))
    records = []
    for nbytes in _table.sweep(_table.parse_size(min_bytes), _table.parse_size(max_bytes),
                               step_factor):
        records += _measure.measure(groups, "all_reduce", nbytes, "float32", plan,
                                    "security", rounds)
    if dist.get_rank() == 0:
        click.echo(report(records, default))
        wrong = sum(r["wrong"] for r in records)
        click.echo(f"# #wrong total: {wrong}")
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"benchmark": "security_cost", "machine": _machine.describe(),
                           "world": dist.get_world_size(), "default": default,
                           "results": records}, f, indent=1)
            click.echo(f"# wrote {json_path}")
    for group in groups:
        group.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
