"""CPU kernel for the block-hashed CountSketch of ``gradlens.projection`` (numba).

Written by hand because no library call does this in one pass: ``index_add_``/``np.bincount``
need the table expanded to one int64 row and one float32 sign per coordinate plus a signed copy
of ``x`` (~30 bytes of memory traffic per coordinate). Here one int64 table entry serves a group
of ``width`` consecutive coordinates (a cyclic offset and ``width`` sign bits) and ``x`` is read
once: ~4.5 bytes per coordinate, and the adds of a group go to consecutive accumulators.

Determinism: the groups are cut into ``CHUNKS`` fixed chunks, each accumulated into its own
float32 row (float32 keeps a 283 K-dimensional sketch's accumulators near the cache) and the rows
summed in order, so the result does not depend on the number of threads (bit-identical across
processes and machines).
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a pinned dependency; torch fallback otherwise
    numba = None

CHUNKS = 8


def available() -> bool:
    """Whether the numba kernel can be used (else callers fall back to ``index_add_``)."""
    return numba is not None


if numba is not None:

    @numba.njit(parallel=True, cache=True)
    def _scatter(x, table, a, length, width, out):  # out: float32 [CHUNKS, n_out], zeroed
        n = x.shape[0]
        n_groups = table.shape[0]
        step = (n_groups + CHUNKS - 1) // CHUNKS
        for c in numba.prange(CHUNKS):
            acc = out[c]
            for g in range(c * step, min(n_groups, (c + 1) * step)):
                code = table[g]
                start = code >> 16
                j0 = g * width
                if width == 16 and j0 + 16 <= n and start + 16 <= length:
                    # the common case, with a constant trip count (unrolled: ~2x faster)
                    base = a + start
                    for r in range(16):
                        v = x[j0 + r]
                        if (code >> r) & 1:
                            v = -v
                        acc[base + r] += v
                else:  # width 1, the last partial group, or an offset that wraps around
                    for r in range(min(width, n - j0)):
                        v = x[j0 + r]
                        if (code >> r) & 1:
                            v = -v
                        acc[a + (start + r) % length] += v


def accumulate(
    x: np.ndarray, table: np.ndarray, a: int, length: int, width: int, acc: np.ndarray
) -> None:
    """Add the sketch of x float32[n] into ``acc`` float32 [CHUNKS, n_out] (sum over axis 0
    for the result): coordinate ``j = g * width + r`` adds ``±x[j]`` to row
    ``a + (start_g + r) % length``, with ``start_g = table[g] >> 16`` and the sign negative where
    bit r of ``table[g]`` is set; table int64[ceil(n / width)]."""
    if table.shape != (-(-x.shape[0] // width),):
        raise ValueError(f"x {x.shape} needs {-(-x.shape[0] // width)} table entries")
    if acc.dtype != np.float32 or acc.ndim != 2 or acc.shape[0] != CHUNKS:
        raise ValueError(f"acc must be float32 [{CHUNKS}, n_out], got {acc.dtype} {acc.shape}")
    if numba is None:
        raise RuntimeError("the sketch kernel needs numba")
    _scatter(np.ascontiguousarray(x, dtype=np.float32), table, a, length, width, acc)


def sketch(
    x: np.ndarray, table: np.ndarray, a: int, length: int, width: int, n_out: int
) -> np.ndarray:
    """p[n_out] (float32), the sketch of x alone (see ``accumulate``)."""
    acc = np.zeros((CHUNKS, n_out), dtype=np.float32)
    accumulate(x, table, a, length, width, acc)
    return acc.sum(0)
