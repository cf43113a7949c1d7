"""ringrt.stats(): what each rank did, how, and what its transport refused."""

import pytest

from tests.world import run_world


@pytest.mark.timeout(60)
def test_stats_count_ops_bytes_algorithms_and_transport():
    world = run_world("tests.dist.workers:stats_counts", 3, timeout=40)
    for result in world.ranks:
        stats = result.values["stats"]
        ops = stats["ops"]
        member = result.rank in (0, 1)
        assert ops["all_reduce"]["calls"] == 3 + member
        assert ops["all_reduce"]["bytes"] == 3 * 4000 + 32 * member
        assert ops["all_reduce"]["failed"] == 0 and ops["all_reduce"]["seconds"] > 0
        assert ops["broadcast"] == {**ops["broadcast"], "calls": 1, "bytes": 80}
        assert ops["new_group"]["calls"] == 1
        # the world and the subgroup [0, 1] (one host): shared memory (docs/groups.md)
        assert stats["algorithms"]["all_reduce/shm"] == 3 + member
        assert stats["shm_groups"]["arenas"] == member
        assert ops.get("send", {}).get("calls", 0) == (result.rank == 0)
        assert ops.get("recv", {}).get("calls", 0) == (result.rank == 1)
        transport = stats["transport"]
        assert set(transport["routes"].values()) == {"ipc"} and len(transport["routes"]) == 2
        assert transport["tcp_mechanism"] is None and transport["connections_refused"] == 0
        assert transport["dropped_frames"] == 0
        assert stats["shm"]["waits"] >= 0 and stats["store"] is None    # the harness hosts it
        assert stats["shm"]["missed_wakeups"] == 0 and isinstance(stats["shm"]["by_op"], dict)
