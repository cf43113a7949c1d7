"""Tier 1: the α-β-γ cost model (ringrt/_algorithms/cost_model.py): formulas, fitting, choices, and
agreement with ringrt's real algorithms run on a simulated single-port network."""

import math
import queue
import threading

import numpy as np
import pytest

from ringrt._algorithms import choice, direct, ring, tree
from ringrt._algorithms import cost_model as cm

ALPHA, BETA, GAMMA = 1e-4, 1e-8, 1e-9         # 0.1 ms, 100 MB/s, 1 GB/s of reduction


# -- formulas ---------------------------------------------------------------------------


def test_ring_all_reduce_is_reduce_scatter_plus_all_gather():
    for n in (2, 3, 4, 7):
        whole = cm.terms("all_reduce", "ring", 1 << 20, n)
        parts = cm.terms("reduce_scatter", "ring", 1 << 20, n) + \
            cm.terms("all_gather", "ring", 1 << 20, n)
        assert whole.as_tuple() == pytest.approx(parts.as_tuple())
        assert whole == cm.Terms(2 * (n - 1), 2 * (n - 1) / n * (1 << 20), (n - 1) / n * (1 << 20))


@pytest.mark.parametrize("n, rounds, folded", [(2, 1, False), (3, 1, True), (4, 2, False),
                                               (6, 2, True), (8, 3, False), (1000, 9, True)])
def test_recursive_doubling_rounds_and_fold(n, rounds, folded):
    t = cm.terms("all_reduce", "recursive_doubling", 100, n)
    assert t.alpha == rounds + 2 * folded
    assert t.beta == 100 * (rounds + 2 * folded)
    assert t.gamma == 100 * (rounds + folded)


def test_world_of_one_costs_nothing():
    for op, algorithms in cm.ALGORITHMS.items():
        for algorithm in algorithms:
            assert cm.predict(op, algorithm, 1 << 20, 1, ALPHA, BETA, GAMMA, ALPHA) == 0.0


def test_chain_broadcast_streams_big_messages_at_link_speed():
    big = 1 << 30
    assert cm.predict("broadcast", "chain", big, 64, ALPHA, BETA) == \
        pytest.approx(big * BETA, rel=0.05)
    # one segment: store-and-forward through n-1 hops
    assert cm.terms("broadcast", "chain", 1000, 5) == cm.Terms(4, 4000)
    assert cm.predict("broadcast", "binomial", big, 64, ALPHA, BETA) == \
        pytest.approx(6 * big * BETA, rel=0.01)


def test_ring_bus_bandwidth_approaches_the_link():
    big, n = 1 << 34, 16
    seconds = cm.predict("all_reduce", "ring", big, n, ALPHA, BETA)
    assert big / seconds * cm.bus_factor("all_reduce", n) == pytest.approx(1 / BETA, rel=1e-3)


def test_steps_is_the_latency_floor():
    assert cm.steps("all_reduce", "ring", 3) == 4
    assert cm.steps("all_reduce", "recursive_doubling", 3) == 3
    assert cm.steps("barrier", "recursive_doubling", 8) == 3
    assert cm.steps("broadcast", "binomial", 5) == 3
    assert cm.steps("all_gather", "direct", 100) == 1
    assert cm.predict("all_reduce", "ring", 0, 3, ALPHA, BETA) == pytest.approx(4 * ALPHA)


def test_unknown_algorithm_and_bad_world_raise():
    with pytest.raises(ValueError, match="unknown algorithm"):
        cm.terms("all_reduce", "chain", 10, 4)
    with pytest.raises(ValueError, match="world"):
        cm.terms("all_reduce", "ring", 10, 0)


def test_model_algorithms_exist_in_ringrt():
    for op, algorithms in cm.ALGORITHMS.items():
        assert set(algorithms) <= set(choice.CHOICES.get(op, ("recursive_doubling",))), op


def test_bus_factor_matches_nccl_tests():
    assert cm.bus_factor("all_reduce", 4) == 1.5
    assert cm.bus_factor("all_gather", 4) == cm.bus_factor("reduce_scatter", 4) == 0.75
    assert cm.bus_factor("broadcast", 4) == 1.0
    assert cm.bus_factor("barrier", 4) == cm.bus_factor("all_reduce", 1) == 0.0


def test_link_beta_of_gigabit_is_the_measured_goodput():
    assert 1 / cm.link_beta(1e9) == pytest.approx(119.5e6)
    assert cm.link_beta(10e9) == pytest.approx(cm.link_beta(1e9) / 10)


# -- choosing ---------------------------------------------------------------------------


def test_best_algorithm_switches_from_latency_to_bandwidth_optimal():
    assert cm.best_algorithm("all_reduce", 8, 16, ALPHA, BETA) == "recursive_doubling"
    assert cm.best_algorithm("all_reduce", 64 << 20, 16, ALPHA, BETA) == "ring"
    assert cm.best_algorithm("broadcast", 8, 16, ALPHA, BETA) == "binomial"
    assert cm.best_algorithm("broadcast", 64 << 20, 16, ALPHA, BETA) == "chain"
    assert cm.best_algorithm("all_gather", 8, 16, ALPHA, BETA) == "direct"
    assert cm.best_algorithm("all_gather", 8, 16, ALPHA, BETA, overhead=ALPHA) == "ring"


def test_crossover_is_where_best_algorithm_changes():
    size = cm.crossover("all_reduce", "recursive_doubling", "ring", 8, ALPHA, BETA, GAMMA)
    assert size is not None
    assert cm.best_algorithm("all_reduce", size // 2, 8, ALPHA, BETA, GAMMA) == \
        "recursive_doubling"
    assert cm.best_algorithm("all_reduce", size, 8, ALPHA, BETA, GAMMA) == "ring"
    # with free bandwidth the ring's 2(n-1) steps never pay off
    assert cm.crossover("all_reduce", "recursive_doubling", "ring", 8, ALPHA, 0.0,
                        max_bytes=1 << 30) is None


# -- fitting ----------------------------------------------------------------------------


def synthetic(alpha, beta, gamma, overhead=0.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    points = []
    for op, algorithm in [("all_reduce", "ring"), ("all_reduce", "recursive_doubling"),
                          ("all_gather", "ring"), ("all_gather", "direct"),
                          ("reduce_scatter", "ring"), ("broadcast", "chain")]:
        for world in (2, 3, 4):
            for nbytes in (4, 1 << 10, 1 << 16, 1 << 20, 1 << 24):
                t = cm.predict(op, algorithm, nbytes, world, alpha, beta, gamma, overhead)
                t *= 1 + noise * rng.standard_normal()
                points.append(cm.Measurement(op, algorithm, nbytes, world, t))
    return points


def test_fit_recovers_exact_parameters():
    fit = cm.fit(synthetic(2e-4, 8.4e-9, 5e-10, 3e-5), free=cm.PARAMETERS)
    assert (fit.alpha, fit.beta, fit.gamma, fit.overhead) == \
        pytest.approx((2e-4, 8.4e-9, 5e-10, 3e-5), rel=1e-6)
    assert fit.rms_relative_error < 1e-9 and fit.points == 90
    assert fit.bandwidth == pytest.approx(1 / 8.4e-9)


def test_fit_with_noise_is_close_and_never_negative():
    fit = cm.fit(synthetic(2e-4, 8.4e-9, 0.0, noise=0.05, seed=3))
    assert fit.alpha == pytest.approx(2e-4, rel=0.15)
    assert fit.beta == pytest.approx(8.4e-9, rel=0.15)
    assert fit.gamma >= 0.0 and fit.overhead == 0.0
    assert 0.0 < fit.rms_relative_error < 0.15


def test_fit_keeps_fixed_parameters():
    points = synthetic(2e-4, 8.4e-9, 5e-10)
    fit = cm.fit(points, free=("alpha", "beta"), fixed={"gamma": 5e-10})
    assert (fit.alpha, fit.beta, fit.gamma) == pytest.approx((2e-4, 8.4e-9, 5e-10), rel=1e-6)


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        cm.fit([])
    with pytest.raises(ValueError, match="unknown parameters"):
        cm.fit(synthetic(1e-4, 1e-8, 0), free=("delta",))
    with pytest.raises(ValueError, match="> 0"):
        cm.fit([cm.Measurement("all_reduce", "ring", 8, 2, 0.0)])


# -- the model against ringrt's real algorithms -----------------------------------------


class SimulatedExchange:
    """Runs one rank of a real ringrt algorithm on the model's single-port network: a send of
    b bytes occupies its sender for α + bβ and arrives then; a receive waits for the
    arrival; combining b bytes takes bγ. The rank's clock is its finish time."""

    def __init__(self, rank, size, mailboxes):
        self.rank, self.size, self.mailboxes, self.clock = rank, size, mailboxes, 0.0

    def send(self, peer, data, snapshot=False):
        payload = bytes(memoryview(data).cast("B"))
        self.clock += ALPHA + len(payload) * BETA
        self.mailboxes[self.rank, peer].put((self.clock, payload))

    def recv(self, peer):
        arrival, payload = self.mailboxes[peer, self.rank].get(timeout=10)
        self.clock = max(self.clock, arrival)
        return payload

    def as_array(self, buffer, dtype, count, peer):
        array = np.frombuffer(buffer, dtype=dtype)
        assert array.size == count
        return array

    def combine(self, into, other):
        self.clock += into.nbytes * GAMMA
        into += other

    def finish(self):
        pass


def simulate(world, body):
    """Run ``body(ex)`` on ``world`` threads; return the slowest rank's finish time."""
    mailboxes = {(a, b): queue.Queue() for a in range(world) for b in range(world)}
    exchanges = [SimulatedExchange(r, world, mailboxes) for r in range(world)]
    errors = []

    def run(ex):
        try:
            body(ex)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ex,)) for ex in exchanges]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors, errors
    return max(ex.clock for ex in exchanges)


def _all_reduce_ring(ex, count):
    ring.all_reduce_ring(ex, np.ones(count * ex.size, np.float32), ex.combine)


def _reduce_scatter_ring(ex, count):
    ring.reduce_scatter_ring(ex, ring.split(np.ones(count * ex.size, np.float32), ex.size),
                             ex.combine)


def _all_gather_ring(ex, count):
    ring.all_gather_ring(ex, ring.split(np.ones(count * ex.size, np.float32), ex.size))


def _all_gather_direct(ex, count):
    outputs = [np.empty(count, np.float32) for _ in range(ex.size)]
    direct.all_gather_direct(ex, outputs, np.ones(count, np.float32))


def _reduce_scatter_direct(ex, count):
    inputs = [np.ones(count, np.float32) for _ in range(ex.size)]
    direct.reduce_scatter_direct(ex, inputs, np.empty(count, np.float32), ex.combine)


def _recursive_doubling(ex, count):
    tree.all_reduce_recursive_doubling(ex, np.ones(count * ex.size, np.float32), ex.combine)


def _binomial_broadcast(ex, count):
    tree.broadcast_binomial(ex, np.ones(count * ex.size, np.float32), 0)


CASES = [("all_reduce", "ring", _all_reduce_ring),
         ("reduce_scatter", "ring", _reduce_scatter_ring),
         ("all_gather", "ring", _all_gather_ring),
         ("all_gather", "direct", _all_gather_direct),
         ("reduce_scatter", "direct", _reduce_scatter_direct),
         ("all_reduce", "recursive_doubling", _recursive_doubling),
         ("broadcast", "binomial", _binomial_broadcast)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("op, algorithm, body", CASES, ids=[f"{o}-{a}" for o, a, _ in CASES])
@pytest.mark.parametrize("world", [2, 3, 4, 5, 8])
def test_model_matches_ringrt_algorithm_on_simulated_network(monkeypatch, op, algorithm, body,
                                                             world):
    """One segment per message (large RINGRT_SEGMENT_BYTES), so the model is exact; direct
    algorithms post n-1 messages back to back, i.e. o = α on a single-port network."""
    monkeypatch.setenv("RINGRT_SEGMENT_BYTES", str(1 << 30))
    count = 1000                                     # float32 elements per rank's block
    nbytes = count * 4 * world
    simulated = simulate(world, lambda ex: body(ex, count))
    predicted = cm.predict(op, algorithm, nbytes, world, ALPHA, BETA, GAMMA, overhead=ALPHA)
    assert simulated == pytest.approx(predicted, rel=1e-9), (simulated, predicted)
    assert not math.isnan(predicted)
