"""The numba kernel that scores a float16 index (gradlens.store.score_kernel) against plain
float64 numpy, alone and through ``RunIndex.score``.

Tolerance: float16 values convert to float32 exactly, so the kernel's rounding in <q_c, u_c> is
float32 (each product and each of the d - 1 additions: relative 2^-24), at most
(d + 1) 2^-24 Σ_e |q_e u_e| ≤ (d + 1) 2^-24 |q_c| |u_c| per component. The float32 scale
sqrt(|t_c|²) and its product add at most 3 2^-24 |q_c| |u_c| |t_c| more, so (d + 4) 2^-24 per
component (float64 rounding after that is negligible). Summed, Σ_c |q_c| |t_c| ≤
sqrt(Σ|q_c|² Σ|t_c|²) (Cauchy-Schwarz), so a cosine is off by at most about (d_max + 4) 2^-24
(|u_c| ≤ 1 + 2^-10).
"""

from __future__ import annotations

import numpy as np
import pytest

from gradlens.store import score_kernel
from gradlens.store.index import EPS, IndexWriter, open_folder

pytestmark = pytest.mark.skipif(not score_kernel.available(), reason="needs numba")

#: dims covering the 16-wide, 8-wide and scalar parts of a row's dot product
DIMS = [16, 8, 5, 24, 3, 1, 33]


def _reference(blocks, query, sq, columns):
    """float64 dots and |t|² of the rows: the obvious computation."""
    dots = sum(
        np.sqrt(sq[:, c]) * (b.astype(np.float64) @ q.astype(np.float64))
        for b, q, c in zip(blocks, query, columns, strict=True)
    )
    return dots, sq[:, list(columns)].sum(1)


def test_half_dots_equal_float64_numpy():
    rng = np.random.default_rng(3)
    rows = 2 * score_kernel.BLOCK + 37  # the last block short
    units = [rng.standard_normal((rows, d)) for d in DIMS]
    blocks = [(u / np.linalg.norm(u, axis=1, keepdims=True)).astype(np.float16) for u in units]
    sq = rng.uniform(0.1, 10.0, (rows, len(DIMS) + 2))
    columns = [2, 0, 1, 5, 3, 8, 4]  # the blocks' norms are other columns, out of order
    query = [rng.standard_normal(d).astype(np.float32) for d in DIMS]
    dots, t_sq = np.full(rows, 0.5), np.zeros(rows)  # dots are added to
    score_kernel.half_dots(blocks, query, sq, columns, dots, t_sq)
    want_dots, want_sq = _reference(blocks, query, sq, columns)
    bound = sum(
        (d + 4)
        * 2.0**-24
        * np.linalg.norm(b.astype(np.float64), axis=1)
        * np.linalg.norm(q)
        * np.sqrt(sq[:, c])
        for d, b, q, c in zip(DIMS, blocks, query, columns, strict=True)
    )
    assert np.all(np.abs(dots - 0.5 - want_dots) <= bound + 1e-12)
    np.testing.assert_allclose(t_sq, want_sq, rtol=1e-14)


def test_half_dots_checks_shapes():
    blocks = [np.zeros((4, 16), dtype=np.float16)]
    query = [np.zeros(16, dtype=np.float32)]
    sq, dots, t_sq = np.ones((4, 2)), np.zeros(4), np.zeros(4)
    with pytest.raises(ValueError, match="float16"):
        score_kernel.half_dots([blocks[0].astype(np.float32)], query, sq, [0], dots, t_sq)
    with pytest.raises(ValueError, match="expected"):
        score_kernel.half_dots([blocks[0][:3]], query, sq, [0], dots, t_sq)
    with pytest.raises(ValueError, match="columns"):
        score_kernel.half_dots(blocks, query, sq, [2], dots, t_sq)
    with pytest.raises(ValueError, match="float64"):
        score_kernel.half_dots(blocks, query, sq, [0], dots[:3], t_sq)


@pytest.mark.parametrize("subset", [None, [4, 1, 6]])
def test_float16_index_score_equals_float64_numpy(tmp_path, monkeypatch, subset):
    rng = np.random.default_rng(5)
    n, comps = 700, list(range(len(DIMS)))
    writer = IndexWriter(tmp_path / "ix", "t", comps, DIMS, {"train": n}, "float16")
    writer.write_block("train", 0, [rng.standard_normal((n, d)) * 3 for d in DIMS])
    writer.finalize(digests=False)
    writer.close()
    ix = open_folder(tmp_path / "ix")
    query = [rng.standard_normal(d).astype(np.float32) for d in DIMS]
    got = ix.score(query, subset, chunk_bytes=99 * 66)  # 99-row chunks, the last one short
    pos = ix.positions(subset)
    sq = np.asarray(ix.sqnorms("train"))
    blocks = [np.asarray(ix._file("train", k)) for k in pos]
    dots, t_sq = _reference(blocks, [query[k] for k in pos], sq, pos)
    q_sq = sum(float(query[k].astype(np.float64) @ query[k]) for k in pos)
    want = dots / (np.sqrt(q_sq * t_sq) + EPS)
    np.testing.assert_allclose(got.cosine, want, rtol=0, atol=(max(DIMS) + 5) * 2.0**-24)
    np.testing.assert_allclose(got.train_sqnorm, t_sq, rtol=1e-14)
    monkeypatch.setattr(score_kernel, "available", lambda: False)  # the torch path agrees
    np.testing.assert_allclose(ix.score(query, subset).cosine, got.cosine, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["_row_dot_table", "_row_dot_f16c"])
def test_both_row_dots_equal_float64(name):
    """The table path (CPUs without F16C) and the vector path give one row's dot product."""
    if name == "_row_dot_f16c" and not score_kernel.F16C:
        pytest.skip("this CPU has no F16C")
    rng = np.random.default_rng(7)
    row_dot = getattr(score_kernel, name)
    for d in DIMS:
        u = rng.standard_normal((3, d)).astype(np.float16)
        q = rng.standard_normal((2, d)).astype(np.float32)
        got = row_dot(u.ctypes.data, 2 * d, d, q, d, score_kernel.HALF_TABLE)
        want = u[2].astype(np.float64) @ q[1].astype(np.float64)
        assert abs(got - want) <= (d + 1) * 2.0**-24 * np.abs(u[2] * q[1].astype(np.float64)).sum()
