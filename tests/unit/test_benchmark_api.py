"""Benchmarks use only ringrt's public API, and what ringrt exposes for them works.

A benchmark that imports ``ringrt._something`` (or reaches ``dist.distributed._world``) breaks
whenever that internal changes, and nobody runs benchmarks in ``make test``. So benchmarks get
public names (``ringrt.tuning``, ``ringrt.debug``, ``ringrt.LinkSecurity``, ``ringrt.stats``,
``RINGRT_ALGO``), and this test holds them to it.
"""

import ast
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _private(dotted: str) -> bool:
    """Whether a dotted name has an underscored part (dunders like ``__file__`` are public)."""
    return any(part.startswith("_") and not part.endswith("__") for part in dotted.split("."))


def _attribute_chain(node: ast.Attribute) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None when the chain does not start at a name."""
    chain = []
    while isinstance(node, ast.Attribute):
        chain.append(node.attr)
        node = node.value
    return [node.id, *reversed(chain)] if isinstance(node, ast.Name) else None


def private_uses(path: Path) -> list[str]:
    """Every private ringrt module or name ``path`` imports or reaches through an attribute."""
    tree = ast.parse(path.read_text(), str(path))
    bound = {}                                       # local name -> the ringrt name it holds
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ringrt":
                    if _private(alias.name):
                        found.append(f"line {node.lineno}: import {alias.name}")
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else "ringrt"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ringrt":
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if _private(dotted):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                bound[alias.asname or alias.name] = dotted
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "ctx", None),
                                                              ast.Store):
            chain = _attribute_chain(node)
            if chain and chain[0] in bound and _private(".".join(chain[1:])):
                found.append(f"line {node.lineno}: {'.'.join(chain)}")
    return found


def _benchmark_files():
    return sorted(BENCHMARKS.rglob("*.py"))


def test_the_check_finds_private_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import ringrt as dist\nimport ringrt._env\nfrom ringrt._comm import wire\n"
                      "from ringrt.collectives import _algorithm\nfrom ringrt import tuning\n"
                      "x = dist.distributed._world\ny = dist.__file__\nz = tuning.cost_model\n")
    assert len(private_uses(sample)) == 4


@pytest.mark.parametrize("path", _benchmark_files(), ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_benchmarks_use_only_public_ringrt(path):
    assert private_uses(path) == [], (
        f"benchmarks/{path.relative_to(BENCHMARKS)} uses ringrt internals; use the public API, "
        "an env variable (RINGRT_ALGO, ...) or expose what it needs in ringrt.tuning / "
        "ringrt.debug (documented)")


@pytest.mark.parametrize("module", ["ringrt.tuning", "ringrt.debug"])
def test_benchmark_modules_document_their_names(module):
    mod = __import__(module, fromlist=["_"])
    assert inspect.getdoc(mod)
    for name in mod.__all__:
        value = getattr(mod, name)
        if inspect.isfunction(value) or inspect.ismodule(value):
            assert inspect.getdoc(value), f"{module}.{name} has no docstring"


def test_observer_part_costs_run(tmp_path):
    from ringrt import debug

    costs = debug.observer_part_costs(20, str(tmp_path / "parts.json"))
    assert set(costs) >= {"call_site", "ring_record", "observer_calls_per_op",
                          "tracer_record_with_flush", "wait_timer_per_blocking_wait"}
    assert all(us >= 0 or name == "wait_timer_per_blocking_wait" for name, us in costs.items())


def test_tuning_answers_as_the_choice_does():
    from ringrt import tuning

    assert len(tuning.NETWORK) == 4 and all(v >= 0 for v in tuning.NETWORK)
    assert tuning.flat_across_hosts("all_reduce", 4, 8) == "recursive_doubling"
    assert tuning.flat_across_hosts("all_reduce", 64 << 20, 8) == "ring"
    assert tuning.two_level("all_reduce", 4, (1,)) is False
    assert tuning.cost_model.bus_factor("all_reduce", 4) == pytest.approx(1.5)


REPO = BENCHMARKS.parent
MODULE = re.compile(r"-m (benchmarks(?:\.[a-z_][a-z0-9_]*)+)")
PATH = re.compile(r"benchmarks/[\w/.-]+\.(?:py|json|png)")


def _citing_files():
    return [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md", REPO / "Makefile",
            BENCHMARKS / "README.md", *_benchmark_files()]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:                    # a parent package is missing
        return False


def test_every_cited_benchmark_and_record_exists():
    """A benchmark moved or a record archived without updating who names it fails here (a
    module's docstring may name a record it would write: that one need not exist yet)."""
    missing = []
    for path in _citing_files():
        text = path.read_text()
        for module in MODULE.findall(text):
            if not _importable(module):
                missing.append(f"{path.relative_to(REPO)}: -m {module}")
        for cited in PATH.findall(text):
            an_output_to_be = path.suffix == ".py" and not cited.endswith(".py")
            if not an_output_to_be and not (REPO / cited).exists():
                missing.append(f"{path.relative_to(REPO)}: {cited}")
    assert missing == []
