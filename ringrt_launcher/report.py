"""What ``ringrun`` tells the user when a worker fails, a restart begins, or it is signalled."""

from __future__ import annotations

import signal

SIGNAL_EXIT_BASE = 128         # shell convention: killed by signal N -> exit status 128 + N


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_status(returncode: int) -> int:
    """Popen's returncode (negative for a signal) as a shell exit status (128 + signal)."""
    return SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``killed by signal SIGKILL (exit status 137)``."""
    if returncode < 0:
        name, status = signal_name(-returncode), exit_status(returncode)
        return f"killed by signal {name} (exit status {status})"
    return f"exit code {returncode}"


def failure_summary(rank: int, local_rank: int, node_rank: int, pid: int, returncode: int,
                    stderr_tail: list[str], stopped: int) -> str:
    """The report printed when the first worker fails (``stopped``: workers stopped for it)."""
    lines = [f"rank {rank} (local rank {local_rank} on node {node_rank}, pid {pid}) failed first: "
             f"{describe_exit(returncode)}"]
    if stderr_tail:
        count = len(stderr_tail)
        lines.append(f"last {count} line{'s' if count > 1 else ''} of rank {rank}'s stderr:")
        lines.extend(f"  | {line}" for line in stderr_tail)
    else:
        lines.append(f"rank {rank} wrote nothing to stderr")
    if stopped:
        lines.append(f"stopped the other {stopped} running worker(s) of this node")
    return "\n".join(lines)


def restart_notice(rank: int, returncode: int, restart: int, max_restarts: int,
                   nproc: int) -> str:
    return (f"restart {restart} of {max_restarts}: restarting all {nproc} workers of this node "
            f"with RINGRT_RESTART_COUNT={restart} because rank {rank} failed "
            f"({describe_exit(returncode)})")


def signal_notice(signum: int, running: int, grace: float) -> str:
    return (f"received {signal_name(signum)}; stopping {running} worker(s) "
            f"(SIGTERM, then SIGKILL after {grace:g} s)")
