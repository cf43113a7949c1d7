"""``ringrun``: the command line. Turns click options into a LaunchConfig and runs the job."""

from __future__ import annotations

import ipaddress

import click

from ringrt_launcher.config import LaunchConfig, NodeCount, build_config
from ringrt_launcher.env import ipc_directory
from ringrt_launcher.output import Console
from ringrt_launcher.rendezvous import host_store, release_store

EPILOG = """\b
Examples:
  # one host, 4 workers (store on 127.0.0.1, free port, fresh token)
  ringrun -n 4 train.py --epochs 10
  ringrun -n 4 -m mypkg.train --epochs 10

\b
  # two hosts, 4 workers each (8 ranks); run on every host with its --node-rank
  export RINGRT_TOKEN=$(python -c 'import secrets;print(secrets.token_hex(16))')  # same on all
  ringrun --nnodes 2 --node-rank 0 --master-addr node0 --master-port 29500 -n 4 train.py
  ringrun --nnodes 2 --node-rank 1 --master-addr node0 --master-port 29500 -n 4 train.py

\b
  # restart the whole group up to 3 times; the script resumes from its checkpoint
  # when RINGRT_RESTART_COUNT > 0; keep per-rank logs; 5-minute collective timeout
  ringrun -n 4 --max-restarts 3 --log-dir logs/ --timeout 300 train.py

\b
Workers get RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR,
MASTER_PORT, RINGRT_TOKEN, RINGRT_RESTART_COUNT, RINGRT_STORE_HOSTED=1, PYTHONUNBUFFERED=1,
RINGRT_IPC_DIR (a per-job directory, removed at the end, unless already set), RINGRT_TIMEOUT
(with --timeout), RINGRT_ENCRYPT=1 (with --encrypt), RINGRUN_TTY=1 (when ringrun's stdout is a
terminal), OMP_NUM_THREADS=1 (with -n > 1; with --bind core|numa the rank's CPU count; unless
already set), RINGRT_FLIGHT_DIR (where they dump their flight recorders; kept in DIR/flight
with --log-dir) and RINGRT_TRACE (with --trace).

\b
  # pin each rank to its own cores (NUMA node) and print the map; python -m ringrt_launcher
  # is the same command as ringrun
  ringrun -n 4 --bind core --verbose train.py

\b
When a worker fails (a collective's --timeout included) or ringrun is stopped, the workers
still running are sent SIGUSR1 first: each dumps its last ops and Python stacks, and the
summary says which op each rank is in, and which rank is elsewhere (and where). To see that
for a job that is still running, without stopping it: kill -USR1 <ringrun's pid>.

\b
Exit status: 0 when every worker succeeded; the first failed worker's exit code (128 + N if
it was killed by signal N); 128 + N when ringrun itself got signal N (SIGINT, SIGTERM,
SIGHUP: the workers get SIGTERM, then SIGKILL after --grace); 2 for a usage error.

\b
Elastic jobs (torchrun's --nnodes MIN:MAX): run the same command on every host; the one whose
--master-addr is a local address hosts the store and is node 0. The job starts once MIN hosts
joined (waiting --last-call seconds for more, up to MAX); a lost host makes the others restart
their workers at the new world size, and a host that joins later is admitted when the workers
ask at a checkpoint (ringrt.elastic.membership_changed()). Workers also get RINGRT_GENERATION.
  ringrun --nnodes 2:4 --master-addr node0 --master-port 29500 --max-restarts 3 -n 4 \\
      examples/train.py --elastic --ckpt-dir /shared/ckpt
"""


@click.command(
    epilog=EPILOG,
    context_settings={"allow_interspersed_args": False, "help_option_names": ["-h", "--help"],
                      "max_content_width": 100},
)
@click.option("-n", "--nproc-per-node", "nproc", type=click.IntRange(min=1), default=1,
              show_default=True, metavar="N", help="Workers to start on this host.")
@click.option("-m", "--module", is_flag=True,
              help="SCRIPT is a module name, run as `python -m MODULE`.")
@click.option("--no-python", is_flag=True,
              help="SCRIPT is an executable, run directly instead of with python.")
@click.option("--nnodes", type=NodeCount(), default="1", show_default=True, metavar="M|MIN:MAX",
              help="Hosts in the job; start ringrun on each with its --node-rank. MIN:MAX: an "
                   "elastic job (no --node-rank; see Elastic jobs below).")
@click.option("--node-rank", type=click.IntRange(min=0), default=None, metavar="K",
              help="This host's index: its ranks are K*N .. K*N+N-1. [default: 0]")
@click.option("--master-addr", metavar="HOST",
              help="Node 0's address, where the store listens (required with --nnodes > 1). "
                   "[default: 127.0.0.1]")
@click.option("--master-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Store port. [default: a free port on a single host, 29500 with --nnodes > 1]")
@click.option("--bind-addr", metavar="ADDR",
              help="Address node 0 binds the store to, e.g. 0.0.0.0 for every interface. "
                   "[default: the address --master-addr resolves to]")
@click.option("--token", envvar="RINGRT_TOKEN", show_envvar=True, metavar="SECRET",
              help="Shared secret every worker presents to the store; required with --nnodes > 1 "
                   "(prefer the variable: options show up in `ps`). [default: a fresh random one "
                   "per job on a single host]")
@click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="K", help="Restart the whole group up to K times after a failure, with "
                                "RINGRT_RESTART_COUNT incremented (elastic: K failures of the "
                                "whole job, a lost node included; admitting nodes is free).")
@click.option("--join-timeout", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, metavar="SECONDS",
              help="Elastic: how long to wait for MIN nodes, or for an unreachable store, "
                   "before giving up.")
@click.option("--last-call", type=click.FloatRange(min=0), default=10.0, show_default=True,
              metavar="SECONDS",
              help="Elastic: once MIN nodes joined a round, how long it stays open for more "
                   "(up to MAX).")
@click.option("--grace", type=click.FloatRange(min=0), default=3.0, show_default=True,
              metavar="SECONDS", help="Time between SIGTERM and SIGKILL when stopping workers.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Default collective timeout of the job (sets RINGRT_TIMEOUT).")
@click.option("--log-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Also write each rank's output, unprefixed, to DIR/rank{RANK}.log "
                   "(stdout and stderr, not \\r progress updates; emptied at start, appended "
                   "across restarts).")
@click.option("--local-ranks-filter", metavar="RANKS",
              help="Show only these local ranks' output on the console, e.g. 0,2 (the failure "
                   "summary and log files still cover every rank).")
@click.option("--quiet-ranks", is_flag=True,
              help="Same as --local-ranks-filter 0: show only local rank 0 of this host "
                   "(rank 0 on a single host).")
@click.option("--bind", type=click.Choice(["none", "core", "numa"]), default="none",
              show_default=True,
              help="Place each local rank on CPUs of its own (as torchrun's --numa-binding, "
                   "mpirun's --bind-to): core: an equal slice of the CPUs ringrun may use "
                   "(os.sched_getaffinity), OMP_NUM_THREADS = its size; numa: ranks spread "
                   "over the NUMA nodes, each on its node's CPUs, OMP_NUM_THREADS = its share. "
                   "More ranks than CPUs: ranks share CPUs, one thread each (a warning says "
                   "so). Pays off on many-core and NUMA servers (docs/binding.md).")
@click.option("--cpu-bind", is_flag=True,
              help="Pin local rank i to the i-th (mod count) CPU this process may use (one "
                   "CPU per rank; --bind core gives each its share).")
@click.option("-v", "--verbose", is_flag=True,
              help="Print the binding map (each rank's CPUs, NUMA node and OMP_NUM_THREADS).")
@click.option("--trace", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Record every rank's ops, DDP buckets and optimizer steps and merge them "
                   "into FILE, a Chrome trace / Perfetto timeline (also after a failure; "
                   "workers get RINGRT_TRACE). With --nnodes > 1: FILE.node{K}.json per host.")
@click.option("--encrypt", is_flag=True,
              help="CurveZMQ on every socket, the store and loopback tcp included (keys "
                   "derived from the job token; RINGRT_ENCRYPT=1). Without it, links to "
                   "other hosts are already encrypted and every link is token-checked.")
@click.version_option(package_name="ringrt", prog_name="ringrun")
@click.argument("target", metavar="SCRIPT")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def main(ctx: click.Context, **options) -> None:
    """Run SCRIPT [ARGS]... as N ringrt workers on this host (see the examples below).

    Everything after SCRIPT (or after the module name with -m) is passed to the script
    untouched, including arguments that look like ringrun options. Each output line appears
    as "[RANK] line"; text ending in a carriage return (a progress bar) is redrawn in place.
    When a worker fails, the others are stopped, a summary names the failed rank, and ringrun
    exits with that worker's status.
    """
    config = build_config(options)
    # Imported only now: it pulls in ringrt (numpy, zmq), an import that --help and usage
    # errors should not pay for.
    from ringrt_launcher.flight import FlightDumps
    from ringrt_launcher.supervisor import Supervisor
    from ringrt_launcher.trace import finish as finish_trace

    console = Console()
    if config.elastic:
        from ringrt_launcher.elastic import run_elastic
        ctx.exit(run_elastic(config, console))
    _warn_unreachable_store(config, console)
    server = host_store(config)
    status = None
    try:
        port = server.port if server is not None else config.master_port
        with ipc_directory() as ipc_dir, FlightDumps.for_job(config.log_dir) as flight:
            status = Supervisor(config, port, console, ipc_dir, flight).run()
    finally:
        release_store(server, config, console, succeeded=status == 0)
        if config.trace:
            finish_trace(config.trace, console, map(config.global_rank, range(config.nproc)),
                         config.nnodes, config.node_rank)
    ctx.exit(status)


def _warn_unreachable_store(config: LaunchConfig, console: Console) -> None:
    """Several hosts and a loopback store address: only this host can reach the store."""
    if config.nnodes > 1 and config.hosts_store and _is_loopback(config.store_host):
        console.note(f"warning: the store listens on {config.store_host} (loopback): workers "
                     "on other hosts cannot reach it; give --master-addr this host's network "
                     "address (or --bind-addr 0.0.0.0)")


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
