"""Laptop-cluster benchmark: collectives across netlab hosts, measured against the link.

Each profile is run on N simulated hosts (``--nproc`` ranks each, default 1; one
``ringrun --nnodes N`` per host through ``netlab exec``), after measuring the link itself with netlab's ``zmq_bench.py``:
RTT (64 B REQ/REP), the goodput of one link (PUSH/PULL, 1 MiB messages) and of every link at
once (each host pushing to the next, as a ring does). Then the size sweep of
``benchmarks/cluster/_sweep.py`` runs, and the report gives, per op and size, the slowest rank's
median time, algbw and busbw (nccl-tests' definitions) and busbw as a fraction of the goodput;
for small messages, the time against the algorithm's steps x one-way latency. The CPU of the
ranks and of netlab's delay daemon is recorded, since all hosts share this machine's cores.

Needs root (netlab). Examples::

    .venv/bin/python -m benchmarks.cluster.collectives  # gige, wifi, raw; 3 hosts
    .venv/bin/python -m benchmarks.cluster.collectives --profile gige --ops all_reduce --min-bytes 1MiB
    .venv/bin/python -m benchmarks.cluster.collectives --profile gige --env RINGRT_SEGMENT_BYTES=2097152
    .venv/bin/python -m benchmarks.cluster.collectives --profile gige --shape '--delay 0ms'  # no delay daemon
    .venv/bin/python -m benchmarks.cluster.collectives --prefix rtlab --reuse  # a lab already up, as shaped
    .venv/bin/python -m benchmarks.cluster.collectives --from-json benchmarks/results/cluster.json  # tables
    .venv/bin/python -m benchmarks.cluster.collectives --profile gige --security-cost  # the links' security cost
    .venv/bin/python -m benchmarks.cluster.collectives --profile gige --nproc 4 --hierarchical \
        --json benchmarks/results/cluster-hier-3x4.json     # two-level vs flat, same run

``--hierarchical`` times every op that has a two-level algorithm forced two-level and forced
to each flat algorithm, plus ringrt's own choice, in one run; the report then gives the cost
model's prediction next to every time (``cost_model.predict_two_level`` /
``predict_flat_on_hosts``).

Writes ``benchmarks/results/cluster.json`` (``--json``), which benchmarks/cluster/cost_model.py
reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

from benchmarks.common import _machine, _paths
from benchmarks.common._table import human, parse_size
from ringrt import tuning
from ringrt.tuning import cost_model as cm

REPO = _paths.REPO
NETLAB = Path(os.environ.get("NETLAB") or REPO.parent / "shared" / "tools" / "netlab")
ZMQ_BENCH = NETLAB.with_name("zmq_bench.py")
RESULTS = _paths.RESULTS / "cluster.json"
MASTER_PORT = 29621
TOKEN = "ringrt-cluster-benchmark"
# Line rate of each profile (netlab --help); goodput is measured, these only label the tables.
LINE_RATE = {"gige": 1e9, "wifi": 300e6, "raw": None}
DEFAULT_OPS = ("all_reduce:default,broadcast:default,reduce:default,all_gather:default,"
               "reduce_scatter:default,barrier:default")
HIERARCHICAL_OPS = ("all_reduce:default,all_reduce:hierarchical,all_reduce:ring,"
                    "all_reduce:recursive_doubling,broadcast:hierarchical,broadcast:binomial,"
                    "broadcast:chain,reduce:hierarchical,reduce:binomial,reduce:chain,"
                    "all_gather:hierarchical,all_gather:ring,all_gather:direct,"
                    "barrier:hierarchical,barrier:recursive_doubling")
ALGORITHM_OPS = ("all_reduce:ring,all_reduce:recursive_doubling,broadcast:binomial,"
                 "broadcast:chain,all_gather:ring,all_gather:direct,reduce_scatter:ring,"
                 "reduce_scatter:direct")


# -- the lab ----------------------------------------------------------------------------


def netlab(*args: str, timeout: float = 60) -> str:
    result = subprocess.run([str(NETLAB), *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise click.ClickException(f"netlab {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout + result.stderr


@dataclass
class Lab:
    prefix: str
    hosts: dict[str, str]          # name -> address, in index order

    @property
    def names(self) -> list[str]:
        return list(self.hosts)

    @classmethod
    def read(cls, prefix: str) -> Lab:
        lines = netlab("hosts", "--prefix", prefix).splitlines()
        return cls(prefix, dict(line.split()[:2] for line in lines if line.strip()))

    def shape(self, profile: str, extra: tuple[str, ...] = ()) -> None:
        netlab("shape", "all", "--profile", profile, "--loss", "0%", *extra, "--prefix",
               self.prefix)

    def delay_daemon_pid(self) -> int | None:
        match = re.search(r"delay daemon: running, pid (\d+)",
                          netlab("status", "--prefix", self.prefix))
        return int(match.group(1)) if match else None

    def start(self, host: str, cmd: list[str], timeout: float, log) -> subprocess.Popen:
        argv = [str(NETLAB), "exec", host, "--prefix", self.prefix, "--timeout", f"{timeout:g}",
                "--", *cmd]
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))


@contextlib.contextmanager
def lab_for(hosts: int, prefix: str, reuse: bool):
    """An existing lab (``reuse``) or a fresh one, brought down afterwards whatever happens."""
    if reuse:
        yield Lab.read(prefix)
        return
    netlab("up", str(hosts), "--prefix", prefix)
    try:
        yield Lab.read(prefix)
    finally:
        netlab("down", "--prefix", prefix)


def run_everywhere(lab: Lab, commands: dict[str, list[str]], timeout: float) -> dict[str, str]:
    """Run one command per host at once; host -> output. Kills them all on any failure."""
    procs = {}
    with contextlib.ExitStack() as files:
        logs = {host: files.enter_context(tempfile.TemporaryFile("w+")) for host in commands}
        try:
            for host, cmd in commands.items():
                procs[host] = lab.start(host, cmd, timeout, logs[host])
            end = time.monotonic() + timeout + 10
            codes = {h: p.wait(timeout=max(1.0, end - time.monotonic()))
                     for h, p in procs.items()}
        finally:
            for proc in procs.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        outputs = {}
        for host, log in logs.items():
            log.seek(0)
            outputs[host] = log.read()
    if any(codes.values()):
        raise click.ClickException(f"a host failed (exit codes {codes}):\n" + "\n".join(
            f"--- {h}\n{o[-3000:]}" for h, o in outputs.items()))
    return outputs


class CpuMeter:
    """CPU share (of one core) used by ``pid`` while the ``with`` block runs."""

    def __init__(self, pid: int | None):
        self.pid, self.share = pid, None

    def _cpu(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self):
        self._start, self._wall = self._cpu(), time.monotonic()
        return self

    def __exit__(self, *exc):
        end = self._cpu()
        if end is not None and self._start is not None:
            self.share = (end - self._start) / (time.monotonic() - self._wall)


# -- measuring the link -----------------------------------------------------------------


def last_json(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise click.ClickException(f"no JSON result in:\n{output[-2000:]}")
    return json.loads(lines[-1])


def zmq_bench(*args: str) -> list[str]:
    return [sys.executable, str(ZMQ_BENCH), *args]


def measure_link(lab: Lab, messages: int) -> dict:
    """RTT host0 -> host1, goodput of one link, and of every link at once (a ring)."""
    names, addrs = lab.names, list(lab.hosts.values())
    port = 6100
    rtt = run_everywhere(lab, {
        names[1]: zmq_bench("rep", "--bind", f"{addrs[1]}:{port}", "--timeout", "15"),
        names[0]: zmq_bench("req", "--connect", f"{addrs[1]}:{port}", "--count", "300",
                            "--timeout", "10"),
    }, timeout=30)
    single = run_everywhere(lab, {
        names[1]: zmq_bench("pull", "--bind", f"{addrs[1]}:{port + 1}", "--count",
                            str(messages), "--timeout", "60"),
        names[0]: zmq_bench("push", "--connect", f"{addrs[1]}:{port + 1}", "--count",
                            str(messages), "--timeout", "60"),
    }, timeout=70)
    with CpuMeter(lab.delay_daemon_pid()) as daemon:
        ring = _ring_goodput(lab, port + 2, messages)
    return {"rtt_ms": last_json(rtt[names[0]])["rtt_ms_p50"],
            "goodput_MBps": last_json(single[names[1]])["MBps"],
            "ring_goodput_MBps": ring, "delay_daemon_cpu_ring": daemon.share}


def _ring_goodput(lab: Lab, port: int, messages: int) -> list[float]:
    """Every host pulls from its left neighbour and pushes to its right one, all at once."""
    names, addrs = lab.names, list(lab.hosts.values())
    n = len(names)
    # A host runs its pull and its push in one shell, so both start together.
    commands = {}
    for i, host in enumerate(names):
        pull = zmq_bench("pull", "--bind", f"{addrs[i]}:{port}", "--count", str(messages),
                         "--timeout", "90")
        push = zmq_bench("push", "--connect", f"{addrs[(i + 1) % n]}:{port}", "--count",
                         str(messages), "--timeout", "90")
        commands[host] = ["sh", "-c", f"{' '.join(push)} >/dev/null & {' '.join(pull)}; wait"]
    outputs = run_everywhere(lab, commands, timeout=100)
    return [last_json(outputs[h])["MBps"] for h in names]


# -- the sweep --------------------------------------------------------------------------


def run_sweep(lab: Lab, sweep_args: list[str], env: dict[str, str], timeout: float,
              nproc: int = 1) -> dict:
    """benchmarks.cluster._sweep on every host (``nproc`` ranks each); returns rank 0's JSON."""
    record, share = run_module(lab, "benchmarks.cluster._sweep", sweep_args, "--out", env,
                               timeout, nproc)
    record["nproc"] = nproc
    record["delay_daemon_cpu"] = share
    return record


def run_module(lab: Lab, module: str, args: list[str], out_option: str, env: dict[str, str],
               timeout: float, nproc: int = 1) -> tuple[dict, float | None]:
    """``ringrun -n NPROC -m MODULE ARGS OUT_OPTION FILE`` on every host at once; returns the JSON
    rank 0 wrote and the delay daemon's CPU share meanwhile."""
    with tempfile.TemporaryDirectory(prefix="rrc-") as tmp:
        out = Path(tmp) / "out.json"
        master = lab.hosts[lab.names[0]]
        setting = [f"{k}={v}" for k, v in env.items()]
        commands = {host: ["env", f"RINGRT_TOKEN={TOKEN}", *setting, sys.executable, "-m",
                           "ringrt_launcher", "--nnodes", str(len(lab.names)),
                           "--node-rank", str(i),
                           "--master-addr", master, "--master-port", str(MASTER_PORT),
                           "--timeout", "300", "--quiet-ranks", "-n", str(nproc), "-m",
                           module, *args, out_option, str(out)]
                    for i, host in enumerate(lab.names)}
        with CpuMeter(lab.delay_daemon_pid()) as daemon:
            outputs = run_everywhere(lab, commands, timeout)
        sys.stdout.write(outputs[lab.names[0]])
        return json.loads(out.read_text()), daemon.share


# -- the report -------------------------------------------------------------------------


def annotate(record: dict, link: dict) -> None:
    """Add algbw, busbw and busbw / goodput to every result."""
    world = record["world"]
    ring_goodput = min(link["ring_goodput_MBps"]) * 1e6
    for result in record["results"]:
        seconds = result["median_s"]
        result["algbw_MBps"] = result["nbytes"] / seconds / 1e6
        result["busbw_MBps"] = result["algbw_MBps"] * cm.bus_factor(result["op"], world)
        result["busbw_of_goodput"] = result["busbw_MBps"] * 1e6 / (link["goodput_MBps"] * 1e6)
        result["busbw_of_ring_goodput"] = result["busbw_MBps"] * 1e6 / ring_goodput


def host_sizes(record: dict) -> tuple[int, ...]:
    """Ranks per host of a run, from the hostnames the ranks reported."""
    counts: dict[str, int] = {}
    for host in record.get("hosts") or []:
        counts[host] = counts.get(host, 0) + 1
    return tuple(counts.values()) or (1,) * record["world"]


def predicted_ms(record: dict, result: dict) -> float | None:
    """The cost model's time for one result (the network parameters of ringrt's choice), or
    None."""
    sizes = host_sizes(record)
    usable = (record.get("machine") or {}).get("cpus_usable")     # every lab host: the VM's
    cores = (usable,) * len(sizes) if usable else None
    algorithm = result.get("chosen") if result["algorithm"] == "default" else result["algorithm"]
    net = tuning.NETWORK
    op, nbytes = result["op"], result["nbytes"]
    try:
        if algorithm == "hierarchical":
            variant = _variant(record, op, nbytes, sizes)
            return cm.predict_two_level(op, nbytes, sizes, *net, variant=variant,
                                        cores=cores) * 1e3
        return cm.predict_flat_on_hosts(op, algorithm, nbytes, sizes, *net, cores=cores) * 1e3
    except ValueError:
        return None


def _variant(record: dict, op: str, nbytes: int, sizes: tuple[int, ...]) -> str | None:
    """The two-level all_reduce variant the run used (its RINGRT_TWO_LEVEL, if any)."""
    if op != "all_reduce":
        return None
    saved = os.environ.get("RINGRT_TWO_LEVEL")
    os.environ["RINGRT_TWO_LEVEL"] = record.get("env", {}).get("RINGRT_TWO_LEVEL", "")
    try:
        return tuning.all_reduce_variant(nbytes, sizes)
    finally:
        if saved is None:
            os.environ.pop("RINGRT_TWO_LEVEL")
        else:
            os.environ["RINGRT_TWO_LEVEL"] = saved


def bandwidth_table(record: dict, min_bytes: int) -> list[str]:
    lines = [("| op | algorithm | size | median ms | predicted ms | mean ms | algbw MB/s | "
              "busbw MB/s | busbw / goodput | busbw / ring goodput | rank CPU | #wrong |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in record["results"]:
        if r["nbytes"] < min_bytes or r["op"] == "barrier":
            continue
        label = r.get("chosen", "?") if r["algorithm"] == "default" else \
            f"{r['algorithm']} (forced)"
        predicted = predicted_ms(record, r)
        lines.append(f"| {r['op']} | {label} | {human(r['nbytes'])} | "
                     f"{r['median_s'] * 1e3:.2f} | "
                     f"{'-' if predicted is None else f'{predicted:.2f}'} | "
                     f"{r['mean_s'] * 1e3:.2f} | "
                     f"{r['algbw_MBps']:.1f} | {r['busbw_MBps']:.1f} | "
                     f"{r['busbw_of_goodput']:.0%} | {r['busbw_of_ring_goodput']:.0%} | "
                     f"{r['cpu']:.0%} | {r['wrong']} |")
    return lines


# Ops whose every rank waits for every other: their back-to-back time is a latency. A
# broadcast or reduce root only sends, so consecutive ones overlap and time a throughput.
LATENCY_OPS = ("all_reduce", "all_gather", "reduce_scatter", "barrier")


def latency_table(record: dict, link: dict) -> list[str]:
    """The smallest size of every (op, algorithm) against steps x one-way latency."""
    world, one_way = record["world"], link["rtt_ms"] / 2
    lines = [f"one-way latency = RTT/2 = {one_way:.3f} ms (zmq REQ/REP p50, 64 B)", "",
             ("| op | algorithm | size | steps | steps x RTT/2 ms | steps x RTT ms | "
              "median ms | median / (steps x RTT/2) |"), "|---|---|---:|---:|---:|---:|---:|---:|"]
    smallest = {}
    for r in record["results"]:
        key = (r["op"], r.get("chosen", r["algorithm"]))
        if r["op"] not in LATENCY_OPS:
            continue
        if key not in smallest or r["nbytes"] < smallest[key]["nbytes"]:
            smallest[key] = r
    hosts = len(host_sizes(record))
    for (op, algorithm), r in smallest.items():
        try:
            if algorithm == "hierarchical":              # its cross-host steps only
                cross = tuning.cross_algorithm(op, r["nbytes"], hosts, max(host_sizes(record)))
                steps = cm.steps(op, cross, hosts)
            else:
                steps = cm.steps(op, algorithm, world)
        except (ValueError, KeyError):
            continue
        floor = steps * one_way
        lines.append(f"| {op} | {algorithm} | {human(r['nbytes'])} | {steps} | {floor:.3f} | "
                     f"{2 * floor:.3f} | {r['median_s'] * 1e3:.3f} | "
                     f"{r['median_s'] * 1e3 / floor if floor else float('nan'):.2f} |")
    return lines


def headline(record: dict, link: dict) -> str:
    rows = [r for r in record["results"] if r["op"] == "all_reduce"]
    if not rows:
        return ""
    big = max(rows, key=lambda r: (r["nbytes"], r["algorithm"] == "default"))
    return (f"all_reduce {human(big['nbytes'])} ({big.get('chosen', big['algorithm'])}): busbw "
            f"{big['busbw_MBps']:.1f} MB/s = {big['busbw_of_goodput']:.0%} of one link's goodput "
            f"({link['goodput_MBps']:.1f} MB/s), {big['busbw_of_ring_goodput']:.0%} of the "
            f"goodput with every link busy ({min(link['ring_goodput_MBps']):.1f} MB/s); target "
            f">= 90 %")


def report(profile: str, record: dict, link: dict, table_min_bytes: int) -> str:
    rate = LINE_RATE.get(profile.split()[0])
    daemon = record.get("delay_daemon_cpu")
    title = f"line rate {rate / 1e6:g} Mbit/s" if rate else "unshaped"
    every = ", ".join(f"{g:.1f}" for g in link["ring_goodput_MBps"])
    nproc = record.get("nproc", 1)
    lines = [f"## {profile}: {record['world'] // nproc} hosts x {nproc} "
             f"rank{'s' if nproc > 1 else ''}, {title}", "",
             (f"link: RTT p50 {link['rtt_ms']:.3f} ms; goodput one link "
              f"{link['goodput_MBps']:.1f} MB/s; every link at once {every} MB/s (delay daemon "
              f"{_share(link['delay_daemon_cpu_ring'])} of a core); delay daemon during the "
              f"sweep {_share(daemon)} of a core"), "",
             headline(record, link), "", *bandwidth_table(record, table_min_bytes), "",
             *latency_table(record, link), ""]
    return "\n".join(lines)


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


# -- main -------------------------------------------------------------------------------


@click.command()
@click.option("--profile", "profiles", multiple=True, type=click.Choice(list(LINE_RATE)),
              help="netlab profile(s) to run, in order [default: gige, wifi, raw; with "
                   "--reuse: the lab as it is].")
@click.option("--hosts", default=3, show_default=True, help="Lab hosts.")
@click.option("--nproc", default=1, show_default=True, help="Ranks per lab host.")
@click.option("--hierarchical", is_flag=True, help="Time the two-level algorithms against "
              "every flat one, forced, in the same run (ops: HIERARCHICAL_OPS).")
@click.option("--interleave", is_flag=True, help="Time every op:algorithm at one size before "
              "the next size (fair comparisons of ringrt's pick with the forced ones).")
@click.option("--prefix", default="rrb", show_default=True, help="netlab lab prefix.")
@click.option("--reuse", is_flag=True, help="Use the lab PREFIX that is already up; leave it.")
@click.option("--ops", default=DEFAULT_OPS, show_default=True,
              help="op:algorithm list for benchmarks.cluster._sweep.")
@click.option("--algorithms", is_flag=True, help="Also time every forced algorithm (for "
              "benchmarks/cluster/cost_model.py).")
@click.option("--min-bytes", default="4", show_default=True)
@click.option("--max-bytes", default="64MiB", show_default=True)
@click.option("--factor", default=4, show_default=True, help="Size step.")
@click.option("--budget", default=1.0, show_default=True, help="Seconds per case.")
@click.option("--table-min-bytes", default="1MiB", show_default=True,
              help="Smallest size in the bandwidth tables.")
@click.option("--link-messages", default=200, show_default=True,
              help="1 MiB messages per goodput measurement.")
@click.option("--shape", "shape_extra", default="", metavar="OPTIONS",
              help="Extra `netlab shape` options after the profile, e.g. '--delay 0ms' (no "
                   "delay daemon) to tell the lab's limits from ringrt's.")
@click.option("--env", "env_items", multiple=True, metavar="K=V",
              help="Extra environment for the ranks, e.g. RINGRT_SEGMENT_BYTES=2097152.")
@click.option("--json", "json_path", default=str(RESULTS), show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the results.")
@click.option("--from-json", "saved", type=click.Path(exists=True, dir_okay=False),
              help="Only print the report of results saved earlier (no lab needed).")
@click.option("--security-cost", "security", is_flag=True,
              help="Instead of the sweep: benchmarks.overhead.security_cost (all_reduce with no "
                   "authentication, PLAIN and CurveZMQ, interleaved) on each profile; writes "
                   "benchmarks/results/security_cost_PROFILE.json.")
def main(profiles, hosts, nproc, hierarchical, interleave, prefix, reuse, ops, algorithms, min_bytes,
         max_bytes, factor, budget, table_min_bytes, link_messages, shape_extra, env_items, json_path, saved, security):
    """Benchmark collectives across netlab hosts (see the module docstring)."""
    if saved:
        record = json.loads(Path(saved).read_text())
        machine = record["machine"]
        click.echo(f"{record['date']}, "
                   f"{machine if isinstance(machine, str) else _machine.summary(machine)}\n")
        for run in record["runs"]:
            click.echo(report(run["profile"], run, run["link"], parse_size(table_min_bytes)))
        return
    if not NETLAB.is_file():
        raise click.ClickException(f"netlab not found at {NETLAB} (set $NETLAB)")
    profiles = list(profiles) or ([None] if reuse else ["gige", "wifi", "raw"])
    env = dict(item.split("=", 1) for item in env_items)
    if hierarchical:
        ops = HIERARCHICAL_OPS
    sweep_args = ["--ops", ops + ("," + ALGORITHM_OPS if algorithms else ""), "--min-bytes",
                  min_bytes, "--max-bytes", max_bytes, "--factor", str(factor), "--budget",
                  str(budget)] + (["--interleave"] if interleave else [])
    runs = []
    with lab_for(hosts, prefix, reuse) as lab:
        for profile in profiles:
            if profile is not None:
                lab.shape(profile, tuple(shape_extra.split()))
                profile += f" {shape_extra}" if shape_extra else ""
            if security:
                security_cost(lab, profile or "as-shaped", min_bytes, max_bytes, factor, budget,
                              env)
                continue
            click.echo(f"== {profile or 'as shaped'}: measuring the link", err=True)
            link = measure_link(lab, link_messages)
            click.echo(f"   {link}", err=True)
            click.echo(f"== {profile or 'as shaped'}: sweep", err=True)
            record = run_sweep(lab, sweep_args, env, timeout=1800, nproc=nproc)
            annotate(record, link)
            runs.append({"profile": profile or "as shaped", "link": link, **record})
            click.echo(report(profile or "as shaped", record, link, parse_size(table_min_bytes)))
    if not security:
        save(json_path, runs, env)


def security_cost(lab: Lab, profile: str, min_bytes: str, max_bytes: str, factor: int,
                  budget: float, env: dict) -> None:
    """benchmarks.overhead.security_cost across the lab's hosts; its JSON goes to the results."""
    click.echo(f"== {profile}: security cost", err=True)
    args = ["-b", min_bytes.removesuffix("iB"), "-e", max_bytes.removesuffix("iB"), "-f",
            str(factor), "--budget", str(budget), "--rounds", "5"]
    record, share = run_module(lab, "benchmarks.overhead.security_cost", args, "--json", env, 3600)
    record.update(profile=profile, hosts=len(lab.names), delay_daemon_cpu=share)
    path = RESULTS.with_name(f"security_cost_{profile.split()[0]}.json")
    path.write_text(json.dumps(record, indent=1))
    click.echo(f"wrote {path}", err=True)


def save(json_path: str, runs: list[dict], env: dict) -> None:
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": _machine.describe(),
              "env": env, "runs": runs}
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(record, indent=1))
    click.echo(f"wrote {json_path}", err=True)


if __name__ == "__main__":
    main()
