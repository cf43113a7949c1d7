"""Pure logic (no sockets): flat layouts, DDP bucket plans, checkpoint state trees."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from ringrt import checkpoint
from ringrt._flat import FlatLayout
from ringrt.ddp import ViewDict, plan_buckets


def arrays(dtype=np.float32):
    return {"w": np.arange(6, dtype=dtype).reshape(3, 2), "b": np.arange(6, 8, dtype=dtype),
            "s": np.array(8, dtype=dtype)}


def test_layout_offsets_views_and_padding():
    layout = FlatLayout.of(arrays(), pad_to=4)
    assert layout.offsets == {"w": 0, "b": 6, "s": 8}
    assert (layout.numel, layout.padded_numel, layout.nbytes) == (9, 12, 48)
    flat = layout.flatten(arrays())
    np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0])
    views = layout.views(flat)
    assert views["w"].shape == (3, 2) and views["s"].shape == ()
    views["b"][...] = -1                                 # a view: writes reach the buffer
    assert flat[6] == flat[7] == -1


def test_layout_order_is_the_buffer_order():
    layout = FlatLayout.of(arrays(), order=["s", "b", "w"])
    assert layout.names == ["s", "b", "w"] and layout.offsets == {"s": 0, "b": 1, "w": 3}
    np.testing.assert_array_equal(layout.flatten(arrays()), [8, 6, 7, 0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_shard_ranges_split_evenly_and_cover_the_buffer(world_size):
    layout = FlatLayout.of(arrays(), pad_to=world_size)
    ranges = [layout.shard_range(r, world_size) for r in range(world_size)]
    assert ranges[0][0] == 0 and ranges[-1][1] == layout.padded_numel
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert len({stop - start for start, stop in ranges}) == 1
    flat = layout.flatten(arrays())
    for start, stop in ranges:                           # a rank can read just its shard
        out = np.full(stop - start, np.nan, np.float32)
        layout.copy_range_from(arrays(), out, start, stop)
        np.testing.assert_array_equal(out, flat[start:stop])


def test_unflatten_round_trip_and_json():
    layout = FlatLayout.of(arrays(np.float64), pad_to=5)
    flat = layout.flatten(arrays(np.float64)) * 2
    target = {k: np.zeros_like(v) for k, v in arrays(np.float64).items()}
    layout.unflatten_into(flat, target)
    for name, value in arrays(np.float64).items():
        np.testing.assert_array_equal(target[name], value * 2)
    assert FlatLayout.from_json(layout.to_json()) == layout


def test_layout_errors_name_the_problem():
    layout = FlatLayout.of(arrays())
    with pytest.raises(KeyError, match=r"missing \['s'\], unknown \['x'\]"):
        layout.flatten({"w": np.zeros((3, 2)), "b": np.zeros(2), "x": np.zeros(1)})
    with pytest.raises(ValueError, match=r"grads\['b'\] has shape \(3,\), expected \(2,\)"):
        layout.flatten({**arrays(), "b": np.zeros(3)}, what="grads")
    with pytest.raises(TypeError, match="one dtype"):
        FlatLayout.of({"a": np.zeros(1, np.float32), "b": np.zeros(1, np.float64)})
    with pytest.raises(ValueError, match="pad_to=2"):
        FlatLayout.of(arrays()).shard_range(0, 2)


def test_buckets_are_contiguous_in_buffer_order_and_respect_the_cap():
    params = {f"p{i}": np.zeros(n, np.float32) for i, n in enumerate([10, 300, 20, 20, 5])}
    layout = FlatLayout.of(params, order=reversed(list(params)))   # backward order
    buckets = plan_buckets(layout, cap_bytes=160)                  # 40 float32
    assert [names for _, _, names in buckets] == [["p4", "p3", "p2"], ["p1"], ["p0"]]
    assert [(start, stop) for start, stop, _ in buckets] == [(0, 45), (45, 345), (345, 355)]
    assert len(plan_buckets(layout, cap_bytes=25 * 2**20)) == 1


def _views():
    flat = np.zeros(6, np.float32)
    return flat, ViewDict({"w": flat[:4].reshape(2, 2), "b": flat[4:]}, "ddp.grads")


def test_view_dict_numpy_in_place_idioms_write_the_flat_buffer():
    flat, views = _views()
    w = views["w"]
    views["w"] += np.ones((2, 2))              # d[k] = d[k].__iadd__(v): the same view back
    views["b"] -= 0.5 * np.ones(2)
    views["w"] *= 3
    assert views["w"] is w and np.shares_memory(views["w"], flat)
    np.testing.assert_array_equal(flat, [3, 3, 3, 3, -0.5, -0.5])


def test_view_dict_assigning_copies_into_the_view():
    flat, views = _views()
    new = np.arange(4.0).reshape(2, 2)         # float64 into float32: same kind, copied
    views["w"] = new
    views["b"] = 7                             # a scalar fills the entry
    new[0, 0] = 100                            # the caller's array stays the caller's
    assert np.shares_memory(views["w"], flat)
    np.testing.assert_array_equal(flat, [0, 1, 2, 3, 7, 7])
    views.update(b=np.array([1.0, 2.0]))
    views |= {"w": np.zeros((2, 2))}
    np.testing.assert_array_equal(flat, [0, 0, 0, 0, 1, 2])
    assert type(dict(views)) is dict and dict(views)["w"] is views["w"]


def test_view_dict_rejects_wrong_shapes_dtypes_names_and_removal():
    flat, views = _views()
    with pytest.raises(ValueError, match=r"ddp.grads\['w'\] has shape \(2, 2\).*shape \(4,\)"):
        views["w"] = np.ones(4)
    with pytest.raises(TypeError, match=r"ddp.grads\['b'\] is float32; cannot assign complex"):
        views["b"] = np.ones(2, np.complex64)
    with pytest.raises(KeyError, match="no such parameter"):
        views["new"] = np.ones(2)
    for remove in (lambda: views.pop("w"), lambda: views.__delitem__("w"), views.clear,
                   views.popitem):
        with pytest.raises(TypeError, match="views into one flat buffer"):
            remove()
    assert list(views) == ["w", "b"] and not flat.any()


def test_state_tree_round_trip_keeps_types():
    arrays_out = []

    def put(array):
        arrays_out.append(array)
        return {"__ndarray__": len(arrays_out) - 1}

    tree = {"state": {"shard": {"step": np.int64(3), "exp_avg": np.ones(4)}},
            "betas": (0.9, 0.999), 7: ["x", None, True], "nested": [{"a": np.zeros(2)}]}
    skeleton = checkpoint._encode(tree, put)
    back = checkpoint._decode(json.loads(json.dumps(skeleton)),
                              lambda leaf: arrays_out[leaf["__ndarray__"]])
    assert back["betas"] == (0.9, 0.999) and back[7] == ["x", None, True]
    assert back["state"]["shard"]["step"] == 3
    np.testing.assert_array_equal(back["state"]["shard"]["exp_avg"], np.ones(4))
    with pytest.raises(TypeError, match="cannot store a set"):
        checkpoint._encode({"bad": {1, 2}}, put)
