"""The public surface matches ../shared/spec/API.md, and every public name says what it does."""

import inspect
import os
import re
from pathlib import Path

import pytest

import ringrt
import ringrt.errors

SPEC = Path(os.environ.get("RINGRT_SPEC", Path(__file__).resolve().parents[3] / "shared" /
                           "spec" / "API.md"))

# Names the spec shows as dist.NAME, checked even when the spec file is not around.
SPEC_NAMES = {
    "init_process_group", "is_initialized", "get_rank", "get_world_size", "new_group",
    "destroy_process_group", "ReduceOp", "all_reduce", "broadcast", "reduce", "all_gather",
    "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor", "gather", "scatter",
    "all_to_all", "all_to_all_single", "barrier", "send", "recv", "isend", "irecv",
    "broadcast_object_list", "all_gather_object", "gather_object", "scatter_object_list",
    "get_store",
}


def test_spec_names_are_exported():
    names = set(SPEC_NAMES)
    if SPEC.exists():
        names |= set(re.findall(r"\bdist\.([a-z_A-Z]+)\(", SPEC.read_text()))
    missing = sorted(n for n in names if n not in ringrt.__all__ or not hasattr(ringrt, n))
    assert not missing, f"in the spec but not exported from ringrt: {missing}"


def test_every_export_exists_and_has_a_docstring():
    for name in ringrt.__all__:
        value = getattr(ringrt, name)
        assert inspect.getdoc(value), f"ringrt.{name} has no docstring"


@pytest.mark.parametrize("module", ["ringrt.data", "ringrt.ddp", "ringrt.optim",
                                    "ringrt.localsgd", "ringrt.checkpoint"])
def test_training_modules_document_their_public_names(module):
    mod = __import__(module, fromlist=["_"])
    exported = getattr(mod, "__all__", None)
    public = exported or [n for n in vars(mod) if not n.startswith("_")]
    for name in public:
        value = getattr(mod, name)
        ours = exported is not None or getattr(value, "__module__", "").startswith(module)
        if (inspect.isclass(value) or inspect.isfunction(value)) and ours:
            assert inspect.getdoc(value), f"{module}.{name} has no docstring"


def test_errors_derive_from_dist_error():
    for name in ringrt.errors.__all__:
        cls = getattr(ringrt.errors, name)
        assert issubclass(cls, ringrt.errors.DistError)
    assert issubclass(ringrt.errors.TimeoutError, TimeoutError)


def test_signatures_follow_the_spec():
    import inspect as i

    def params(fn):
        return list(i.signature(fn).parameters)

    assert params(ringrt.send)[:3] == ["array", "dst", "tag"]
    assert params(ringrt.recv)[:3] == ["array", "src", "tag"]
    assert params(ringrt.scatter_object_list)[:3] == ["output_list", "input_list", "src"]
    assert params(ringrt.gather_object)[:3] == ["obj", "object_gather_list", "dst"]
    assert params(ringrt.init_process_group)[:5] == ["backend", "init_method", "rank",
                                                     "world_size", "timeout"]
    assert params(ringrt.new_group)[:2] == ["ranks", "timeout"]
