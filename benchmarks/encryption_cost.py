"""What CurveZMQ encryption costs: all_reduce over tcp, plaintext vs encrypted, same job.

    ringrun -n 2 -m benchmarks.encryption_cost [--json FILE]

Each rank builds two process groups over tcp (shared memory is off: it carries no network
traffic to encrypt) through the launcher's store: one plaintext, one with CurveZMQ keys from
RINGRT_TOKEN. Sizes alternate between the two so that machine noise hits both alike. Times are
medians over iterations of the slowest rank's time.
"""

from __future__ import annotations

import json
import os
import time

import click
import numpy as np

SIZES = [4, 16 << 10, 1 << 20, 16 << 20]


def _group(encrypt: bool, tag: str):
    from ringrt._curve import derive_keys
    from ringrt._process_group import ProcessGroup
    from ringrt.store import Store

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    token = os.environ.get("RINGRT_TOKEN", "")
    curve = derive_keys(token) if encrypt else None
    store = Store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), token, rank=rank,
                  timeout=60)
    return ProcessGroup(store, rank, world, 60, namespace=f"bench-{tag}", curve=curve), store


def _median_time(group, nbytes: int, iters: int) -> float:
    import ringrt

    x = np.zeros(max(1, nbytes // 4), np.float32)
    for _ in range(3):
        ringrt.all_reduce(x, group=group)
    times = np.empty(iters)
    for i in range(iters):
        ringrt.barrier(group=group)
        start = time.perf_counter()
        ringrt.all_reduce(x, group=group)
        times[i] = time.perf_counter() - start
    slowest = times.copy()
    ringrt.all_reduce(slowest, op=ringrt.ReduceOp.MAX, group=group)
    return float(np.median(slowest))


@click.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results here.")
def main(json_path):
    """Compare plaintext and encrypted all_reduce over tcp (run under ringrun)."""
    os.environ["RINGRT_TRANSPORT"] = "tcp"
    plain, plain_store = _group(False, "plain")
    secret, secret_store = _group(True, "curve")
    rows = []
    for nbytes in SIZES:
        iters = 200 if nbytes < (1 << 20) else 20
        rows.append((nbytes, _median_time(plain, nbytes, iters),
                     _median_time(secret, nbytes, iters)))
    if plain.rank == 0:
        print(f"{'bytes':>10} {'plain us':>10} {'curve us':>10} {'ratio':>7}")
        for nbytes, a, b in rows:
            print(f"{nbytes:>10} {a * 1e6:>10.1f} {b * 1e6:>10.1f} {b / a:>7.2f}")
        if json_path:
            with open(json_path, "w") as f:
                json.dump([{"bytes": n, "plain_s": a, "curve_s": b} for n, a, b in rows], f,
                          indent=1)
    for group, store in ((plain, plain_store), (secret, secret_store)):
        group.close()
        store.close()


if __name__ == "__main__":
    main()
