"""benchmarks/common/_noise.py (the machine's interruptions, kept with tail figures) and the
collective benchmark's per-round warm-up: pure logic on a scripted clock, no sockets."""

import numpy as np

from benchmarks.common import _measure, _noise


def _scripted_clock(monkeypatch, readings):
    """Make the probe read ``readings`` (ns), then a time past its end, forever."""
    values = iter(readings)
    last = [readings[-1]]

    def clock():
        value = next(values, None)
        if value is None:
            last[0] += 10**10
            return last[0]
        return value

    monkeypatch.setattr(_noise.time, "perf_counter_ns", clock)


def test_interruptions_counts_each_gap_in_its_bucket(monkeypatch):
    # one second of 100 ns steps with gaps of 0.5 (not counted), 2, 5 and 20 µs
    now, readings = 0, [0]
    for gap in [100] * 10 + [500, 2_000, 100, 5_000, 100, 20_000] + [100] * 10:
        now += gap
        readings.append(now)
    readings[-1] = 10**9                                    # the last reading: 1 s later
    _scripted_clock(monkeypatch, readings)
    found = _noise.interruptions(seconds=1.0)
    gaps_ns = 2_000 + 5_000 + 20_000 + (10**9 - readings[-2])   # the jump to 1 s is a gap too
    assert found["per_s"] == {"1-4us": 1, "4-16us": 1, ">16us": 2}
    assert found["total_per_s"] == 4
    assert found["longest_us"] == round((10**9 - readings[-2]) / 1e3, 1)
    assert found["stolen_pct"] == round(gaps_ns / 1e9 * 100, 2)


def test_interruptions_of_a_quiet_loop_counts_none(monkeypatch):
    readings = list(range(0, 10**6 + 1, 100))               # 1 ms of 100 ns steps
    _scripted_clock(monkeypatch, readings)
    found = _noise.interruptions(seconds=0.001)
    assert found["total_per_s"] == 0 and found["stolen_pct"] == 0
    assert found["loop_step_ns"] == 100
    assert found["per_s"] == {"1-4us": 0, "4-16us": 0, ">16us": 0}


def test_interruptions_on_the_real_clock_is_plausible():
    found = _noise.interruptions(seconds=0.05)
    assert 0 < found["loop_step_ns"] < 5_000
    assert 0 <= found["stolen_pct"] <= 100 and found["seconds"] >= 0.05


def test_summary_names_the_worst_rank():
    quiet = {"per_s": {"1-4us": 10, "4-16us": 0, ">16us": 1}, "total_per_s": 11,
             "stolen_pct": 0.01, "longest_us": 20.0}
    noisy = {"per_s": {"1-4us": 5000, "4-16us": 3000, ">16us": 400}, "total_per_s": 8400,
             "stolen_pct": 6.2, "longest_us": 900.0}
    text = _noise.summary([quiet, noisy])
    assert "8,400/s" in text and "6.2 %" in text and "400/s over 16 µs" in text
    assert "longest 900 µs" in text
    assert _noise.summary([]) == "noise not measured"


def test_each_timed_round_starts_with_untimed_calls():
    calls, barriers = [], []
    times = _measure._timed(lambda: calls.append(1), lambda: barriers.append(1), 5, warm=3)
    assert len(calls) == 8 and len(barriers) == 2
    assert times.shape == (5,) and np.all(times >= 0)


def test_a_periodic_source_of_long_gaps_shows_as_its_period(monkeypatch):
    # 20 ms of 100 ns steps, with a 30 µs gap at 4, 8, 12 and 16 ms (a 250 Hz timer tick)
    readings, now = [0], 0
    while now < 20_000_000:
        now += 30_000 if now % 4_000_000 < 100 and now > 0 else 100
        readings.append(now)
    _scripted_clock(monkeypatch, readings)
    found = _noise.interruptions(seconds=0.02)
    assert found["per_s"][">16us"] == 200                  # 4 in 0.02 s
    assert found["long_gap_median_us"] == 30.0
    assert found["long_gap_period_ms"] == 4.0
    assert "mostly every 4 ms" in _noise.summary([found])
