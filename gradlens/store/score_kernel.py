"""CPU kernel for one query's dot products with every row of a float16 index (numba).

A float16 index stores each vector as a unit vector u_c with its norm's square in ``sqnorms``
([rows, K] float64), so a row's dot product is Σ_c sqrt(|t_c|²) <q_c, u_c>. Written by hand
because the library route reads the data several times: converting float16 to float32 (a copy),
a matrix-vector product per component, then ``sqrt(sq[:, c]) * part``, which strides through the
whole [rows, K] norm block once per component (one cache line per row each time). Here rows are
taken a block at a time: the block's norms are read once, row by row, into a per-component
scale small enough to stay in cache while every component of the block is read once. numba has
no float16 arithmetic on the CPU: 16 or 8 values at a time are converted as one vector
(``_half_dot``, LLVM IR that becomes F16C's ``vcvtph2ps``), the rest (or everything, on a CPU
without F16C) through a 65,536-entry float32 table (256 KB). Each component's data is passed by
its address: numba takes no list of differently shaped arrays without copying. At N = 200,000 x
211 x 16 this is ~3x faster than the torch route.

Rounding: each <q_c, u_c> is a float32 sum of float32 products (as the float32 matrix product
it replaces), scaled in float32 by sqrt(|t_c|²) (taken in float32: a float64 square root per
value cost a third of the pass) and summed over components in float64. The scale adds at most
3 2^-24 relative to each component's term, against the 2^-11 a float16 value already carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a pinned dependency
    numba = None

#: Rows per block: their scales (BLOCK x K float32, 211 components: 216 KB) stay in cache.
BLOCK = 256

#: float32 value of every float16 bit pattern.
HALF_TABLE = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


def _has_f16c() -> bool:
    try:
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get("f16c", False))
    except Exception:  # pragma: no cover - feature query unavailable: the portable path
        return False


F16C = numba is not None and _has_f16c()


def available() -> bool:
    """Whether the numba kernel can be used (else callers use the numpy/torch path)."""
    return numba is not None


if numba is not None:
    from llvmlite import ir
    from numba.extending import intrinsic

    @intrinsic
    def _load_u16(_typingctx, address, index):
        """The uint16 at byte address ``address + 2 * index`` (no bounds check)."""
        sig = numba.types.uint16(address, index)

        def codegen(context, builder, signature, args):
            ptr = builder.inttoptr(args[0], ir.IntType(16).as_pointer())
            return builder.load(builder.gep(ptr, [args[1]]))

        return sig, codegen

    def _half_dot(width):
        """An intrinsic (address, index, q, offset) -> float32: the dot product of the
        ``width`` float16 values at element ``index`` of ``address`` with q.flat[offset:
        offset + width], as vector operations (F16C's conversion; the sum a fixed tree)."""

        @intrinsic
        def dot(_typingctx, address, index, q, offset):
            sig = numba.types.float32(address, index, q, offset)

            def codegen(context, builder, signature, args):
                half = ir.VectorType(ir.HalfType(), width)
                single = ir.VectorType(ir.FloatType(), width)
                ptr = builder.inttoptr(args[0], ir.IntType(16).as_pointer())
                pu = builder.bitcast(builder.gep(ptr, [args[1]]), half.as_pointer())
                q_arr = context.make_array(signature.args[2])(context, builder, args[2])
                pq = builder.bitcast(builder.gep(q_arr.data, [args[3]]), single.as_pointer())
                v = builder.fmul(
                    builder.fpext(builder.load(pu, align=2), single), builder.load(pq, align=4)
                )
                n = width
                while n > 1:  # halves added pairwise: a fixed order, no reassociation flags
                    n //= 2
                    lanes = ir.VectorType(ir.IntType(32), n)
                    lo = builder.shuffle_vector(v, v, ir.Constant(lanes, list(range(n))))
                    hi = builder.shuffle_vector(v, v, ir.Constant(lanes, list(range(n, 2 * n))))
                    v = builder.fadd(lo, hi)
                return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))

            return sig, codegen

        return dot

    _dot16 = _half_dot(16)
    _dot8 = _half_dot(8)

    @numba.njit(inline="always")
    def _row_dot_table(a, base, d, q, offset, table):
        s = np.float32(0.0)
        for e in range(d):
            s += table[_load_u16(a, base + e)] * q.flat[offset + e]
        return s

    @numba.njit(inline="always")
    def _row_dot_f16c(a, base, d, q, offset, table):
        s = np.float32(0.0)
        e = 0
        while e + 16 <= d:
            s += _dot16(a, base + e, q, offset + e)
            e += 16
        if e + 8 <= d:
            s += _dot8(a, base + e, q, offset + e)
            e += 8
        for k in range(e, d):
            s += table[_load_u16(a, base + k)] * q.flat[offset + k]
        return s

    # Chosen when this module is imported; numba's cache is keyed by the CPU's features, so a
    # cached kernel is only reused on a CPU of the same kind. Without F16C, LLVM would turn
    # the vector conversion into calls to a runtime function the JIT does not provide.
    _row_dot = _row_dot_f16c if F16C else _row_dot_table

    @numba.njit(parallel=True, cache=True)
    def _half_dots(addresses, dims, columns, query, sq, table, dots, t_sq):
        rows = sq.shape[0]
        width = query.shape[1]
        k = columns.shape[0]
        for b in numba.prange((rows + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(rows, lo + BLOCK) - lo
            # the block's norms, read row by row (contiguous) once, kept per component
            scale = np.empty((k, n), dtype=np.float32)
            for i in range(n):
                total = 0.0
                for j in range(k):
                    v = sq[lo + i, columns[j]]
                    total += v
                    scale[j, i] = np.sqrt(np.float32(v))
                t_sq[lo + i] = total
            acc = np.zeros(n)
            for j in range(k):
                a, d, s = addresses[j], dims[j], scale[j]
                for i in range(n):
                    acc[i] += s[i] * _row_dot(a, (lo + i) * d, d, query, j * width, table)
            for i in range(n):
                dots[lo + i] += acc[i]


def half_dots(
    blocks: Sequence[np.ndarray],
    query: Sequence[np.ndarray],
    sq: np.ndarray,
    columns: Sequence[int],
    dots: np.ndarray,
    t_sq: np.ndarray,
) -> None:
    """For rows ``r`` of one chunk: ``dots[r] += Σ_j sqrt(sq[r, columns[j]]) <query[j],
    blocks[j][r]>`` and ``t_sq[r] = Σ_j sq[r, columns[j]]``. blocks: float16 [rows, d_j]
    C-contiguous (unit vectors); query: float32 [d_j]; sq: float64 [rows, K]; dots, t_sq:
    float64 [rows] C-contiguous (written in place)."""
    rows = sq.shape[0]
    if not (len(blocks) == len(query) == len(columns)):
        raise ValueError(
            f"{len(blocks)} blocks, {len(query)} query vectors, {len(columns)} columns"
        )
    if dots.shape != (rows,) or t_sq.shape != (rows,) or dots.dtype != np.float64:
        raise ValueError(f"dots and t_sq must be float64 [{rows}]")
    if not (dots.flags.c_contiguous and t_sq.flags.c_contiguous and t_sq.dtype == np.float64):
        raise ValueError("dots and t_sq must be C-contiguous float64")
    if len(columns) and not 0 <= min(columns) <= max(columns) < sq.shape[1]:
        raise ValueError(f"columns out of range for {sq.shape[1]} norms")
    width = max((len(q) for q in query), default=0)
    q = np.zeros((len(query), width), dtype=np.float32)
    for j, (block, v) in enumerate(zip(blocks, query, strict=True)):
        # the kernel reads by address without bounds checks: shapes are checked here
        if block.dtype != np.float16 or not block.flags.c_contiguous:
            raise ValueError(f"block {j} must be C-contiguous float16, got {block.dtype}")
        if block.shape != (rows, len(v)):
            raise ValueError(f"block {j} is {block.shape}, expected {(rows, len(v))}")
        q[j, : len(v)] = v
    if numba is None:
        raise RuntimeError("the score kernel needs numba")
    addresses = np.array([b.ctypes.data for b in blocks], dtype=np.int64)
    dims = np.array([len(v) for v in query], dtype=np.int64)
    cols = np.array(columns, dtype=np.int64)
    sq = np.asarray(sq, dtype=np.float64)
    _half_dots(addresses, dims, cols, q, sq, HALF_TABLE, dots, t_sq)
