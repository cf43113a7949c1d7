"""Compressed averaging over a group: bf16, int8 with per-chunk scales, and PowerSGD.

Used by :mod:`ringrt.localsgd` (pseudo-gradients: bf16, int8) and :mod:`ringrt.ddp`
(gradients: bf16, PowerSGD). Each averaging is split into ``start`` (encode, launch the async
collectives, return a pending handle) and ``finish`` (wait, decode), so callers can overlap it
with computation.

- bf16: round to bfloat16 (nearest, ties to even), all_reduce AVG in bfloat16 (ringrt widens
  to float32 for every addition), widen back. Half the bytes; relative error <= 2**-8 per
  element before the sum.
- int8: per chunk of ``chunk`` elements a float32 scale ``max|x| / 127``; the int8 codes and
  the scales are all-gathered (int8 cannot be summed without overflow) and every rank decodes
  and averages the contributions in rank order, so all ranks get the same bits. A rank sends
  about a quarter of the float32 bytes, but receives every other rank's share: cheaper than a
  float32 ring all_reduce (2 (n-1)/n of the bytes each way) while n < 8.
- PowerSGD (Vogels et al. 2019, torch's ``powerSGD_hook``): see :class:`PowerSGD`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

import ringrt as dist
from ringrt._dtypes import BFLOAT16, narrow, widen
from ringrt._flat import FlatLayout

INT8_CHUNK = 256


def int8_encode(values: np.ndarray, chunk: int = INT8_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, scales)``: int8 codes and one float32 scale per ``chunk`` elements.

    ``decode(codes, scales)`` is within ``scale / 2`` of each value (round to nearest).
    """
    chunks = -(-values.size // chunk)
    padded = np.zeros(chunks * chunk, np.float32)
    padded[:values.size] = values
    blocks = padded.reshape(chunks, chunk)
    scales = (np.abs(blocks).max(axis=1) / 127).astype(np.float32)
    safe = np.where(scales > 0, scales, 1).astype(np.float32)
    codes = np.rint(blocks / safe[:, None]).clip(-127, 127).astype(np.int8)
    return codes.reshape(-1)[:values.size].copy(), scales


def int8_decode(codes: np.ndarray, scales: np.ndarray, chunk: int = INT8_CHUNK) -> np.ndarray:
    """The float32 values ``codes * scale`` of their chunk."""
    return codes.astype(np.float32) * np.repeat(scales, chunk)[:codes.size]


def bf16_round(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to bfloat16 and back to float32 (what bf16 sends)."""
    out = np.empty(values.size, BFLOAT16)
    narrow(np.ascontiguousarray(values, np.float32).reshape(-1), out)
    return widen(out).reshape(values.shape)


class _Pending:
    """Collectives in flight and how to turn their buffers into the averaged float32 array."""

    def __init__(self, works, decode):
        self.works, self.decode = works, decode

    def finish(self) -> np.ndarray:
        for work in self.works:
            work.wait()
        return self.decode()


def start_average(values: np.ndarray, compress: str | None, group,
                  chunk: int = INT8_CHUNK, lost: np.ndarray | None = None) -> _Pending:
    """Launch the (compressed) average of 1-D float32 ``values`` over ``group``.

    Args:
        values: this rank's contribution (not modified; copied or encoded first). Without
            compression its dtype is kept; bf16 and int8 encode float32 values.
        compress: None (float32), ``"bf16"`` or ``"int8"``.
        group: the process group.
        chunk: int8 elements per scale.
        lost: if given (``values``' size), filled with what compression took from this
            rank's contribution: ``values`` minus what its message carries (error feedback
            adds it to the next contribution).

    Returns:
        A handle whose ``finish()`` waits and returns the average (a new array).
    """
    if compress is None:
        buffer = values.copy()
        if lost is not None:
            lost[...] = 0
        work = dist.all_reduce(buffer, op=dist.ReduceOp.AVG, group=group, async_op=True)
        return _Pending([work], lambda: buffer)
    if compress == "bf16":
        buffer = np.empty(values.size, BFLOAT16)
        narrow(np.ascontiguousarray(values, np.float32), buffer)
        if lost is not None:            # before the all_reduce overwrites the buffer
            np.subtract(values, widen(buffer), out=lost)
        work = dist.all_reduce(buffer, op=dist.ReduceOp.AVG, group=group, async_op=True)
        return _Pending([work], lambda: widen(buffer))
    if compress == "int8":
        return _start_int8(values, group, chunk, lost)
    raise ValueError(f"compress must be None, 'bf16' or 'int8', got {compress!r}")


def _start_int8(values: np.ndarray, group, chunk: int, lost: np.ndarray | None) -> _Pending:
    size = dist.get_world_size(group)
    codes, scales = int8_encode(values, chunk)
    if lost is not None:
        np.subtract(values, int8_decode(codes, scales, chunk), out=lost)
    all_codes = np.empty(size * codes.size, np.int8)
    all_scales = np.empty(size * scales.size, np.float32)
    works = [dist.all_gather_into_tensor(all_codes, codes, group=group, async_op=True),
             dist.all_gather_into_tensor(all_scales, scales, group=group, async_op=True)]

    def decode():
        total = np.zeros(values.size, np.float32)
        for code_block, scale_block in zip(all_codes.reshape(size, -1),
                                           all_scales.reshape(size, -1), strict=True):
            total += int8_decode(code_block, scale_block, chunk)
        return total / np.float32(size)
    return _Pending(works, decode)


class PowerSGD:
    """Rank-``rank`` gradient compression with error feedback (Vogels et al. 2019).

    For every gradient matrix M (an array of 2 or more dimensions seen as ``shape[0]`` rows;
    only where ``(rows + cols) * rank < rows * cols``), each step::

        M += error                       # error feedback: what earlier steps left out
        P = avg_over_ranks(M @ Q)        # one all_reduce for every P
        P = orthonormal columns of P     # QR
        Q = avg_over_ranks(M.T @ P)      # one all_reduce for every Q (the next warm start)
        error = M - P @ Q.T              # kept on this rank
        M = P @ Q.T                      # the averaged, rank-r gradient

    Every other array (1-D: biases, norms; and matrices too small to gain) is averaged
    uncompressed in one all_reduce, as torch's ``powerSGD_hook`` does. Each Q starts from a
    standard normal ``(cols, r)`` draw of ``numpy.random.default_rng(seed)``, matrices in
    layout order (the same on every rank), and is warm-started from the previous step's Q
    afterwards. The Ps and the Qs of all matrices travel in one all_reduce each.

    Args:
        layout: the flat gradient buffer's layout (float32 or float64).
        rank: the approximation rank r.
        seed: seed of the initial Q.
    """

    def __init__(self, layout: FlatLayout, rank: int = 4, seed: int = 0):
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"PowerSGD: rank must be an integer >= 1, got {rank!r}")
        self.layout, self.rank = layout, rank
        rng = np.random.default_rng(seed)
        self.matrices: dict[str, tuple[int, int]] = {}
        for name, shape in layout.shapes.items():
            rows = shape[0] if len(shape) >= 2 else 0
            cols = int(np.prod(shape[1:])) if rows else 0
            if rows and (rows + cols) * min(rank, rows, cols) < rows * cols:
                self.matrices[name] = (rows, cols)
        self.plain = [name for name in layout.shapes if name not in self.matrices]
        self.r = {name: min(rank, *dims) for name, dims in self.matrices.items()}
        self.q = {name: rng.standard_normal((cols, self.r[name])).astype(layout.dtype)
                  for name, (rows, cols) in self.matrices.items()}
        self.error = {name: np.zeros(dims, layout.dtype)
                      for name, dims in self.matrices.items()}

    def average(self, flat_grads: np.ndarray, group) -> None:
        """Replace ``flat_grads`` (this rank's gradients) by the compressed average, in place."""
        views = self.layout.views(flat_grads)
        plain = np.concatenate([views[n].reshape(-1) for n in self.plain]) if self.plain \
            else np.zeros(0, self.layout.dtype)
        plain_work = dist.all_reduce(plain, op=dist.ReduceOp.AVG, group=group, async_op=True) \
            if plain.size else None
        grads = {n: views[n].reshape(self.matrices[n]) for n in self.matrices}
        if grads:
            self._average_matrices(grads, group)
        if plain_work is not None:
            plain_work.wait()
        offset = 0
        for name in self.plain:
            view = views[name].reshape(-1)
            view[...] = plain[offset:offset + view.size]
            offset += view.size

    def _average_matrices(self, grads: dict[str, np.ndarray], group) -> None:
        for name, grad in grads.items():
            self.error[name] += grad               # M = grad + error, kept in error's array
        p = self._stack({n: self.error[n] @ self.q[n] for n in grads})
        dist.all_reduce(p, op=dist.ReduceOp.AVG, group=group)
        ps = {n: np.linalg.qr(block)[0] for n, block in self._split(p, "p").items()}
        q = self._stack({n: self.error[n].T @ ps[n] for n in grads})
        dist.all_reduce(q, op=dist.ReduceOp.AVG, group=group)
        self.q = {n: block.copy() for n, block in self._split(q, "q").items()}
        for name, grad in grads.items():
            approx = ps[name] @ self.q[name].T
            self.error[name] -= approx
            grad[...] = approx

    def _stack(self, blocks: dict[str, np.ndarray]) -> np.ndarray:
        if not blocks:
            return np.zeros(0, self.layout.dtype)
        return np.concatenate([b.reshape(-1) for b in blocks.values()]).astype(self.layout.dtype)

    def _split(self, flat: np.ndarray, which: str) -> dict[str, np.ndarray]:
        out, offset = {}, 0
        for name, (rows, cols) in self.matrices.items():
            shape = (rows if which == "p" else cols, self.r[name])
            size = shape[0] * shape[1]
            out[name] = flat[offset:offset + size].reshape(shape)
            offset += size
        return out

    def state_dict(self) -> dict:
        """The warm-start Qs and the error-feedback residuals (per rank)."""
        return {"q": {n: a.copy() for n, a in self.q.items()},
                "error": {n: a.copy() for n, a in self.error.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`'s arrays.

        Raises:
            ValueError: the state holds other matrices or shapes than this object's.
        """
        for key in ("q", "error"):
            mine = getattr(self, key)
            shapes = {name: np.shape(array) for name, array in state[key].items()}
            if shapes != {name: array.shape for name, array in mine.items()}:
                raise ValueError(f"PowerSGD.load_state_dict: saved {key} of shapes {shapes}, "
                                 f"this object has {({n: a.shape for n, a in mine.items()})}")
            for name, array in state[key].items():
                np.copyto(mine[name], array)
