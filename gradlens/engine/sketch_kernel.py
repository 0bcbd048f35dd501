"""CPU kernel for the block-hashed CountSketch of ``gradlens.engine.projection`` (numba).

Written by hand because no library call does this in one pass: ``index_add_``/``np.bincount``
need the table expanded to one int64 row and one float32 sign per coordinate plus a signed copy
of ``x`` (~30 bytes of memory traffic per coordinate). Here one int64 table entry serves a group
of ``width`` consecutive coordinates (a cyclic offset and ``width`` sign bits) and ``x`` is read
once: ~4.5 bytes per coordinate. A group of 16 that does not wrap around is one 16-lane vector
operation (``_add16``: load, negate the lanes whose sign bit is set, add, store), emitted as
LLVM IR because numba cannot prove that ``x`` and the accumulators do not overlap and so never
vectorises the scalar loop (about 5x faster: benchmarks/RESULTS.md).

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
    from llvmlite import ir
    from numba.extending import intrinsic

    @intrinsic
    def _add16(_typingctx, acc, offset, x, start, code):
        """acc[offset:offset + 16] += x[start:start + 16] with lane r negated where bit r of
        ``code`` is set, as one <16 x float> operation. No bounds check: callers ensure both
        slices are in range."""
        sig = numba.types.void(acc, offset, x, start, code)

        def codegen(context, builder, signature, args):
            acc_arr = context.make_array(signature.args[0])(context, builder, args[0])
            x_arr = context.make_array(signature.args[2])(context, builder, args[2])
            vec = ir.VectorType(ir.FloatType(), 16)
            pa = builder.bitcast(builder.gep(acc_arr.data, [args[1]]), vec.as_pointer())
            px = builder.bitcast(builder.gep(x_arr.data, [args[3]]), vec.as_pointer())
            va = builder.load(pa, align=4)
            vx = builder.load(px, align=4)
            # bit r of the low 16 bits -> lane r (LLVM's bitcast order on little-endian x86)
            negate = builder.bitcast(
                builder.trunc(args[4], ir.IntType(16)), ir.VectorType(ir.IntType(1), 16)
            )
            total = builder.fadd(va, builder.select(negate, builder.fneg(vx), vx))
            builder.store(total, pa, align=4)  # unaligned: offsets are arbitrary
            return context.get_dummy_value()

        return sig, codegen

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
                    _add16(acc, a + start, x, j0, code)  # the common case: one vector op
                else:  # width 1, the last partial group, or an offset that wraps around
                    _add_wrapping(acc, a, start, length, x, j0, min(width, n - j0), code)

    @numba.njit(inline="never", cache=True)
    def _add_wrapping(acc, a, start, length, x, j0, m, code):
        """acc[a + (start + r) % length] += ±x[j0 + r] for r < m, as two plain loops (before
        and after the wrap: no division per coordinate). Kept out of ``_scatter``'s loop, whose
        vector path compiles better without it (measured)."""
        split = min(m, length - start)
        for r in range(split):
            v = x[j0 + r]
            acc[a + start + r] += -v if (code >> r) & 1 else v
        for r in range(split, m):
            v = x[j0 + r]
            acc[a + start + r - length] += -v if (code >> r) & 1 else v


def accumulate(
    x: np.ndarray,
    table: np.ndarray,
    a: int,
    length: int,
    width: int,
    acc: np.ndarray,
    table_checked: bool = False,
) -> None:
    """Add the sketch of x float32[n] into ``acc`` float32 [CHUNKS, n_out] (sum over axis 0
    for the result): coordinate ``j = g * width + r`` adds ``±x[j]`` to row
    ``a + (start_g + r) % length``, with ``start_g = table[g] >> 16`` and the sign negative where
    bit r of ``table[g]`` is set; table int64[ceil(n / width)]. ``table_checked``: the caller
    has already verified (see ``check_table``) that every offset lies in [0, length)."""
    if table.shape != (-(-x.shape[0] // width),):
        raise ValueError(f"x {x.shape} needs {-(-x.shape[0] // width)} table entries")
    if acc.dtype != np.float32 or acc.ndim != 2 or acc.shape[0] != CHUNKS:
        raise ValueError(f"acc must be float32 [{CHUNKS}, n_out], got {acc.dtype} {acc.shape}")
    if not acc.flags.c_contiguous or a < 0 or length < 1 or a + length > acc.shape[1]:
        raise ValueError(f"rows [{a}, {a + length}) do not fit a C-contiguous acc {acc.shape}")
    if width not in (1, 16):
        raise ValueError(f"width must be 1 or 16, got {width}")
    # the vector path writes without bounds checks: every offset must lie in [0, length)
    if not table_checked:
        check_table(table, length)
    if numba is None:
        raise RuntimeError("the sketch kernel needs numba")
    table = np.ascontiguousarray(table, dtype=np.int64)
    _scatter(np.ascontiguousarray(x, dtype=np.float32), table, a, length, width, acc)


def check_table(table: np.ndarray, length: int) -> None:
    """Raise ValueError unless every entry's offset ``table[g] >> 16`` lies in [0, length)."""
    if table.size and (int(table.min()) < 0 or int(table.max()) >> 16 >= length):
        raise ValueError(f"table offsets must lie in [0, {length})")


def sketch(
    x: np.ndarray, table: np.ndarray, a: int, length: int, width: int, n_out: int
) -> np.ndarray:
    """p[n_out] (float32), the sketch of x alone (see ``accumulate``)."""
    acc = np.zeros((CHUNKS, n_out), dtype=np.float32)
    accumulate(x, table, a, length, width, acc)
    return acc.sum(0)
