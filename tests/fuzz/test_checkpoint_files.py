"""Fuzz checkpoint loading: a genuine checkpoint (parameters, Adam state, extra values) whose
files are then truncated, overwritten, deleted, or whose manifest is rewritten (another world
size, other file names, another format, nonsense JSON).

``load`` may restore the state, or raise ``CheckpointError`` (a ``ValueError``), the
documented ``FileNotFoundError`` (no complete checkpoint) or ``KeyError`` (parameter names
differ); it must never allocate what a corrupt header claims, nor read outside the checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringrt import checkpoint
from ringrt.errors import CheckpointError
from ringrt.optim import Adam
from tests.fuzz._tried import tried
from tests.world import short_tmpdir


def _model():
    return {"w": np.arange(12, dtype=np.float64).reshape(3, 4), "b": np.ones(4, np.float32)}


@pytest.fixture(scope="module")
def pristine():
    """A genuine checkpoint written the way rank 0 of a world of 2 writes it (no group)."""
    root = Path(short_tmpdir("rrf-"))
    params = _model()
    adam = Adam(params, lr=0.1)
    adam.step({k: np.full_like(v, 0.5) for k, v in params.items()})
    staging = root / checkpoint.STAGING
    staging.mkdir()
    manifest = checkpoint._write_rank_files(staging, 0, params, adam,
                                            {"step": 3, "rng": np.arange(3), "pair": (1, "a")})
    checkpoint._publish(root, staging, manifest, world_size=2)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def scratch():
    path = Path(short_tmpdir("rrf-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _load(root: Path):
    """load() into a fresh model and optimizer; the error if it raised one of the allowed."""
    tried("checkpoint files")
    params = _model()
    tracemalloc.start()
    try:
        try:
            result = checkpoint.load(root, params, Adam(params, lr=0.1))
        except CheckpointError as exc:
            result = exc
        except FileNotFoundError as exc:     # documented: no LATEST and no manifest at all
            assert "no complete ringrt checkpoint" in str(exc), repr(exc)
            result = exc
        except KeyError as exc:
            assert "does not match params" in str(exc), repr(exc)
            result = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"loading a 1 KB checkpoint allocated {peak} bytes"
    return result


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                  max_size=3), max_leaves=8)
manifest_fields = st.sampled_from(["format", "params", "optimizer", "extra", "world_size"])
npy_headers = st.builds(
    lambda shape, dtype, data: np.lib.format.magic(1, 0) + _header(shape, dtype) + data,
    st.lists(st.integers(0, 2**40), max_size=3), st.sampled_from(["<f8", "<f4", "|O", "<i8"]),
    st.binary(max_size=32))


def _header(shape, dtype) -> bytes:
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    return len(text).to_bytes(2, "little") + text.encode()


@given(st.data(), st.sampled_from(["truncate", "overwrite", "flip", "delete", "header",
                                   "manifest-field", "manifest-json", "latest"]))
def test_a_damaged_checkpoint_loads_or_raises_named_errors(pristine, scratch, data, damage):
    root = scratch / "ckpt"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(pristine, root)
    files = _files(root)
    target = root / data.draw(st.sampled_from(files))
    if damage == "truncate":
        raw = target.read_bytes()
        target.write_bytes(raw[:data.draw(st.integers(0, max(0, len(raw) - 1)))])
    elif damage == "overwrite":
        target.write_bytes(data.draw(st.binary(max_size=200)))
    elif damage == "flip":
        raw = bytearray(target.read_bytes())
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        target.write_bytes(bytes(raw))
    elif damage == "delete":
        target.unlink()
    elif damage == "header":
        npy = [f for f in files if f.suffix == ".npy"]
        (root / data.draw(st.sampled_from(npy))).write_bytes(data.draw(npy_headers))
    elif damage == "latest":
        (root / checkpoint.LATEST).write_bytes(data.draw(st.binary(max_size=24)
                                                         | st.sampled_from([b"../", b"ckpt-9",
                                                                            b"/etc"])))
    else:
        manifest_path = root / "ckpt-000001" / checkpoint.MANIFEST
        manifest = json.loads(manifest_path.read_text())
        if damage == "manifest-field":
            manifest[data.draw(manifest_fields)] = data.draw(json_values)
        else:
            manifest = data.draw(json_values)
        manifest_path.write_text(json.dumps(manifest))
    _load(root)


def test_the_pristine_checkpoint_loads(pristine):
    params = _model()
    extra = checkpoint.load(pristine, params, Adam(params, lr=0.1))
    assert extra["step"] == 3 and extra["pair"] == (1, "a")
    np.testing.assert_array_equal(extra["rng"], np.arange(3))
    np.testing.assert_allclose(params["w"], np.arange(12.0).reshape(3, 4) - 0.1, rtol=1e-6)


def test_a_header_claiming_a_terabyte_is_refused_before_allocating(pristine, scratch):
    """np.load allocated the shape a .npy header claims before finding the data missing."""
    root = scratch / "huge"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(pristine, root)
    (root / "ckpt-000001" / "param-0000.npy").write_bytes(
        np.lib.format.magic(1, 0) + _header([2**37], "<f8") + b"\0" * 8)
    assert isinstance(_load(root), CheckpointError)


def test_a_manifest_naming_a_file_outside_the_checkpoint_is_refused(pristine, scratch):
    root = scratch / "escape"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(pristine, root)
    manifest_path = root / "ckpt-000001" / checkpoint.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["params"]["files"][0] = "../../ckpt-000001/param-0001.npy"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="names a file"):
        params = _model()
        checkpoint.load(root, params, Adam(params, lr=0.1))


# --- ZeRO state from another world size ----------------------------------------------------


@pytest.fixture(scope="module")
def zero_world():
    """A world of one in this process (its own store), for a ZeroRedundancyOptimizer."""
    import ringrt
    from ringrt.store import Store

    store = Store("127.0.0.1", 0, "fuzz-token", is_master=True, rank=0, timeout=30)
    ringrt.init_process_group(rank=0, world_size=1, store=store, timeout=30)
    try:
        yield
    finally:
        ringrt.destroy_process_group()
        store.close()


def _zero_model():
    return {"w": np.arange(12, dtype=np.float64).reshape(3, 4), "b": np.ones(5)}


def _zero(params):
    from ringrt.optim import ZeroRedundancyOptimizer
    return ZeroRedundancyOptimizer(params, Adam, lr=0.1)


@pytest.fixture(scope="module")
def zero_pristine(zero_world):
    root = Path(short_tmpdir("rrz-"))
    params = _zero_model()
    zero = _zero(params)
    zero.step({k: np.full_like(v, 0.5) for k, v in params.items()})
    checkpoint.save(root, params, zero, extra={"step": 1})
    yield root
    shutil.rmtree(root, ignore_errors=True)


@given(st.data(), st.sampled_from(["world_size", "layout", "shard", "delete"]))
def test_zero_state_of_another_world_size_loads_or_raises_named_errors(
        zero_pristine, scratch, data, damage):
    """A manifest claiming 2..5 ranks (their shards missing), another layout, a shard of
    another length: load re-shards or raises CheckpointError, never IndexError/broadcast."""
    root = scratch / "zero"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(zero_pristine, root)
    ckpt = root / "ckpt-000001"
    manifest = json.loads((ckpt / checkpoint.MANIFEST).read_text())
    shards = sorted(p.name for p in ckpt.glob("optim-r*.npy"))
    if damage == "world_size":
        manifest["optimizer"]["world_size"] = data.draw(st.integers(-1, 5) | json_values)
    elif damage == "layout":
        layout = manifest["optimizer"]["layout"]
        field = data.draw(st.sampled_from(sorted(layout)))
        layout[field] = data.draw(json_values | st.integers(0, 8))
    elif damage == "shard":
        (ckpt / data.draw(st.sampled_from(shards))).write_bytes(
            data.draw(npy_headers) if data.draw(st.booleans()) else
            _npy(np.zeros(data.draw(st.integers(0, 40)))))
    else:
        (ckpt / data.draw(st.sampled_from(shards))).unlink()
    (ckpt / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    tried("checkpoint files")
    params = _zero_model()
    try:
        checkpoint.load(root, params, _zero(params))
    except CheckpointError:
        pass


def _npy(array) -> bytes:
    import io
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_zero_state_said_to_be_saved_by_three_ranks_is_refused(zero_pristine, scratch):
    root = scratch / "zero3"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(zero_pristine, root)
    path = root / "ckpt-000001" / checkpoint.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["optimizer"]["world_size"] = 3
    manifest["optimizer"]["layout"]["pad_to"] = 3
    path.write_text(json.dumps(manifest))
    params = _zero_model()
    with pytest.raises(CheckpointError, match="optim-r0000[01]"):
        checkpoint.load(root, params, _zero(params))
