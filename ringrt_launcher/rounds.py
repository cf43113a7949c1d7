"""Elastic membership rounds: pure transitions of the record, and the store that holds it.

Every agent (each node's ``ringrun --nnodes MIN:MAX``) changes the one record under
``ringrt.elastic.STATE_KEY`` only by compare-and-set: it reads the record, computes the new one
with a pure function below, and writes it only if nobody changed it in between (else it
retries on what it read). The store serialises those writes, so every agent sees the same
sequence of records: no two agents can close a round differently or open two next rounds.

A round (generation ``gen``) is *open* while agents join it; it *closes* when MAX joined, or
when at least MIN joined and ``--last-call`` seconds passed; the members are then put in
node-rank order (the store's host first, then by agent id, i.e. arrival order). An agent that
finds the round closed is put on ``waiting``; it joins the next round, which the members open
when their workers end (a failure, a lost node, or a restart the workers asked for).
"""

from __future__ import annotations

from ringrt.elastic import STATE_KEY, RoundState

STORE_OP_TIMEOUT = 3.0          # s per store request from an agent; a lost store fails fast


def initial(min_nodes: int, max_nodes: int) -> RoundState:
    return RoundState(gen=0, min_nodes=min_nodes, max_nodes=max_nodes)


def joined(state: RoundState, agent: int, nproc: int, hosts_store: bool) -> RoundState:
    """``agent`` is a member of the open round, or waits for the next (closed or full)."""
    if agent in state.members or agent in state.waiting:
        return state
    known = dict(state.nproc, **{str(agent): nproc})
    hosts = state.hosts + (agent,) if hosts_store and agent not in state.hosts else state.hosts
    if state.open and len(state.members) < state.max_nodes:
        return state.replaced(members=state.members + (agent,), nproc=known, hosts=hosts)
    return state.replaced(waiting=state.waiting + (agent,), nproc=known, hosts=hosts)


def closed(state: RoundState) -> RoundState:
    """The round closed: members in node-rank order (store host first, then arrival)."""
    order = sorted(state.members, key=lambda agent: (agent not in state.hosts, agent))
    return state.replaced(open=False, members=tuple(order))


def ready_to_close(state: RoundState, min_since: float | None, last_call: float,
                   now: float) -> bool:
    """MAX joined, or MIN joined at ``min_since`` and the last call has passed."""
    if not state.open:
        return False
    if len(state.members) >= state.max_nodes:
        return True
    return min_since is not None and len(state.members) >= state.min_nodes \
        and now - min_since >= last_call


def next_round(state: RoundState, failure: str, max_restarts: int) -> RoundState:
    """Open generation ``gen + 1`` (everyone re-joins). ``failure``: why, if it is one; a
    failure beyond ``max_restarts`` ends the job instead."""
    failures = state.failures + bool(failure)
    if failures > max_restarts:
        return state.replaced(failed=f"{failure}; --max-restarts {max_restarts} used up")
    return RoundState(gen=state.gen + 1, min_nodes=state.min_nodes, max_nodes=state.max_nodes,
                      hosts=state.hosts, nproc=state.nproc, failures=failures)


class RoundStore:
    """An agent's view of the record: compare-and-set updates over a store client that is
    re-opened after any error (a cut link, a store host that went away).

    Every method returns None instead of raising when the store cannot be reached.
    """

    def __init__(self, host: str, port: int, token: str, curve):
        self.host, self.port, self.token, self.curve = host, port, token, curve
        self._store = None

    def update(self, change, first: RoundState) -> RoundState | None:
        """Apply ``change(state) -> state`` atomically; ``first`` if the record is missing."""
        return self._guarded(lambda store: self._compare_and_set(store, change, first))

    def read(self) -> RoundState | None:
        return self._guarded(lambda store: RoundState.decode(store.get(STATE_KEY))
                             if store.check([STATE_KEY]) else None)

    def add(self, key: str, amount: int) -> int | None:
        return self._guarded(lambda store: store.add(key, amount))

    def counters(self, keys: dict) -> dict | None:
        """``{name: key}`` -> ``{name: the counter under key}`` (0 for one never added to)."""
        return self._guarded(lambda store: {name: store.add(key, 0) for name, key in
                                            keys.items()})

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _compare_and_set(self, store, change, first: RoundState) -> RoundState:
        raw = store.compare_set(STATE_KEY, b"", first.encode())
        while True:
            state = RoundState.decode(raw)
            wanted = change(state)
            if wanted == state:
                return state
            encoded = wanted.encode()
            raw = store.compare_set(STATE_KEY, raw, encoded)
            if raw == encoded:
                return wanted

    def _guarded(self, operation):
        from ringrt.errors import AuthenticationError, StoreError, TimeoutError

        try:
            if self._store is None:
                self._store = self._connect()
            result = operation(self._store)
        except AuthenticationError:
            raise
        except (StoreError, TimeoutError, OSError):
            self.close()
            return None
        return result

    def _connect(self):
        from ringrt.store import Store

        return Store(self.host, self.port, self.token, timeout=STORE_OP_TIMEOUT,
                     curve=self.curve, rank=None)
