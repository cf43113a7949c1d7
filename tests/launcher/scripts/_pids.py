"""Shared by the test workers: record this process's pid where the test can find it."""

import os
import time

PID_DIR_VAR = "LAUNCHER_TEST_PID_DIR"


def record_pid(name: str, pid: int | None = None) -> None:
    """Write ``$LAUNCHER_TEST_PID_DIR/{name}.pid`` atomically (no-op without the variable)."""
    pid_dir = os.environ.get(PID_DIR_VAR)
    if not pid_dir:
        return
    path = os.path.join(pid_dir, f"{name}.pid")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid() if pid is None else pid))
    os.replace(path + ".tmp", path)


def wait_for_workers(timeout: float = 20.0) -> None:
    """Block until every local worker has recorded its pid, so all are running."""
    pid_dir = os.environ[PID_DIR_VAR]
    want = int(os.environ["LOCAL_WORLD_SIZE"])
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        names = os.listdir(pid_dir)
        if sum(1 for n in names if n.startswith("rank") and n.endswith(".pid")) >= want:
            return
        time.sleep(0.01)
    raise SystemExit(f"not every worker started within {timeout} s")
