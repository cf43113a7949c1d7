"""Sharded, atomic checkpoints: .npy files plus a JSON manifest, never pickle.

On disk (``directory`` is shared by every rank, e.g. a local or network file system)::

    directory/
        LATEST                   "ckpt-000007": the newest complete checkpoint
        ckpt-000007/
            manifest.json        world size, parameter names/shapes, optimizer kind, extra
            param-0000.npy ...   parameters, written by rank 0 (they are replicated)
            optim-r00000.json    a rank's optimizer state tree, arrays replaced by file names
            optim-r00000-0000.npy ...   its arrays (ZeRO: every rank; otherwise rank 0 only)
            ddp-r00000.json      a rank's DDP state (PowerSGD's error feedback and Qs), when
            ddp-r00000-0000.npy ...   ``params`` are a compressed DDP's: every rank
            diloco-r00000.json   a rank's own DiLoCo state (error-feedback residual), when
            diloco-r00000-0000.npy ...   the optimizer is a DiLoCo with error feedback
        .incomplete/             a save in progress (or one that crashed): ignored by load

Atomicity: every rank writes into ``.incomplete`` and fsyncs its files; a barrier; rank 0
writes the manifest, fsyncs the directory, renames it to ``ckpt-N``, then atomically replaces
``LATEST`` and only then deletes older checkpoints; a final barrier. A crash at any point leaves
``LATEST`` naming a complete checkpoint.

Per-rank DDP state: ``params`` given as ``ddp.params`` (a
:class:`ringrt.ddp.DistributedDataParallel`'s views) bring its :meth:`state_dict` along: each
rank writes its own, and each rank reads its own back when the world size is the saved one.
Where there is none to read (a checkpoint written without it, by another world size or with
other compression options) the state restarts, with a warning. A
:class:`ringrt.localsgd.DiLoCo` optimizer's per-rank state (its error-feedback residual,
:meth:`~ringrt.localsgd.DiLoCo.per_rank_state_dict`) is kept the same way: every rank writes
its own, the rest of its state comes from rank 0.

Re-sharding: ZeRO state arrays with one element per shard element are "sharded". Loading into a
different world size reads (memory-mapped) only the parts of the old shards that overlap the
new rank's range, so each rank reads about ``1/world`` of the state.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

import ringrt as dist
from ringrt import ddp as _ddp
from ringrt import localsgd as _localsgd
from ringrt._flat import FlatLayout
from ringrt._process_group import ProcessGroup
from ringrt.errors import CheckpointError
from ringrt.optim._base import Optimizer
from ringrt.optim.zero import ZeroRedundancyOptimizer

FORMAT = "ringrt-checkpoint/1"
LATEST = "LATEST"
STAGING = ".incomplete"
MANIFEST = "manifest.json"

# Test hook: called with the stage name ("staged", "params-written", "shards-written",
# "renamed") on every rank; a fault test makes it os._exit to crash mid-save.
fault_hook: Callable[[str], None] | None = None

_TAGS = ("__ndarray__", "__tuple__", "__items__")
_CHECKPOINT_NAME = re.compile(rb"ckpt-[0-9]{1,12}")
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}
_MEMBER_NAME = re.compile(
    r"(param|optim-r[0-9]{5}|ddp-r[0-9]{5}|diloco-r[0-9]{5}|extra)-[0-9]{4,}\.npy")


def save(directory: str | os.PathLike, params: Mapping[str, np.ndarray],
         optimizer: Optimizer | ZeroRedundancyOptimizer | None = None,
         extra: dict | None = None, *, group: ProcessGroup | None = None) -> Path:
    """Write a checkpoint atomically; every rank of ``group`` must call it.

    Args:
        directory: checkpoint root (created if missing), visible to every rank.
        params: name -> ndarray, replicated (rank 0's copy is written). ``ddp.params`` also
            saves the DDP's per-rank state (:meth:`ringrt.ddp.DistributedDataParallel.state_dict`:
            PowerSGD's error feedback and Qs), every rank its own.
        optimizer: None, a plain optimizer (replicated state: rank 0 writes it) or a
            :class:`ZeroRedundancyOptimizer` (each rank writes its shard). A DiLoCo's
            per-rank state (error feedback) is written by every rank.
        extra: JSON values and ndarrays (step, epoch, RNG state...), from rank 0;
            returned by :func:`load`.
        group: the ranks saving together (default: the world). Every rank of a ZeRO
            optimizer's group must be in it.

    Returns:
        The new checkpoint's directory (``directory/ckpt-N``).
    """
    root, rank = Path(directory), dist.get_rank(group)
    staging = root / STAGING
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)      # a crashed save's leftovers
        staging.mkdir()
    dist.barrier(group=group)
    _fault("staged")
    manifest = _write_rank_files(staging, rank, params, optimizer, extra)
    _fsync_dir(staging)
    _fault("shards-written")
    dist.barrier(group=group)
    final = None
    if manifest is not None:                     # rank 0's
        final = _publish(root, staging, manifest, dist.get_world_size(group))
    dist.barrier(group=group)
    return final or _checkpoint_dir(root)


def load(directory: str | os.PathLike, params: Mapping[str, np.ndarray],
         optimizer: Optimizer | ZeroRedundancyOptimizer | None = None) -> dict | None:
    """Restore parameters (in place) and optimizer state; works across world sizes.

    Args:
        directory: a checkpoint root (follows ``LATEST``) or one ``ckpt-N`` directory.
        params: name -> ndarray to overwrite in place (same names and shapes as saved).
            ``ddp.params`` also restores this rank's DDP state; where the checkpoint has
            none that fits (written without it, at another world size or with other
            compression options), that state restarts and rank 0 warns (RuntimeWarning).
        optimizer: the optimizer to restore, of the same kind (plain or ZeRO) as saved. A
            DiLoCo's per-rank state (error feedback) is this rank's own, restarted (rank 0
            warns) where none fits, as the DDP state above.

    Returns:
        The ``extra`` given to :func:`save`.

    Raises:
        FileNotFoundError: no complete checkpoint. KeyError: parameter names differ from the
            checkpoint's. CheckpointError (a ValueError): shapes or optimizer kind differ, or
            a file is truncated, corrupt or missing (a shard of another world size's save).
    """
    path = _checkpoint_dir(Path(directory))
    manifest = _read_manifest(path)
    _check_names(path, manifest["params"]["names"], params)
    try:
        _load_params(path, manifest["params"], params)
        if optimizer is not None:
            _load_optimizer(path, manifest, optimizer)
        _load_ddp(path, manifest, _ddp_of(params))
        _load_diloco(path, manifest, _diloco_of(optimizer))
        return _decode(manifest["extra"], lambda leaf: _load_npy(path, leaf))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError,
            RecursionError, OSError, EOFError) as exc:
        # the manifest or a state tree names what is not there, or has another shape
        raise CheckpointError(f"cannot load checkpoint {path}: {type(exc).__name__}: {exc}; "
                              "its files are incomplete or corrupt, or not what this "
                              "model and optimizer saved") from exc


def exists(directory: str | os.PathLike) -> bool:
    """True if ``directory`` holds a complete checkpoint that :func:`load` can read."""
    try:
        _checkpoint_dir(Path(directory))
    except FileNotFoundError:
        return False
    return True


# --- saving ---------------------------------------------------------------------------------


def _write_rank_files(staging: Path, rank: int, params, optimizer, extra) -> dict | None:
    """Write this rank's files into ``staging``; rank 0 returns the manifest to publish."""
    is_zero = isinstance(optimizer, ZeroRedundancyOptimizer)
    if optimizer is not None and (is_zero or rank == 0):
        state, shard_len, owner = optimizer.state_dict(), -1, rank
        if is_zero:                      # the layout goes to the manifest, once
            (start, stop), state = state["zero"]["shard"], state["optimizer"]
            shard_len, owner = stop - start, optimizer.rank
        state.pop("per_rank", None)      # a DiLoCo's: written by every rank, below
        _write_tree(staging, _optim_stem(owner), state, shard_len)
    ddp = _ddp_of(params)
    ddp_state = {} if ddp is None else ddp.state_dict()
    if ddp_state:                        # differs per rank (error feedback): every rank's
        _write_tree(staging, _ddp_stem(rank), ddp_state)
    diloco = _diloco_of(optimizer)
    diloco_state = {} if diloco is None else diloco.per_rank_state_dict()
    if diloco_state:
        _write_tree(staging, _diloco_stem(rank), diloco_state)
    if rank != 0:
        return None
    names = list(params)
    for i, name in enumerate(names):
        _write_npy(staging / f"param-{i:04d}.npy", params[name])
    _fault("params-written")
    return {
        "format": FORMAT,
        "params": {"names": names, "files": [f"param-{i:04d}.npy" for i in range(len(names))]},
        "optimizer": _optimizer_manifest(optimizer),
        "ddp": {"options": ddp_state["options"]} if ddp_state else None,
        "diloco": {"options": diloco_state["options"]} if diloco_state else None,
        "extra": _store_arrays(staging, "extra", extra),
    }


def _optimizer_manifest(optimizer) -> dict | None:
    if optimizer is None:
        return None
    if isinstance(optimizer, ZeroRedundancyOptimizer):
        return {"kind": "zero", "class": type(optimizer.optim).__name__,
                "layout": optimizer.layout.to_json(), "world_size": optimizer.world_size}
    return {"kind": "replicated", "class": type(optimizer).__name__}


def _ddp_of(params) -> _ddp.DistributedDataParallel | None:
    """The DDP whose views ``params`` are (``ddp.params``), else None."""
    return params.owner if isinstance(params, _ddp.ViewDict) else None


def _diloco_of(optimizer) -> _localsgd.DiLoCo | None:
    return optimizer if isinstance(optimizer, _localsgd.DiLoCo) else None


def _write_tree(staging: Path, stem: str, tree, shard_len: int = -1) -> None:
    """``{stem}.json`` (the skeleton) and ``{stem}-NNNN.npy`` (the arrays) of a state tree."""
    skeleton = _store_arrays(staging, stem, tree, shard_len)
    _write_bytes(staging / f"{stem}.json", json.dumps(skeleton).encode())


def _store_arrays(staging: Path, stem: str, tree, shard_len: int = -1):
    """Write the arrays of ``tree`` as ``{stem}-NNNN.npy``; return its JSON skeleton.

    An array of shape ``(shard_len,)`` is marked ``sharded`` (per-element ZeRO state).
    """
    count = 0

    def put(array: np.ndarray) -> dict:
        nonlocal count
        name, count = f"{stem}-{count:04d}.npy", count + 1
        _write_npy(staging / name, array)
        return {"__ndarray__": name, "sharded": array.shape == (shard_len,)}

    return _encode(tree, put)


def _publish(root: Path, staging: Path, manifest: dict, world_size: int) -> Path:
    """Rank 0, after every rank's files are durable: manifest, rename, LATEST, clean up."""
    manifest["world_size"] = world_size
    _write_bytes(staging / MANIFEST, json.dumps(manifest, indent=1).encode())
    _fsync_dir(staging)
    numbers = [int(p.name[5:]) for p in root.glob("ckpt-*") if p.name[5:].isdigit()]
    final = root / f"ckpt-{max(numbers, default=0) + 1:06d}"
    os.rename(staging, final)
    _fsync_dir(root)
    _fault("renamed")
    _write_bytes(root / (LATEST + ".tmp"), final.name.encode())
    os.replace(root / (LATEST + ".tmp"), root / LATEST)
    _fsync_dir(root)
    for old in root.glob("ckpt-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _optim_stem(rank: int) -> str:
    """File-name stem of a rank's optimizer state: its ``.json`` and ``-NNNN.npy`` arrays."""
    return f"optim-r{rank:05d}"


def _ddp_stem(rank: int) -> str:
    """File-name stem of a rank's DDP state (PowerSGD's): its ``.json`` and arrays."""
    return f"ddp-r{rank:05d}"


def _diloco_stem(rank: int) -> str:
    """File-name stem of a rank's own DiLoCo state (its error-feedback residual)."""
    return f"diloco-r{rank:05d}"


def _fault(stage: str) -> None:
    if fault_hook is not None:
        fault_hook(stage)


# --- loading --------------------------------------------------------------------------------


def _checkpoint_dir(root: Path) -> Path:
    """The complete checkpoint ``root`` designates: ``root/LATEST``'s target, or root itself.

    Raises:
        FileNotFoundError: neither is there. CheckpointError: ``LATEST`` holds no
            ``ckpt-N`` name (it is written atomically, so the disk corrupted it).
    """
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_bytes()[:64].strip()
        if not _CHECKPOINT_NAME.fullmatch(name):
            raise CheckpointError(f"{pointer} holds {name[:20]!r}, not a checkpoint name "
                                  "(ckpt-NNNNNN); the file is corrupt")
        path = root / name.decode()
        if (path / MANIFEST).is_file():
            return path
    if (root / MANIFEST).is_file():
        return root
    raise FileNotFoundError(f"no complete ringrt checkpoint in {root} (no {LATEST} or {MANIFEST})")


def _read_manifest(path: Path) -> dict:
    """The manifest, checked for the fields load reads before it reads any."""
    manifest = _read_json(path / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (format {found!r})")
    saved = manifest.get("params")
    if not (isinstance(saved, dict) and _is_names(saved.get("names"))
            and _is_names(saved.get("files")) and len(saved["names"]) == len(saved["files"])
            and "extra" in manifest and isinstance(manifest.get("optimizer"), (dict, type(None)))):
        raise CheckpointError(f"{path}/{MANIFEST} lacks the parameter names and files, extra or "
                              "optimizer of a ringrt checkpoint; it is corrupt")
    return manifest


def _is_names(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _read_json(file: Path):
    try:
        return json.loads(file.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing from the checkpoint") from None
    except (ValueError, RecursionError) as exc:     # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"{file} is not JSON ({exc}); the file is corrupt") from None


def _member(path: Path, name) -> Path:
    """``path / name`` for a file name read from the checkpoint: never outside ``path``."""
    if not isinstance(name, str) or not _MEMBER_NAME.fullmatch(name):
        raise CheckpointError(f"checkpoint {path} names a file {str(name)[:40]!r} that no "
                              "ringrt save writes; the manifest is corrupt")
    return path / name


def _read_npy(file: Path, mmap: bool = False) -> np.ndarray:
    """An .npy file whose header is checked against the file's size before any array is
    allocated (np.load allocates whatever shape a header claims, then reads what is there)."""
    try:
        with open(file, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = _NPY_HEADERS.get(version)
            if read_header is None:
                raise ValueError(f".npy format {version} is not one ringrt writes")
            shape, _fortran, dtype = read_header(f)
            offset, size = f.tell(), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing from the checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - numpy's header parser (ast, tokenize): many kinds
        raise CheckpointError(f"{file} is not a .npy file ({type(exc).__name__}: {exc}); it "
                              "is corrupt") from None
    if dtype.hasobject or math.prod(shape) * dtype.itemsize != size - offset:
        raise CheckpointError(f"{file} claims a {dtype} array of shape {shape} but holds "
                              f"{size - offset} bytes of data; it is truncated or corrupt")
    return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)


def _check_names(path: Path, names: list, params: Mapping[str, np.ndarray]) -> None:
    missing = [n for n in names if n not in params]
    unknown = [n for n in params if n not in names]
    if missing or unknown:
        raise KeyError(f"checkpoint {path} does not match params: params lack {missing}, "
                       f"checkpoint lacks {unknown}")


def _load_params(path: Path, saved: dict, params: Mapping[str, np.ndarray]) -> None:
    for name, file in zip(saved["names"], saved["files"]):
        array = _read_npy(_member(path, file))
        if array.shape != params[name].shape:
            raise CheckpointError(f"checkpoint {path}: {name!r} has shape {array.shape}, params "
                                  f"have {params[name].shape}")
        np.copyto(params[name], array)


def _load_optimizer(path: Path, manifest: dict, optimizer) -> None:
    saved = manifest["optimizer"]
    is_zero = isinstance(optimizer, ZeroRedundancyOptimizer)
    kind = "zero" if is_zero else "replicated"
    if saved is None or saved["kind"] != kind:
        raise ValueError(f"checkpoint {path} holds {saved and saved['kind']} optimizer state, "
                         f"cannot load it into a {kind} optimizer ({type(optimizer).__name__})")
    skeleton = _read_json(path / f"{_optim_stem(0)}.json")
    if not is_zero:
        optimizer.load_state_dict(_decode(skeleton, lambda leaf: _load_npy(path, leaf)))
        return
    old_layout = FlatLayout.from_json(saved["layout"])
    _check_same_params(path, old_layout, optimizer.layout)
    reshard = _Resharder(path, old_layout, saved["world_size"], optimizer)
    inner = _decode(skeleton, reshard.leaf)
    optimizer.load_state_dict({"zero": optimizer.meta(), "optimizer": inner})


def _load_ddp(path: Path, manifest: dict, ddp: _ddp.DistributedDataParallel | None) -> None:
    """Restore this rank's DDP state, or restart it (rank 0 warns) where none fits."""
    if ddp is None:
        return
    _load_per_rank(path, manifest, "ddp", ddp._compression_options(), _ddp_stem,
                   ddp.load_state_dict, "this DDP", "gradient-compression state",
                   "PowerSGD's error feedback and warm-start Qs restart on every rank")


def _load_diloco(path: Path, manifest: dict, diloco: _localsgd.DiLoCo | None) -> None:
    """Restore this rank's own DiLoCo state, or restart it (rank 0 warns) where none fits."""
    if diloco is None:
        return
    _load_per_rank(path, manifest, "diloco", diloco._per_rank_options(), _diloco_stem,
                   diloco.load_per_rank_state_dict, "this DiLoCo", "error-feedback residuals",
                   "DiLoCo's error-feedback residuals restart at zero on every rank")


def _load_per_rank(path: Path, manifest: dict, key: str, mine, stem, load, owner: str,
                   what: str, restart: str) -> None:
    """Give ``load`` this rank's saved state of manifest entry ``key`` (saved with options
    ``mine`` by the same world size), or ``{}`` to restart it, rank 0 warning why (``owner``
    holds the state, ``what`` it is, ``restart`` what restarting means)."""
    if mine is None:
        return                          # nothing to restore (saved state is not needed)
    saved, world = manifest.get(key), dist.get_world_size()
    if saved is None:
        why = f"holds no {what} (saved without it, or by an older ringrt)"
    elif saved["options"] != mine:
        why = f"holds {what} for {saved['options']}, {owner} has {mine}"
    elif manifest["world_size"] != world:
        why = f"was saved by {manifest['world_size']} ranks, this world has {world}"
    else:
        skeleton = _read_json(path / f"{stem(dist.get_rank())}.json")
        load(_decode(skeleton, lambda leaf: _load_npy(path, leaf)))
        return
    if dist.get_rank() == 0:
        warnings.warn(f"ringrt.checkpoint.load: {path} {why}; {restart}, so the run does not "
                      "continue bit for bit", RuntimeWarning, stacklevel=4)
    load({})


def _load_npy(path: Path, leaf: dict) -> np.ndarray:
    return _read_npy(_member(path, leaf["__ndarray__"]))


def _check_same_params(path: Path, saved: FlatLayout, mine: FlatLayout) -> None:
    if saved.shapes != mine.shapes or saved.dtype != mine.dtype:
        raise ValueError(f"checkpoint {path}: ZeRO state was saved for other parameters "
                         f"({saved.names} {saved.dtype}) than this optimizer's "
                         f"({mine.names} {mine.dtype})")


class _Resharder:
    """Builds this rank's slice of each sharded state array from the old ranks' files."""

    def __init__(self, path: Path, old_layout: FlatLayout, old_world: int,
                 optimizer: ZeroRedundancyOptimizer):
        self.path, self.optimizer = path, optimizer
        self.old_shards = [old_layout.shard_range(r, old_world) for r in range(old_world)]
        self.numel = optimizer.layout.numel

    def leaf(self, leaf: dict) -> np.ndarray:
        if not leaf["sharded"]:
            return _load_npy(self.path, leaf)
        start, stop = self.optimizer.shard
        suffix = leaf["__ndarray__"].removeprefix(_optim_stem(0))     # "-NNNN.npy"
        out = None
        for old_rank, (old_start, old_stop) in enumerate(self.old_shards):
            lo, hi = max(start, old_start), min(stop, old_stop, self.numel)
            if lo >= hi:
                continue
            old = _read_npy(_member(self.path, _optim_stem(old_rank) + suffix), mmap=True)
            if old.shape != (old_stop - old_start,):
                raise CheckpointError(f"checkpoint {self.path}: rank {old_rank}'s shard "
                                      f"{_optim_stem(old_rank) + suffix} has shape {old.shape}, "
                                      f"its layout says ({old_stop - old_start},)")
            out = np.zeros(stop - start, old.dtype) if out is None else out
            out[lo - start:hi - start] = old[lo - old_start:hi - old_start]
        return np.zeros(stop - start, self.optimizer.layout.dtype) if out is None else out


# --- state trees <-> JSON + arrays ------------------------------------------------------------


def _encode(tree, put: Callable[[np.ndarray], dict]):
    """JSON skeleton of a state tree; each ndarray becomes ``put(array)`` (a tagged dict)."""
    if isinstance(tree, np.ndarray):
        return put(tree)
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in tree):
            return {k: _encode(v, put) for k, v in tree.items()}
        return {"__items__": [[_encode(k, put), _encode(v, put)] for k, v in tree.items()]}
    if isinstance(tree, tuple):
        return {"__tuple__": [_encode(v, put) for v in tree]}
    if isinstance(tree, list):
        return [_encode(v, put) for v in tree]
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"checkpoint: cannot store a {type(tree).__name__}; state must be JSON "
                    "values, tuples, dicts and ndarrays")


def _decode(skeleton, get: Callable[[dict], np.ndarray]):
    """Inverse of :func:`_encode`: ``get(tagged_dict)`` loads each array."""
    if isinstance(skeleton, list):
        return [_decode(v, get) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "__ndarray__" in skeleton:
        return get(skeleton)
    if "__tuple__" in skeleton:
        return tuple(_decode(v, get) for v in skeleton["__tuple__"])
    if "__items__" in skeleton:
        return {_hashable(_decode(k, get)): _decode(v, get) for k, v in skeleton["__items__"]}
    return {k: _decode(v, get) for k, v in skeleton.items()}


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key
