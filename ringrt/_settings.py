"""The settings registry: every ``RINGRT_*`` variable, and the one place that reads them.

Each setting is a field of the frozen :class:`Settings` with its variable's name, how it is
parsed, its default and what it means. ``init_process_group`` calls :meth:`Settings.read`
once and hands the result down (store client, transport, shared memory, heartbeats,
algorithm choice, observer); ``ringrun`` reads the one it needs the same way. Two settings
are read at each use instead (:data:`PER_USE`: ``RINGRT_ALGO``, ``RINGRT_SEGMENT_BYTES``),
because a process may change them between ops. :func:`read_setting` reads one variable
now, for those, for public entry points that run without a process group
(``ringrt.Store(token=None)``, ``ringrt.elastic.generation()``) and for internals built on
their own (tests build a ``ShmArena`` or call ``choose`` directly).

:data:`SETTINGS` is the table: docs/environment.md is generated from it (``make env-docs``)
and tests/unit/test_settings.py checks that every ``RINGRT_*`` name in the code is in it.
The variables a launcher sets for its workers (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
SLURM, Open MPI and PMI ones) are not settings: :mod:`ringrt._env` reads those.

The parsers below say what was wrong and with which variable; a bad value fails
``init_process_group`` with that message.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

# -- parsers (name, environment, default) -> value -------------------------------------------


def env_int(name: str, default: int | None = None, env=None) -> int | None:
    """Read an integer environment variable, with a clear error if it is not one."""
    env = os.environ if env is None else env
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def env_float(name: str, default: float | None = None, env=None) -> float | None:
    """Read a float environment variable (seconds, thresholds), with a clear error; NaN is
    not a number here (every comparison with it is false: a timeout of NaN never expires)."""
    env = os.environ if env is None else env
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from None
    return value


def env_seconds(name: str, default: float, env=None) -> float:
    """Read a positive, finite duration in seconds (heartbeat interval and timeout): NaN, a
    negative or zero value, or infinity would make a loop spin, block forever or never fire."""
    value = env_float(name, default, env)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"environment variable {name}={value!r} must be a positive, finite "
                         "number of seconds")
    return value


def env_flag(name: str, env=None) -> bool:
    """True when the variable is set to 1/true/yes/on."""
    env = os.environ if env is None else env
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def env_choice(name: str, choices: tuple[str, ...], default: str, env=None) -> str:
    """Read a variable that must be one of ``choices`` (default when unset), clearly."""
    env = os.environ if env is None else env
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ValueError(f"environment variable {name}={raw!r} must be one of "
                         f"{', '.join(choices)}")
    return raw


def env_encrypt(env=None) -> bool | None:
    """``RINGRT_ENCRYPT``: 1 -> True (CurveZMQ on every socket), 0 -> False (token-checked
    but not encrypted), unset -> None (the default: encrypted across hosts)."""
    env = os.environ if env is None else env
    raw = env.get("RINGRT_ENCRYPT", "").strip().lower()
    if raw == "":
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"RINGRT_ENCRYPT={raw!r}: use 1 (encrypt everything), 0 (authenticate "
                     "only) or leave it unset (encrypt across hosts)")


def _text(name: str, env, default):
    """The value as written; unset or empty: the default."""
    return env.get(name) or default


def _exact(name: str, env, default):
    """The value as written, empty included (compared as is: ``RINGRT_TRACE_PING=1``)."""
    return env.get(name, default)


def _choice(*choices: str):
    return lambda name, env, default: env_choice(name, choices, default, env)


def _transport(name: str, env, default):
    mode = env.get(name, default).lower()
    if mode not in ("auto", "tcp", "ipc"):
        raise ValueError(f"RINGRT_TRANSPORT={mode!r}: use auto, tcp or ipc")
    return mode


def _two_level(name: str, env, default):
    forced = env.get(name, default)
    if forced not in ("", "direct", "shares", "leaders"):
        raise ValueError(f"RINGRT_TWO_LEVEL={forced!r} is not valid; choose leaders, direct "
                         "or shares")
    return forced


def _trace(name: str, env, default):
    value = env.get(name, "").strip()
    return os.path.abspath(value) if value else default


def _generation(name: str, env, default):
    """A bare ``int()``, as ``ringrt.elastic.generation()`` has always parsed it."""
    value = env.get(name)
    return int(value) if value else default


def _int(name, env, default):
    return env_int(name, default, env)


def _float(name, env, default):
    return env_float(name, default, env)


def _seconds(name, env, default):
    return env_seconds(name, default, env)


def _flag(name, env, default):
    return env_flag(name, env)


def _encrypt(name, env, default):
    return env_encrypt(env)


# -- the registry ---------------------------------------------------------------------------


def _setting(name: str, parse: Callable, default: Any, doc: str, shown: str = "") -> Any:
    """One field of :class:`Settings`: its variable, parser, default and meaning (``shown``:
    the default as the docs say it, when the value alone would not)."""
    return field(default=default, metadata={"name": name, "parse": parse, "doc": doc,
                                            "shown": shown})


KiB, MiB = 1 << 10, 1 << 20


@dataclass(frozen=True)
class Settings:
    """Every ``RINGRT_*`` setting of this process, read once (``Settings()``: the defaults)."""

    timeout: float | None = _setting(
        "RINGRT_TIMEOUT", _float, None,
        "default collective timeout in seconds, set by `ringrun --timeout`", "300")
    transport: str = _setting(
        "RINGRT_TRANSPORT", _transport, "auto",
        "`auto` (ipc on one host, tcp across hosts), `tcp` or `ipc`")
    bind_addr: str | None = _setting(
        "RINGRT_BIND_ADDR", _text, None,
        "address to listen on", "the interface that routes to `MASTER_ADDR`")
    two_level: str = _setting(
        "RINGRT_TWO_LEVEL", _two_level, "",
        "two-level all_reduce: `leaders` (reduce to a host leader, leaders all-reduce, "
        "broadcast), `direct` (every rank all-reduces in its host, then swaps host sums with "
        "a rank of every other host) or `shares` (even hosts: every local rank all-reduces a "
        "share across hosts)", "leaders")
    host_id: str | None = _setting(
        "RINGRT_HOST_ID", _text, None,
        "this rank's host identity; ranks with the same one are \"on one host\" (ipc "
        "sockets, a shared-memory arena)", "the hostname")
    heartbeat_interval: float = _setting(
        "RINGRT_HEARTBEAT_INTERVAL", _seconds, 0.5, "heartbeat period in seconds")
    heartbeat_timeout: float = _setting(
        "RINGRT_HEARTBEAT_TIMEOUT", _seconds, 5.0,
        "seconds of silence before a peer is lost")
    ipc_dir: str | None = _setting(
        "RINGRT_IPC_DIR", _text, None,
        "where ipc socket files go; at most 78 bytes on Linux, 74 on macOS (AF_UNIX path "
        "limits), else init fails saying so; `ringrun` sets a fresh one per job", "/tmp")
    shm_open: bool = _setting(
        "RINGRT_SHM_OPEN", _flag, False,
        "`1`: shared-memory segments through POSIX `shm_open` names, as on macOS, instead "
        "of files in `/dev/shm` ([Platforms](platforms.md))")
    no_futex: bool = _setting(
        "RINGRT_NO_FUTEX", _flag, False,
        "`1`: ranks wait for peers by polling instead of futexes, as on macOS "
        "([Platforms](platforms.md)); read when ringrt is imported")
    no_fast_path: bool = _setting(
        "RINGRT_NO_FAST_PATH", _flag, False,
        "`1`: small all_reduces over shared memory take the general path instead of the "
        "fused one ([Performance](performance.md)); same results, for comparison or diagnosis")
    no_native: bool = _setting(
        "RINGRT_NO_NATIVE", _flag, False,
        "`1`: ringrt's optional C module (the small all_reduce's steps, built at install "
        "where a C compiler is found) is not used; the same steps run in Python, with the "
        "same results ([Performance](performance.md)); read when ringrt is imported")
    generation: int | None = _setting(
        "RINGRT_GENERATION", _generation, None,
        "set by `ringrun --nnodes MIN:MAX`: the membership round of these workers "
        "(`ringrt.elastic.generation()`)", "unset")
    restart_count: int = _setting(
        "RINGRT_RESTART_COUNT", _int, 0,
        "set by `ringrun`: how often the job was restarted (`--max-restarts`)")
    store_hosted: bool = _setting(
        "RINGRT_STORE_HOSTED", _flag, False,
        "set by `ringrun`: the launcher hosts the rendezvous store, so rank 0 must not")
    token: str = _setting(
        "RINGRT_TOKEN", _exact, "",
        "the job's shared secret (`ringrun` sets a fresh one; unset: the user's own, see "
        "`RINGRT_TOKEN_FILE` and [Security](security.md))", "unset")
    token_file: str | None = _setting(
        "RINGRT_TOKEN_FILE", _text, None,
        "where the user's own token lives when `RINGRT_TOKEN` is unset",
        "`$XDG_CONFIG_HOME/ringrt/token`, else `~/.config/ringrt/token`")
    encrypt: bool | None = _setting(
        "RINGRT_ENCRYPT", _encrypt, None,
        "unset: CurveZMQ to other hosts, token-checked PLAIN on loopback; `1`: CurveZMQ on "
        "every socket and the store; `0`: PLAIN everywhere (same on every rank)", "unset")
    insecure_tcp: bool = _setting(
        "RINGRT_INSECURE_TCP", _flag, False,
        "`1`: no authentication on tcp links (the unauthenticated baseline, for benchmarks "
        "only)")
    no_shm: bool = _setting(
        "RINGRT_NO_SHM", _flag, False, "`1`: never use shared memory, even on one host")
    shm_slot_bytes: int = _setting(
        "RINGRT_SHM_SLOT_BYTES", _int, 16 * MiB,
        "shared-memory staging slot per rank (at least 64 KiB)", "16 MiB")
    shm_group_slot_bytes: int | None = _setting(
        "RINGRT_SHM_GROUP_SLOT_BYTES", _int, None,
        "the most a subgroup's shared-memory slot per rank may grow to",
        "`RINGRT_SHM_SLOT_BYTES`")
    p2p: str = _setting(
        "RINGRT_P2P", _choice("auto", "sockets"), "auto",
        "`auto` (point-to-point over shared memory when the job runs on one host) or "
        "`sockets` (same on every rank; one `sockets` makes every rank use sockets)")
    shm_spin_us: int = _setting(
        "RINGRT_SHM_SPIN_US", _int, 50,
        "how long a shared-memory collective spins before sleeping, in µs")
    shm_max_spin_us: int = _setting(
        "RINGRT_SHM_MAX_SPIN_US", _int, 400,
        "up to how long that spin may grow while every rank has a core, in µs")
    p2p_spin_us: int = _setting(
        "RINGRT_P2P_SPIN_US", _int, 50,
        "how long a point-to-point receive spins before sleeping, in µs (more for large "
        "arrays when every rank has a core)")
    trace: str | None = _setting(
        "RINGRT_TRACE", _trace, None,
        "record the timeline into this file (rank files `FILE.rank{R}.trace`, merged by "
        "rank 0 or by `ringrun --trace`)", "off")
    trace_merge: str | None = _setting(
        "RINGRT_TRACE_MERGE", _exact, None,
        "set by `ringrun --trace` to `launcher`: ringrun merges the rank files, not rank 0",
        "unset")
    trace_ping: str | None = _setting(
        "RINGRT_TRACE_PING", _exact, None,
        "`1`: while tracing, every rank measures its clock offset to rank 0, even on rank "
        "0's host (for tests)", "unset")
    flight_recorder: int = _setting(
        "RINGRT_FLIGHT_RECORDER", _int, 64,
        "ops each rank keeps for its flight-recorder dump (0: none)")
    flight_dir: str | None = _setting(
        "RINGRT_FLIGHT_DIR", _text, None,
        "where dumps are written as `rank{R}.{error,signal}.json` (set by ringrun)",
        "stderr only")
    debug: bool = _setting(
        "RINGRT_DEBUG", _flag, False,
        "`1`: rank 0 logs each algorithm decision once per (op, size class) to stderr")
    torch_async: str = _setting(
        "RINGRT_TORCH_ASYNC", _choice("auto", "thread", "inline"), "auto",
        "torch backend: `auto` (DDP's all-reduces inline when there are fewer than 2 cores "
        "per rank), `thread` or `inline`")

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every setting from ``env`` (default: this process's environment), parsed now.

        Raises:
            ValueError: a variable's value is not one it can take (the message names it).
        """
        env = os.environ if env is None else env
        return cls(**{f.name: f.metadata["parse"](f.metadata["name"], env, f.default)
                      for f in fields(cls)})


class Setting(NamedTuple):
    """One row of the registry, as the docs and the tests see it."""

    name: str
    when: str               # "init": a field of Settings; "use": read at each use; "harness"
    type: str
    default: Any
    doc: str
    shown: str = ""         # the default as the docs say it
    parse: Callable | None = None
    attribute: str = ""     # its field of Settings ("init" only)

    @property
    def harness(self) -> bool:
        return self.when == "harness"


# Read at each use, not once: a process may change them between ops, and the test tables and
# benchmark sweeps do, to run every algorithm in one job (tests/dist/hier_workers.py,
# tests/netlab/worker.py, benchmarks/_cluster_sweep.py). Each value is parsed once.
PER_USE = (
    Setting("RINGRT_ALGO", "use", "str", "",
            "force algorithms, e.g. `all_reduce=ring,broadcast=binomial`; "
            "`all_reduce=hierarchical` forces two levels where the group spans hosts (also "
            "broadcast, reduce, all_gather, barrier); read at every collective",
            "chosen by size", _exact),
    Setting("RINGRT_SEGMENT_BYTES", "use", "int", 512 * KiB,
            "largest message payload (at least 1024); read at every collective", "512 KiB",
            _int),
)

# Read by tests/ and benchmarks/ only, never by ringrt: listed so that the docs name them.
HARNESS = tuple(Setting(name, "harness", kind, default, doc, shown) for name, kind, default, doc,
                shown in (
    ("RINGRT_FUZZ", "str", "ci", "fuzz tests' budget: `ci` or `long` (`make fuzz`)", ""),
    ("RINGRT_FUZZ_EXAMPLES", "int", 20000, "examples per fuzz test under `long`", ""),
    ("RINGRT_FUZZ_COUNTS", "str", None,
     "file the fuzz run writes the inputs tried per parser to", "unset"),
    ("RINGRT_RECIPES", "str", None, "`1`: run tests/recipes (`make test-recipes`)", "unset"),
    ("RINGRT_RECIPES_INSTALL", "str", None,
     "`1`: the recipe tests may pip-install their framework into .venv-recipes", "unset"),
    ("RINGRT_RECIPE_JOB", "str", None,
     "set in the processes a recipe test starts, to find them again", "unset"),
    ("RINGRT_SPEC", "str", None, "the API spec tests/unit/test_api.py checks `__all__` against",
     "`../shared/spec/API.md`"),
    ("RINGRT_TEST_SHUFFLE", "int", None,
     "a seed: the suite's test files, and the tests of each, run in an order shuffled by it "
     "(`make flake-hunt`)", "unset"),
    ("RINGRT_SUITE_START", "str", None,
     "`fork`: torch's own test suite starts its ranks by fork", "spawn"),
))

SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.metadata["name"], "init", str(f.type), f.default, f.metadata["doc"],
            f.metadata["shown"], f.metadata["parse"], f.name)
    for f in fields(Settings)) + PER_USE + HARNESS
_BY_NAME = {s.name: s for s in SETTINGS if not s.harness}


class _QuickEnviron:
    """``os.environ.get`` for the settings read at every collective (:data:`PER_USE`).

    ``os.environ.get`` of a variable that is not set raises and catches a KeyError inside,
    which costs about as much as a small collective's own bookkeeping; on POSIX the mapping
    keeps its contents in a bytes dict (``os.environ._data``, which every change through
    ``os.environ`` updates) that answers the same question directly. Elsewhere, or if that
    attribute is ever gone, this is plain ``os.environ.get``."""

    def __init__(self):
        data = getattr(os.environ, "_data", None) if os.name == "posix" else None
        self._data = data if isinstance(data, dict) else None
        self._keys = {name: os.fsencode(name) for name in _PER_USE_NAMES}

    def get(self, name: str, default: Any = None) -> Any:
        if self._data is None or name not in self._keys:
            return os.environ.get(name, default)
        value = self._data.get(self._keys[name])
        return default if value is None else os.fsdecode(value)


_PER_USE_NAMES = frozenset(s.name for s in PER_USE)
_QUICK_ENVIRON = _QuickEnviron()


def read_setting(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting's value now, parsed as :meth:`Settings.read` parses it (or, for those in
    :data:`PER_USE`, as their users expect).

    Raises:
        KeyError: ``name`` is not a ``RINGRT_*`` setting of ringrt.
        ValueError: its value is not one it can take.
    """
    entry = _BY_NAME[name]
    if env is None:
        env = _QUICK_ENVIRON if name in _PER_USE_NAMES else os.environ
    return entry.parse(name, env, entry.default)


# -- docs/environment.md --------------------------------------------------------------------

_PAGE = """\
# Environment variables

<!-- Generated from ringrt/_settings.py by `make env-docs`; edit the registry, not this page
(tests/unit/test_settings.py checks the two agree). -->

ringrt reads these once, when `init_process_group` runs, unless the row says otherwise
(`ringrun` reads `RINGRT_IPC_DIR` when it starts, and an elastic `ringrun` the two heartbeat
settings, for the agents' keepalives: [Elastic jobs](elastic.md)). The variables a launcher sets to place a rank (`RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, and SLURM's, Open MPI's and PMI's) are described
in [Launching](launching.md).

| variable | meaning | default |
|---|---|---|
{rows}

## Test and benchmark harness

Read by `tests/` and `benchmarks/` only; ringrt itself ignores them.

| variable | meaning | default |
|---|---|---|
{harness}
"""


def _row(setting: Setting) -> str:
    default = setting.shown or (f"`{setting.default}`" if setting.default not in (None, "")
                                else "unset")
    if isinstance(setting.default, bool) and not setting.shown:
        default = "`1`" if setting.default else "off"
    return f"| `{setting.name}` | {setting.doc} | {default} |"


def markdown() -> str:
    """docs/environment.md, from the registry."""
    return _PAGE.format(rows="\n".join(_row(s) for s in SETTINGS if not s.harness),
                        harness="\n".join(_row(s) for s in SETTINGS if s.harness))

