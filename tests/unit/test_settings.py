"""The settings registry (ringrt/_settings.py) is the one home of ringrt's ``RINGRT_*``
variables: every name the code mentions is in it, the docs' table is generated from it, and
nothing else in ringrt reads the environment (ringrt/_env.py reads only the variables a
launcher sets: RANK, WORLD_SIZE, MASTER_ADDR, SLURM_*, OMPI_*, ...)."""

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import ringrt
from ringrt import _settings
from ringrt._settings import SETTINGS, Settings, read_setting

REPO = Path(__file__).resolve().parents[2]
CODE = [*sorted((REPO / "ringrt").rglob("*.py")), *sorted((REPO / "ringrt_launcher").rglob("*.py")),
        REPO / "_ringrt_autoload.py"]
NAME = re.compile(r"RINGRT_[A-Z0-9][A-Z0-9_]*")
REGISTERED = {s.name for s in SETTINGS}
# The modules that may touch os.environ: the registry, the job resolver (launcher-provided
# variables only), the launcher's one reader (it copies its environment into the workers'),
# and the autoload hook (it runs in every Python process and must not import ringrt).
READERS = {"ringrt/_settings.py", "ringrt/_env.py", "ringrt_launcher/env.py",
           "_ringrt_autoload.py"}


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def _reads_environment(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "os" and \
                {a.name for a in node.names} & {"environ", "getenv", "environb"}:
            return True
    return False


def test_every_ringrt_variable_in_the_code_is_in_the_registry():
    found = {}
    for path in CODE:
        for name in NAME.findall(path.read_text()):
            found.setdefault(name, _relative(path))
    missing = {name: where for name, where in found.items() if name not in REGISTERED}
    assert missing == {}, "add these to ringrt/_settings.py (then make env-docs)"


def test_every_setting_is_used_by_the_code_and_every_harness_variable_by_the_harness():
    code = "".join(p.read_text() for p in CODE if p.name != "_settings.py")
    harness = "".join(p.read_text() for folder in ("tests", "benchmarks")
                      for p in (REPO / folder).rglob("*.py")) + (REPO / "Makefile").read_text()

    def used(setting) -> bool:
        if setting.harness:
            return setting.name in harness
        if setting.when == "use":
            return f'read_setting("{setting.name}")' in code
        return setting.name in code or re.search(rf"\.{setting.attribute}\b", code) is not None

    assert [s.name for s in SETTINGS if not used(s)] == []


def test_the_docs_table_is_generated_from_the_registry():
    page = (REPO / "docs" / "environment.md").read_text()
    assert page == _settings.markdown(), "docs/environment.md is stale: run make env-docs"


@pytest.mark.parametrize("path", CODE, ids=_relative)
def test_only_the_registry_and_the_job_resolver_read_the_environment(path):
    if _relative(path) in READERS:
        return
    assert not _reads_environment(ast.parse(path.read_text())), \
        f"{_relative(path)} reads the environment: add a setting to ringrt/_settings.py and " \
        "hand it down (or read it there with read_setting)"


def test_the_job_resolver_reads_no_ringrt_variable_itself():
    tree = ast.parse((REPO / "ringrt" / "_env.py").read_text())
    keys = [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and NAME.fullmatch(node.value)]
    assert keys == []


def test_defaults_read_from_an_empty_environment_are_the_declared_ones():
    assert Settings.read({}) == Settings()
    for setting in SETTINGS:
        if not setting.harness:
            assert read_setting(setting.name, {}) == setting.default, setting.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().timeout = 1.0


@pytest.mark.parametrize("name, raw, value", [
    ("RINGRT_TIMEOUT", "12.5", 12.5),
    ("RINGRT_TRANSPORT", "TCP", "tcp"),
    ("RINGRT_ALGO", "all_reduce=ring", "all_reduce=ring"),
    ("RINGRT_TWO_LEVEL", "shares", "shares"),
    ("RINGRT_SEGMENT_BYTES", "4096", 4096),
    ("RINGRT_HEARTBEAT_TIMEOUT", "2", 2.0),
    ("RINGRT_IPC_DIR", "", None),
    ("RINGRT_NO_SHM", "yes", True),
    ("RINGRT_ENCRYPT", "0", False),
    ("RINGRT_P2P", " Sockets ", "sockets"),
    ("RINGRT_GENERATION", "3", 3),
    ("RINGRT_TRACE_PING", "1", "1"),
    ("RINGRT_TORCH_ASYNC", "inline", "inline"),
])
def test_a_setting_is_parsed_into_its_field_or_where_it_is_used(name, raw, value):
    assert read_setting(name, {name: raw}) == value
    setting = next(s for s in SETTINGS if s.name == name)
    if setting.when == "init":
        assert getattr(Settings.read({name: raw}), setting.attribute) == value


@pytest.mark.parametrize("name, raw, message", [
    ("RINGRT_TRANSPORT", "udp", "RINGRT_TRANSPORT='udp': use auto, tcp or ipc"),
    ("RINGRT_TWO_LEVEL", "bogus", "RINGRT_TWO_LEVEL='bogus' is not valid; choose leaders"),
    ("RINGRT_SEGMENT_BYTES", "big", "environment variable RINGRT_SEGMENT_BYTES='big' is not an"),
    ("RINGRT_TIMEOUT", "nan", "environment variable RINGRT_TIMEOUT='nan' is not a number"),
    ("RINGRT_HEARTBEAT_INTERVAL", "0", "must be a positive, finite number of seconds"),
    ("RINGRT_P2P", "shm", "RINGRT_P2P='shm' must be one of auto, sockets"),
    ("RINGRT_ENCRYPT", "maybe", "RINGRT_ENCRYPT='maybe': use 1"),
])
def test_a_bad_value_says_which_variable_and_what_it_may_be(name, raw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        read_setting(name, {name: raw})


def test_the_default_timeout_is_none_not_a_sentinel_float():
    assert inspect.signature(ringrt.init_process_group).parameters["timeout"].default is None
