"""``--bind none|core|numa``: which CPUs each local rank may run on, and its OpenMP threads.

Like torchrun's ``--numa-binding`` and mpirun's ``--bind-to``. The plan is computed once, in
the launcher, from the CPUs the launcher itself may use (``os.sched_getaffinity``: a cgroup,
``taskset`` or a batch system's allocation is respected) and the NUMA nodes Linux lists under
``/sys/devices/system/node``; the trampoline (``_child.py``) applies it before exec.

- ``core``: the allowed CPUs, ordered by NUMA node, package and core (so hyperthread siblings
  stay together), are cut into ``nproc`` contiguous, near-equal slices; each rank gets its own
  slice and ``OMP_NUM_THREADS`` = its size. With more ranks than CPUs (oversubscribed) each
  rank gets one CPU, CPU ``i mod count``: ranks share CPUs, as ``mpirun --oversubscribe``.
- ``numa``: ranks are spread in contiguous blocks over the nodes that hold allowed CPUs; each
  rank may use every allowed CPU of its node (memory is then allocated there: first touch),
  and ``OMP_NUM_THREADS`` = the node's CPUs divided among the ranks on it (at least 1).
- ``none``: the scheduler places ranks (``OMP_NUM_THREADS`` as without binding).

``--cpu-bind`` (older) pins rank ``i`` to the single CPU ``i mod count``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MODES = ("none", "core", "numa")
SYSFS = Path("/sys/devices/system")


@dataclass(frozen=True)
class Placement:
    """Where one local rank runs: its CPUs, its NUMA node (None when unbound), its threads."""

    cpus: tuple[int, ...]
    node: int | None
    threads: int

    def cpu_list(self) -> str:
        """The CPUs as the trampoline's argument and the map shows them: ``0-3,8``."""
        return format_cpus(self.cpus)


def plan(mode: str, nproc: int, allowed: set[int] | None = None,
         nodes: dict[int, set[int]] | None = None,
         topology: Callable[[int], tuple] | None = None) -> list[Placement] | None:
    """Each local rank's placement under ``mode``, or None for ``none``.

    Args:
        mode: ``none``, ``core``, ``numa``, or ``cpu`` (``--cpu-bind``: one CPU each).
        nproc: local ranks.
        allowed: the CPUs the launcher may use [default: ``os.sched_getaffinity(0)``].
        nodes: NUMA node -> its CPUs [default: read from /sys; one node when absent].
        topology: CPU -> sort key keeping a core's CPUs together [default: from /sys].
    """
    if mode == "none":
        return None
    allowed = set(os.sched_getaffinity(0)) if allowed is None else set(allowed)
    nodes = numa_nodes() if nodes is None else nodes
    by_node = {node: sorted(cpus & allowed) for node, cpus in sorted(nodes.items())}
    by_node = {node: cpus for node, cpus in by_node.items() if cpus}
    unlisted = sorted(allowed - {cpu for cpus in by_node.values() for cpu in cpus})
    if unlisted or not by_node:                  # no /sys, or CPUs no node claims
        by_node.setdefault(-1 if by_node else 0, []).extend(unlisted)
    if mode == "numa":
        return _numa(nproc, by_node)
    key = topology or _topology_key
    ordered = [cpu for cpus in by_node.values() for cpu in sorted(cpus, key=key)]
    node_of = {cpu: node for node, cpus in by_node.items() for cpu in cpus}
    if mode == "cpu" or nproc > len(ordered):
        return [Placement((cpu,), node_of[cpu], 1)
                for cpu in (ordered[i % len(ordered)] for i in range(nproc))]
    return [_slice_placement(ordered[len(ordered) * i // nproc:len(ordered) * (i + 1) // nproc],
                             node_of) for i in range(nproc)]


def _slice_placement(cpus: list[int], node_of: dict[int, int]) -> Placement:
    nodes = {node_of[cpu] for cpu in cpus}
    return Placement(tuple(sorted(cpus)), nodes.pop() if len(nodes) == 1 else None, len(cpus))


def _numa(nproc: int, by_node: dict[int, list[int]]) -> list[Placement]:
    """Contiguous blocks of ranks per node, as ``--bind-to numa --map-by numa:block`` would."""
    names = list(by_node)
    node_of_rank = [names[len(names) * i // nproc] for i in range(nproc)]
    sharing = {node: node_of_rank.count(node) for node in names}
    return [Placement(tuple(by_node[node]), node, max(1, len(by_node[node]) // sharing[node]))
            for node in node_of_rank]


def oversubscribed(placements: list[Placement]) -> bool:
    """More ranks than the CPUs they were given: some ranks share a CPU."""
    return len({cpu for placement in placements for cpu in placement.cpus}) < len(placements)


def describe(placements: list[Placement], global_rank) -> str:
    """The ``--verbose`` map, one line per local rank."""
    lines = []
    for local_rank, placement in enumerate(placements):
        node = "-" if placement.node is None or placement.node < 0 else placement.node
        lines.append(f"bind: rank {global_rank(local_rank)} (local {local_rank}): "
                     f"cpus {placement.cpu_list()}, numa node {node}, "
                     f"OMP_NUM_THREADS={placement.threads}")
    return "\n".join(lines)


def numa_nodes(sysfs: Path = SYSFS) -> dict[int, set[int]]:
    """NUMA node -> CPUs, from ``/sys/devices/system/node/node*/cpulist`` ({} when absent)."""
    nodes = {}
    for path in sorted((sysfs / "node").glob("node[0-9]*/cpulist")):
        nodes[int(path.parent.name[4:])] = parse_cpus(path.read_text())
    return nodes


def parse_cpus(text: str) -> set[int]:
    """``"0-3,8,10-11"`` -> {0, 1, 2, 3, 8, 10, 11} (Linux's cpulist format)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            first, _, last = part.partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def format_cpus(cpus) -> str:
    """The inverse of :func:`parse_cpus`: sorted, runs collapsed."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _topology_key(cpu: int) -> tuple[int, int, int]:
    """(package, core, cpu): hyperthread siblings share a core id, so they sort together."""
    topology = SYSFS / "cpu" / f"cpu{cpu}" / "topology"
    try:
        package = int((topology / "physical_package_id").read_text())
        core = int((topology / "core_id").read_text())
    except (OSError, ValueError):
        return (0, cpu, cpu)
    return (package, core, cpu)
