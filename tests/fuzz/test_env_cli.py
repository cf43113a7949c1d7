"""Fuzz what a job is told from outside: environment variables (``ringrt._settings``,
``ringrt._env`` and the modules that read one through them) and ``ringrun``'s command-line
values.

A variable either yields a value its consumer can use, or a ``ValueError`` naming the
variable (the documented error for bad input, see ringrt/errors.py); ``ringrun`` either builds
its frozen config or exits with a usage error (click's ``UsageError``, exit status 2).
Nothing is allocated from a number before it is bounded.
"""

from __future__ import annotations

import math

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringrt_launcher.cli import main
from ringrt_launcher.config import LaunchConfig, build_config
from ringrt import _env, _settings
from ringrt._algorithms import choice
from ringrt._observe.recorder import FlightRecorder
from tests.fuzz._tried import tried

# what a shell can put in a variable: no NUL; numbers in every spelling
env_text = st.one_of(
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=12),
    st.integers(-2**70, 2**70).map(str), st.floats().map(str),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e999", " 7 ", "0x10", "1_000", "٣", "",
                     "1" * 5000, "tcp", "on", "OFF", "yes", "2.5"]))


def _value_or_value_error(read):
    try:
        return read()
    except ValueError as exc:           # it names what was wrong, not just the parser's words
        assert any(word in str(exc) for word in ("=", "must", "init_method", "rank")), str(exc)
        return exc


@given(env_text)
def test_number_readers_return_numbers_or_value_errors(raw):
    tried("environment variables")
    env = {"X": raw}
    value = _value_or_value_error(lambda: _settings.env_int("X", env=env))
    assert isinstance(value, (int, ValueError)) or (value is None and not raw)
    value = _value_or_value_error(lambda: _settings.env_float("X", 1.0, env=env))
    assert isinstance(value, ValueError) or not math.isnan(value)
    value = _value_or_value_error(lambda: _settings.env_seconds("X", 1.0, env=env))
    assert isinstance(value, ValueError) or (math.isfinite(value) and value > 0)
    assert _settings.env_flag("X", env=env) in (True, False)
    value = _value_or_value_error(
        lambda: _settings.env_choice("X", ("auto", "sockets"), "auto", env))
    assert isinstance(value, ValueError) or value in ("auto", "sockets")
    value = _value_or_value_error(lambda: _settings.env_encrypt({"RINGRT_ENCRYPT": raw}))
    assert isinstance(value, ValueError) or value in (True, False, None)


JOB_VARS = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
            "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_JOB_ID", "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "RINGRT_RESTART_COUNT",
            "RINGRT_STORE_HOSTED", "RINGRT_ENCRYPT", "RINGRT_INSECURE_TCP"]
small_ints = st.integers(-3, 8).map(str)


@given(st.dictionaries(st.sampled_from(JOB_VARS), small_ints | env_text, max_size=8),
       st.sampled_from([None, "env://", "tcp://127.0.0.1:29500", "tcp://[::1]:1", "tcp://h:0",
                        "tcp://h:99999", "tcp://[::1", "file:///x", "tcp://:5", ""])
       | st.text(max_size=16))
def test_resolve_job_returns_a_usable_spec_or_a_value_error(env, init_method):
    tried("environment variables")
    env["RINGRT_TOKEN"] = "fuzz"          # never create a token file from a fuzzed HOME
    spec = _value_or_value_error(lambda: _env.resolve_job(init_method, None, None, env=env))
    if isinstance(spec, ValueError):
        return
    assert 0 <= spec.rank < spec.world_size
    assert 0 <= spec.master_port <= 65535 and spec.master_addr


@given(env_text)
def test_component_variables_are_bounded_before_use(raw):
    tried("environment variables")
    choice.forced_algorithms.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RINGRT_ALGO", raw)
        patch.setenv("RINGRT_FLIGHT_RECORDER", raw)
        forced = _value_or_value_error(choice._forced)
        assert isinstance(forced, (dict, ValueError))
        recorder = _value_or_value_error(FlightRecorder)
        assert isinstance(recorder, ValueError) or recorder.size <= 1 << 20
    choice.forced_algorithms.cache_clear()


def test_a_flight_recorder_of_a_trillion_records_is_refused_before_allocating(monkeypatch):
    monkeypatch.setenv("RINGRT_FLIGHT_RECORDER", str(10**12))
    with pytest.raises(ValueError, match="RINGRT_FLIGHT_RECORDER"):
        FlightRecorder()


@pytest.mark.parametrize("raw", ["nan", "-1", "0", "inf"])
def test_heartbeat_durations_must_be_positive_and_finite(raw):
    """NaN made the heartbeat thread die on int(nan); a negative interval blocked its poll."""
    with pytest.raises(ValueError, match="RINGRT_HEARTBEAT_INTERVAL"):
        _settings.env_seconds("RINGRT_HEARTBEAT_INTERVAL", 0.5, {"RINGRT_HEARTBEAT_INTERVAL": raw})


# --- ringrun's options -------------------------------------------------------------------

cli_text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
                   max_size=10)
# addresses that resolve (or fail) without asking a name server
addresses = st.sampled_from(["127.0.0.1", "::1", "localhost", "0.0.0.0", "999.1.1.1", "[::1]",
                             "1.2.3", "-", ""])
options = st.lists(st.one_of(
    st.tuples(st.sampled_from(["-n", "--nnodes", "--node-rank", "--master-port",
                               "--max-restarts", "--join-timeout", "--last-call", "--grace",
                               "--timeout", "--local-ranks-filter", "--token"]),
              st.integers(-3, 70000).map(str) | cli_text
              | st.sampled_from(["2:4", "4:2", "0:1", "1:", ":", "1,2", "0,,1", "nan", "inf"])),
    st.tuples(st.sampled_from(["--master-addr", "--bind-addr"]), addresses),
    st.tuples(st.sampled_from(["--quiet-ranks", "--cpu-bind", "--encrypt", "-m",
                               "--no-python"]))), max_size=6)


@given(options)
def test_ringrun_options_build_a_config_or_a_usage_error(opts):
    tried("ringrun options")
    argv = [part for option in opts for part in option] + [__file__, "--x"]
    try:
        with main.make_context("ringrun", argv) as ctx:
            config = build_config(ctx.params)
    except click.exceptions.ClickException as exc:
        assert exc.exit_code == 2 and exc.format_message()
        return
    except click.exceptions.Exit:      # --help / --version
        return
    assert isinstance(config, LaunchConfig) and config.nproc >= 1
    assert 0 <= config.node_rank < config.nnodes and 0 <= config.master_port <= 65535
