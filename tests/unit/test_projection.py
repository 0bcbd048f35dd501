"""gradlens.engine.projection: determinism across processes, norm preservation, accuracy,
reference."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradlens.engine import projection as proj
from gradlens.engine.projection import GAUSSIAN_TAG, Projector, derive_seed

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import hashlib, torch
from gradlens.engine.projection import Projector
x = torch.randn(3, 5000, generator=torch.Generator().manual_seed(7))
h = hashlib.sha256()
for method, s, block in (("gaussian", 1, 700), ("sjlt", 1, 1200), ("sjlt", 3, None)):
    y = Projector(5000, 64, method, seed=11, s=s, block=block).project(x)
    h.update(y.numpy().tobytes())
print(h.hexdigest())
"""


def _digest_here() -> str:
    x = torch.randn(3, 5000, generator=torch.Generator().manual_seed(7))
    h = hashlib.sha256()
    for method, s, block in (("gaussian", 1, 700), ("sjlt", 1, 1200), ("sjlt", 3, None)):
        y = Projector(5000, 64, method, seed=11, s=s, block=block).project(x)
        h.update(y.numpy().tobytes())
    return h.hexdigest()


def test_bit_identical_across_processes() -> None:
    procs = []
    # a salted-hash dependence, or a thread-count dependence of the CPU sketch kernel,
    # would show up here
    for hash_seed, threads in (("1", "1"), ("2", "2")):
        env = dict(
            os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS=threads
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _SCRIPT],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
        )
    digests = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        digests.append(out.strip())
    assert digests[0] == digests[1]
    assert digests[0] == _digest_here()


def test_gaussian_equals_full_matrix_from_the_same_generators() -> None:
    n_in, n_out, block, seed = 1000, 48, 300, 5
    p = Projector(n_in, n_out, "gaussian", seed=seed, block=block)
    rows = []
    for i in range(math.ceil(n_in / block)):
        gen = torch.Generator().manual_seed(derive_seed(seed, GAUSSIAN_TAG, i))
        rows.append(torch.randn((min(block, n_in - i * block), n_out), generator=gen))
    full = torch.cat(rows) / math.sqrt(n_out)
    assert torch.equal(p.matrix(), full)
    x = torch.randn(6, n_in, generator=torch.Generator().manual_seed(1))
    y = p.project(x)
    assert y.dtype == torch.float32 and y.shape == (6, n_out)
    # float32 sums of n_in products: BLAS picks its kernel (and summation order) by batch shape,
    # so results agree with the float64 product within the worst-case float32 bound
    # gamma_n = n·eps·Σ|x_i R_ij|, whatever the batch size or leading shape
    ref = (x.double() @ full.double()).float()
    bound = n_in * torch.finfo(torch.float32).eps * (x.abs() @ full.abs())
    for got, idx in (
        (y, slice(None)),
        (p.project(x[:2]), slice(0, 2)),
        (p.project(x.reshape(2, 3, n_in)).reshape(6, n_out), slice(None)),
    ):
        assert ((got - ref[idx]).abs() <= bound[idx]).all()
    # another seed gives another matrix
    assert not torch.equal(Projector(n_in, n_out, "gaussian", seed=6, block=block).matrix(), full)


@pytest.mark.parametrize("s", [1, 3])
def test_sjlt_structure_and_reference(s: int) -> None:
    n_in, n_out = 700, 30
    p = Projector(n_in, n_out, "sjlt", seed=2, s=s, block=256)
    m = p.matrix()  # [n_in, n_out]
    nz = m != 0
    assert (nz.sum(dim=1) == s).all()
    assert torch.allclose(m[nz].abs(), torch.full((int(nz.sum()),), 1 / math.sqrt(s)))
    for r in range(s):  # exactly one nonzero per row range
        a, b = r * n_out // s, (r + 1) * n_out // s
        assert (nz[:, a:b].sum(dim=1) == 1).all()
    x = torch.randn(4, n_in, generator=torch.Generator().manual_seed(3))
    y = p.project(x)
    assert torch.allclose(y, x @ m, rtol=1e-5, atol=1e-5)
    assert torch.equal(p.project(x[1:3]), y[1:3])
    assert torch.equal(Projector(n_in, n_out, "sjlt", seed=2, s=s, block=256).project(x), y)


def test_sjlt_block_hash_moves_groups_of_16_with_a_cyclic_offset() -> None:
    n_in, n_out, block = 1000, 64, 520  # a partial group at the end of each block
    p = Projector(n_in, n_out, "sjlt", seed=3, block=block)
    assert p.width == 16 and Projector(100, 40, "sjlt", s=3).width == 1  # 13 rows per range
    for i in range(p.n_blocks):
        idx, sign = p.sjlt_block(i)
        table = p.sjlt_table(i)[0]
        for j in range(idx.shape[1]):
            g, r = divmod(j, 16)
            assert int(idx[0, j]) == ((int(table[g]) >> 16) + r) % n_out
            assert float(sign[0, j]) == (-1.0 if (int(table[g]) >> r) & 1 else 1.0)


def test_sjlt_collision_probability_is_one_over_rows() -> None:
    """Two coordinates of one group never share a row; of different groups they do with
    probability 1/L, as under a fully random hash (any lanes)."""
    n_in, n_out, trials = 64, 32, 3000
    hits = {(0, 5): 0, (0, 16): 0, (3, 40): 0, (15, 16): 0}
    for seed in range(trials):
        idx, _ = Projector(n_in, n_out, "sjlt", seed=seed).sjlt_block(0)
        for i, j in hits:
            hits[i, j] += int(idx[0, i] == idx[0, j])
    assert hits[0, 5] == 0
    for pair in ((0, 16), (3, 40), (15, 16)):  # expected 93.75, sd 9.5
        assert abs(hits[pair] - trials / n_out) < 40, (pair, hits[pair])


def test_sjlt_variance_is_the_block_formula_and_below_a_random_hash() -> None:
    """Var |Sx|^2 = (2/L) sum over pairs i != j in different groups of x_i^2 x_j^2 (s = 1); a
    fully random CountSketch also counts the same-group pairs. Energy concentrated in one group
    (an outlier row slice) separates the two formulas by a factor of ~13."""
    n_in, n_out, trials = 256, 32, 2000
    x = torch.ones(n_in, dtype=torch.float64)
    x[:16] = 20.0
    sq = x.square()
    group = torch.arange(n_in) // 16
    pair = sq[:, None] * sq[None, :]
    same = group[:, None] == group[None, :]
    block_var = 2 / n_out * float(pair[~same].sum())
    random_var = 2 / n_out * float(pair.sum() - pair.diagonal().sum())
    norms = torch.tensor(
        [
            float(Projector(n_in, n_out, "sjlt", seed=seed).project(x).double().square().sum())
            for seed in range(trials)
        ]
    )
    assert abs(float(norms.mean()) / float(sq.sum()) - 1) < 0.03  # unbiased
    assert random_var > 10 * block_var
    assert abs(float(norms.var()) / block_var - 1) < 0.2, (float(norms.var()), block_var)


@pytest.mark.parametrize("s", [1, 3])
def test_sjlt_cpu_kernel_equals_index_add_with_the_same_table(s: int) -> None:
    """The numba kernel (one int64 entry per group) against index_add_ in float64 over the
    table expanded per coordinate."""
    from gradlens.engine import sketch_kernel

    assert sketch_kernel.available()
    n_in, n_out, block = 5000, 97, 1200
    p = Projector(n_in, n_out, "sjlt", seed=4, s=s, block=block)
    x = torch.randn(3, n_in, generator=torch.Generator().manual_seed(8))
    want = torch.zeros(3, n_out, dtype=torch.float64)
    for i in range(p.n_blocks):
        lo, hi = i * block, min(n_in, (i + 1) * block)
        idx, sign = p.sjlt_block(i)
        for r in range(s):
            want.index_add_(1, idx[r], x[:, lo:hi].double() * sign[r].double())
    got = p.project(x)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)


def test_sjlt_without_numba_falls_back_to_index_add(monkeypatch) -> None:
    """Where numba is missing (and on CUDA) the same table is applied with index_add_."""
    from gradlens.engine import sketch_kernel

    x = torch.randn(2, 3000, generator=torch.Generator().manual_seed(5))
    with_kernel = Projector(3000, 50, "sjlt", seed=6, s=2, block=700).project(x)
    monkeypatch.setattr(sketch_kernel, "available", lambda: False)
    fallback = Projector(3000, 50, "sjlt", seed=6, s=2, block=700).project(x)
    assert torch.allclose(fallback, with_kernel, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("method", "s"), [("gaussian", 1), ("sjlt", 1), ("sjlt", 4)])
def test_norm_preserved_in_expectation(method: str, s: int) -> None:
    x = torch.randn(1, 1000, generator=torch.Generator().manual_seed(0))
    x[0, :10] *= 5.0  # not too flat
    sq = float(x.square().sum())
    ratios = [
        float(Projector(1000, 128, method, seed=seed, s=s).project(x).square().sum()) / sq
        for seed in range(100)
    ]
    mean = sum(ratios) / len(ratios)
    assert abs(mean - 1.0) < 0.05, mean  # sd of the mean is about 0.013
    assert 0.05 < (sum((r - mean) ** 2 for r in ratios) / len(ratios)) ** 0.5 < 0.3


@pytest.mark.parametrize(("method", "n_in"), [("sjlt", 262_144), ("gaussian", 16_384)])
def test_cosine_error_at_4096_dims(method: str, n_in: int) -> None:
    """JL error depends on n_out, not n_in: the dense Gaussian runs at a smaller n_in to keep
    the test fast (262,144 x 4,096 normals take seconds here)."""
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(1, n_in, generator=gen)
    noise = torch.randn(6, n_in, generator=gen)
    mix = torch.tensor([0.0, 0.3, 0.6, 1.0, 2.0, 5.0])[:, None]
    x = torch.cat([base, base + mix * noise])  # exact cosines spread over (0, 1]
    y = Projector(n_in, 4096, method, seed=9).project(x)
    exact = torch.nn.functional.cosine_similarity(x[:1].double(), x[1:].double())
    approx = torch.nn.functional.cosine_similarity(y[:1].double(), y[1:].double())
    assert (approx - exact).abs().max() <= 0.06


def test_component_dims_seeds_and_labels() -> None:
    assert proj.component_dims([100, 4194304, 3, 50], 0.01) == [1, 41943, 1, 1]
    assert proj.component_dims([250], 0.01) == [2]  # Python round: 2.5 -> 2
    with pytest.raises(ValueError):
        proj.component_dims([10], 0.0)
    # the scheme stored runs were computed with (changing it changes every projection)
    assert proj.component_seed(0, 5) == 5
    assert proj.component_seed(3, 1) == 3 * 100_003 + 1
    assert proj.method_label("sjlt", 0.01) == "sjlt:0.01"


def test_parse_project_spec() -> None:
    assert proj.parse_project_spec("sjlt:0.01,gaussian:0.001") == [
        ("sjlt", 0.01),
        ("gaussian", 0.001),
    ]
    assert proj.parse_project_spec(" sjlt : 1 ") == [("sjlt", 1.0)]
    bad = [
        "",
        "sjlt",
        "sjlt:",
        ":0.1",
        "sjlt:x",
        "sjlt:0",
        "sjlt:1.5",
        "foo:0.1",
        "sjlt:0.1,,gaussian:0.1",
        "sjlt:0.1,sjlt:0.1",
        "sjlt:nan",
    ]
    for spec in bad:
        with pytest.raises(ValueError, match="spec|method|fraction|twice"):
            proj.parse_project_spec(spec)
    if "trak" not in proj.available_methods():
        with pytest.raises(ValueError, match="traker"):
            proj.parse_project_spec("trak:0.01")
        with pytest.raises(ValueError, match="traker"):
            Projector(10, 2, "trak")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Projector(10, 0, "sjlt")
    with pytest.raises(ValueError):
        Projector(10, 2, "sjlt", s=3)
    with pytest.raises(ValueError):
        Projector(10, 2, "dense")
    with pytest.raises(ValueError, match="last dimension"):
        Projector(10, 2, "sjlt").project(torch.zeros(3, 11))


def test_kronecker_sketch_factored_and_rows_equal_the_dense_reference() -> None:
    gen = torch.Generator().manual_seed(9)
    r, c, n = 40, 24, 5
    sk = proj.KroneckerSketch((r, c), 150, seed=3)
    m_r, m_c = sk.dims
    assert (m_r, m_c) == (12, 12) and m_r * m_c <= 150
    d, x = torch.randn(n, r, generator=gen), torch.randn(n, c, generator=gen)
    dense = sk.project((d.T @ x).reshape(-1))
    assert dense.shape == (150,) and torch.all(dense[m_r * m_c :] == 0)
    assert torch.allclose(sk.project_factored(d, x), dense, atol=1e-4)
    ids = torch.tensor([3, 3, 17, 0])  # repeated rows add up
    e = torch.randn(4, c, generator=gen)
    g = torch.zeros(r, c).index_add_(0, ids, e)
    assert torch.allclose(sk.project_rows(ids, e), sk.project(g.reshape(-1)), atol=1e-5)
    # the dense reference is the explicit Kronecker product of the two CountSketch matrices
    s_r = torch.zeros(m_r, r)
    s_r[sk._tables[0], torch.arange(r)] = sk._tables[1]
    s_c = torch.zeros(m_c, c)
    s_c[sk._tables[2], torch.arange(c)] = sk._tables[3]
    assert torch.allclose(dense[: m_r * m_c], (s_r @ d.T @ x @ s_c.T).reshape(-1), atol=1e-4)
    # seeded: same seed, same sketch; another seed, another
    again = proj.KroneckerSketch((r, c), 150, seed=3).project_factored(d, x)
    assert torch.equal(again, sk.project_factored(d, x))
    assert not torch.equal(proj.KroneckerSketch((r, c), 150, seed=4).project_factored(d, x), again)


def test_kronecker_sketch_preserves_norms_in_expectation() -> None:
    g = torch.randn(60, 50, generator=torch.Generator().manual_seed(2)).reshape(-1)
    ratios = [
        float(
            proj.KroneckerSketch((60, 50), 400, seed=s).project(g).square().sum() / g.square().sum()
        )
        for s in range(200)
    ]
    assert abs(sum(ratios) / len(ratios) - 1) < 0.03


def test_sketch_kernel_rejects_tables_and_accumulators_out_of_range() -> None:
    """The vector path writes without bounds checks, so bad input must never reach it."""
    import numpy as np

    from gradlens.engine import sketch_kernel

    x = np.ones(32, dtype=np.float32)
    ok = np.array([3 << 16, 20 << 16 | 1], dtype=np.int64)  # lane 0 of group 1 negated
    acc = np.zeros((sketch_kernel.CHUNKS, 40), dtype=np.float32)
    sketch_kernel.accumulate(x, ok, 0, 40, 16, acc)
    p = acc.sum(0)
    assert p[3:19].tolist() == [1.0] * 16 and p[20:36].tolist() == [-1.0] + [1.0] * 15
    assert p.sum() == 30
    with pytest.raises(ValueError, match="offsets"):
        sketch_kernel.accumulate(x, np.array([40 << 16, 0]), 0, 40, 16, acc)
    with pytest.raises(ValueError, match="offsets"):
        sketch_kernel.accumulate(x, np.array([-1, 0]), 0, 40, 16, acc)
    with pytest.raises(ValueError, match="rows"):
        sketch_kernel.accumulate(x, ok, 30, 40, 16, acc)
    with pytest.raises(ValueError, match="table entries"):
        sketch_kernel.accumulate(x, ok[:1], 0, 40, 16, acc)
    with pytest.raises(ValueError, match="acc"):
        sketch_kernel.accumulate(x, ok, 0, 40, 16, acc.astype(np.float64))


def test_run_key_carries_the_version_of_the_sketches_it_uses(monkeypatch) -> None:
    """A changed sketch definition re-keys the runs that use it, and only those."""
    from gradlens import config

    base = dict(
        model="m",
        model_hash="h",
        train_hash="t",
        queries_hash="q",
        train_path="a",
        queries_path="b",
    )
    exact = config.ComputeConfig(**base)
    sjlt = config.ComputeConfig(**base, projections=("sjlt:0.01",))
    gauss = config.ComputeConfig(**base, projections=("gaussian:0.001",))
    before = [c.key() for c in (exact, sjlt, gauss)]
    assert len(set(before)) == 3
    monkeypatch.setitem(config.PROJECTION_VERSIONS, "sjlt", 99)
    after = [c.key() for c in (exact, sjlt, gauss)]
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
