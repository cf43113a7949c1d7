"""The public API is typed: every public function and method carries annotations, and mypy
checks the public modules (pyproject.toml's [tool.mypy]) without an error."""

import importlib
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PUBLIC = ["ringrt", "ringrt.optim", "ringrt.checkpoint", "ringrt.elastic", "ringrt.store"]


def _public_functions():
    for module_name in PUBLIC:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")]):
            obj = getattr(module, name)
            if not getattr(obj, "__module__", "").startswith("ringrt"):
                continue
            if inspect.isfunction(obj):
                yield f"{module_name}.{name}", obj
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) and (not attr.startswith("_")
                                                       or attr == "__init__"):
                        yield f"{module_name}.{name}.{attr}", member


def test_every_public_function_is_annotated():
    missing = []
    for qualname, function in _public_functions():
        signature = inspect.signature(function)
        for parameter in signature.parameters.values():
            if parameter.name not in ("self", "cls") and \
                    parameter.annotation is inspect.Parameter.empty:
                missing.append(f"{qualname}({parameter.name})")
        if signature.return_annotation is inspect.Signature.empty \
                and not qualname.endswith("__init__"):
            missing.append(f"{qualname} -> ?")
    assert missing == []


def test_the_package_ships_py_typed():
    assert (REPO / "ringrt" / "py.typed").exists()


@pytest.mark.timeout(240)
@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="needs mypy (pip install -e '.[test]')")
def test_mypy_passes_on_the_public_modules():
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True,
                          text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout + proc.stderr
