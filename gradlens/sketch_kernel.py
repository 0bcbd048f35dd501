"""CPU kernel for the CountSketch scatter ``p[h(j)] += sign(j) * x[j]`` (numba).

Written by hand because no library call does this in one pass: ``index_add_``/``np.bincount``
need a signed copy of ``x`` and a 12-byte table entry per coordinate (int64 row, float32 sign),
which makes the scatter memory-bound at ~30 bytes per coordinate (0.6–0.9 s per SmolLM2 gradient,
134 M coordinates, on the 2-core box). Here a table entry is one int32 *code* ``2 * row + neg``
and ``x`` is read once: 8 bytes per coordinate.

Determinism: the coordinates are cut into ``CHUNKS`` fixed chunks, each accumulated into its
own float32 row (float32 keeps the accumulators of a 283 K-dimensional sketch in cache) and the
rows summed in order, so the result does not depend on the number of threads (bit-identical
across processes and machines).
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
    def _scatter(x, codes, n_out, out):  # out: float32 [CHUNKS, n_out], zeroed
        n = x.shape[0]
        step = (n + CHUNKS - 1) // CHUNKS
        for c in numba.prange(CHUNKS):
            acc = out[c]
            for j in range(c * step, min(n, (c + 1) * step)):
                code = codes[j]
                acc[code >> 1] += np.float32(1 - 2 * (code & 1)) * x[j]


def sketch(x: np.ndarray, codes: np.ndarray, n_out: int) -> np.ndarray:
    """p[n_out] (float32) with p[code >> 1] += ±x[j] for x float32[n], codes int32[n]."""
    if x.shape != codes.shape:
        raise ValueError(f"x {x.shape} and codes {codes.shape} differ")
    if numba is None:
        raise RuntimeError("the sketch kernel needs numba")
    out = np.zeros((CHUNKS, n_out), dtype=np.float32)
    _scatter(np.ascontiguousarray(x, dtype=np.float32), codes, n_out, out)
    return out.sum(0)
