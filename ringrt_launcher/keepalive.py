"""Elastic agents keep alive in the store, and watch the other nodes of their generation.

Why (docs/chaos.md, round 18; the failure pytorch#111646 reports): workers notice a lost peer
by their heartbeats, but only once their process group is up. When a node's ``ringrun`` dies
after a generation formed and before its workers finished ``init_process_group``, the other
nodes' workers wait in the rendezvous for its ranks until the rendezvous timeout (300 s by
default), and nothing else in the job notices. So each agent bumps a counter in the store,
every ``RINGRT_HEARTBEAT_INTERVAL`` seconds, and while its workers run it reads the counters of
the generation's other nodes: one that has not moved for ``RINGRT_HEARTBEAT_TIMEOUT`` seconds
is lost, and the agent restarts its workers into the next generation (``elastic.py``).

A counter rather than a timestamp: the hosts' clocks need not agree, each watcher times the
silence on its own monotonic clock. The bumps come from a thread of their own, so that an agent
busy in its main thread (stopping its workers for ``--grace`` seconds) is not taken for lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

ALIVE_KEY = "ringrun/elastic/alive/{agent}"      # beside ringrt.elastic's STATE_KEY, AGENTS_KEY


def alive_key(agent: int) -> str:
    return ALIVE_KEY.format(agent=agent)


class Keepalive:
    """Bumps agent ``agent``'s counter every ``interval`` seconds from a daemon thread, over a
    store connection of its own (a ``RoundStore`` from ``connect``), until :meth:`close`."""

    def __init__(self, connect: Callable, agent: int, interval: float):
        self.rounds, self.key, self.interval = connect(), alive_key(agent), interval
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"keepalive-{agent}",
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> None:
        """Stop bumping; waits ``timeout`` at most for a bump in flight."""
        self._closing.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                self.rounds.add(self.key, 1)        # None (store out of reach): next time
                if self._closing.wait(self.interval):
                    return
        finally:
            self.rounds.close()


class SilenceWatch:
    """Which of ``agents`` have not moved their counters for more than ``timeout`` seconds.

    Pure: the caller reads the counters and says when (``now``, monotonic seconds).
    """

    def __init__(self, agents: Iterable[int], timeout: float, now: float):
        self.timeout = timeout
        self.seen = {agent: (None, now) for agent in agents}    # agent -> (counter, moved at)

    def silent(self, counters: dict[int, int] | None, now: float) -> list[int]:
        """Take the counters just read and return the agents silent for too long.

        ``counters`` None: the store could not be reached, so nothing is known about anyone;
        every clock starts again rather than blaming the nodes for the store's absence.
        """
        if counters is None:
            self.seen = {agent: (None, now) for agent in self.seen}
            return []
        for agent, count in counters.items():
            if count != self.seen[agent][0]:
                self.seen[agent] = (count, now)
        return [agent for agent, (_, moved) in self.seen.items() if now - moved > self.timeout]
