"""gradlens.selection.trust against exact arithmetic and plain loops, and the permutation null's
calibration on random dots."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from gradlens import selection as sel
from gradlens.selection import trust
from gradlens.store.arrays import RunArrays
from tests.unit.test_selection import loop_accuracy, loop_correct


def exact_tail(k: int, n: int, p: float, upper: bool) -> Fraction:
    """P(X >= k) or P(X <= k), X ~ Binomial(n, p), in exact rational arithmetic."""
    q = Fraction(p)
    terms = range(k, n + 1) if upper else range(0, k + 1)
    return sum(math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in terms)


@pytest.mark.parametrize(
    ("k", "n", "level"),
    [(0, 124, 0.95), (124, 124, 0.95), (1, 10, 0.95), (5, 10, 0.95), (27, 124, 0.95),
     (123, 124, 0.95), (3, 40, 0.9), (77, 300, 0.99)],
)  # fmt: skip
def test_clopper_pearson_solves_the_exact_tail_equations(k: int, n: int, level: float) -> None:
    alpha = Fraction((1 - level) / 2)
    lo, hi = trust.clopper_pearson(k, n, level)
    assert 0.0 <= lo < hi <= 1.0
    # each bound lies within 1e-9 of the root of its tail equation: the exact tail crosses
    # alpha between bound - 1e-9 and bound + 1e-9
    if k == 0:
        assert lo == 0.0
    else:
        assert exact_tail(k, n, lo - 1e-9, True) < alpha < exact_tail(k, n, lo + 1e-9, True)
    if k == n:
        assert hi == 1.0
    else:
        assert exact_tail(k, n, hi - 1e-9, False) > alpha > exact_tail(k, n, hi + 1e-9, False)


def test_clopper_pearson_published_values() -> None:
    lo, hi = trust.clopper_pearson(124, 124)
    assert round(lo, 4) == 0.9707 and hi == 1.0
    assert lo == pytest.approx(0.025 ** (1 / 124), abs=1e-12)
    assert trust.clopper_pearson(0, 124) == pytest.approx((0.0, 1 - 0.025 ** (1 / 124)), abs=1e-12)
    # textbook values (e.g. Agresti & Coull 1998 tables)
    assert trust.clopper_pearson(1, 10) == pytest.approx((0.0025286, 0.4450161), abs=1e-7)
    assert trust.clopper_pearson(5, 10) == pytest.approx((0.1870860, 0.8129140), abs=1e-7)
    assert all(math.isnan(v) for v in trust.clopper_pearson(0, 0))
    with pytest.raises(ValueError):
        trust.clopper_pearson(5, 4)


@pytest.mark.parametrize("n", [30, 124])
def test_heldout_ci_is_the_hull_and_never_narrower_than_clopper_pearson(n: int) -> None:
    rng = np.random.default_rng(n)
    cases = [np.zeros(n), np.ones(n), rng.random(n) < 0.3, rng.integers(0, 4, n) / 3]
    for x in cases:
        lo, hi = trust.heldout_ci(x, n_boot=400, seed=3)
        total = round(float(np.sum(x)), 9)
        cp_lo = trust.clopper_pearson(math.floor(total), n)[0]
        cp_hi = trust.clopper_pearson(math.ceil(total), n)[1]
        b_lo, b_hi = sel.bootstrap_ci(x, n_boot=400, seed=3)
        assert (lo, hi) == (min(cp_lo, b_lo), max(cp_hi, b_hi))
        assert lo <= cp_lo and hi >= cp_hi
    # at the edges the bootstrap collapses and the interval is exactly Clopper-Pearson
    assert trust.heldout_ci(np.ones(n)) == trust.clopper_pearson(n, n)
    assert trust.heldout_ci(np.zeros(n)) == trust.clopper_pearson(0, n)
    assert sel.bootstrap_ci(np.ones(n)) == (1.0, 1.0)


def test_paired_diff_ci_equals_a_plain_loop() -> None:
    rng = np.random.default_rng(7)
    n, draws, seed = 50, 500, 11
    row = rng.random(n) < 0.6
    full = rng.random(n) < 0.4
    diffs = []
    resamples = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    for idx in resamples:
        # the same resampled queries score both the row and the full gradient
        diffs.append(sum(row[i] for i in idx) / n - sum(full[i] for i in idx) / n)
    want = np.quantile(diffs, [0.025, 0.975])
    got = trust.paired_diff_ci(row, full, draws=draws, seed=seed)
    assert got == pytest.approx(tuple(want), abs=1e-12)
    assert trust.paired_diff_ci(full, full, draws=draws, seed=seed) == (0.0, 0.0)


def tiny_instance(seed: int, n: int = 14, b: int = 3, k: int = 5, signal: float = 0.4):
    """Random dots[N,b,K], query_sq, cand_sq, target, valid with a duplicated component (k-1 ==
    1, so ties occur), some padding, and one query whose original is its only valid slot."""
    rng = np.random.default_rng(seed)
    qsq = rng.gamma(2.0, 1.0, size=(n, k))
    csq = rng.gamma(2.0, 1.0, size=(n, b, k))
    target = rng.integers(0, b, size=n)
    dots = rng.normal(size=(n, b, k)) * np.sqrt(qsq[:, None, :] * csq)
    dots[np.arange(n), target] += signal * np.sqrt(qsq * csq[np.arange(n), target])
    dots[:, :, k - 1], qsq[:, k - 1], csq[:, :, k - 1] = dots[:, :, 1], qsq[:, 1], csq[:, :, 1]
    valid = np.ones((n, b), dtype=bool)
    for i in range(0, n, 4):
        valid[i, (target[i] + 1) % b] = False
    valid[1] = False
    valid[1, target[1]] = True
    dots[~valid] = 1e6
    return dots, qsq, csq, target, valid


def run_arrays(dots, qsq, csq, target, valid) -> RunArrays:
    n, b, k = dots.shape
    comps = pd.DataFrame(
        {"component": [f"c{i}" for i in range(k)], "layer": 0, "kind": "q", "n_params": 1}
    )
    ids = np.array([f"q{i}" for i in range(n)], dtype=object)
    cands = np.full((n, b), "x", dtype=object)
    return RunArrays(dots, qsq, csq, target, valid, np.full((n, b), np.nan), ids, cands, comps)


def test_single_component_correct_and_folds_match_the_selection_package() -> None:
    dots, qsq, csq, target, valid = tiny_instance(0)
    got = trust.single_component_correct(run_arrays(dots, qsq, csq, target, valid))
    for c in range(dots.shape[2]):
        assert list(got[c]) == loop_correct(dots, qsq, csq, target, [c], valid)
    assert (got.mean(axis=1) == sel.per_component_accuracy(dots, qsq, csq, target, valid)).all()
    for seed in (0, 4):
        held = sel.kfold_greedy(dots, qsq, csq, target, folds=4, seed=seed, valid=valid)
        assert (trust.fold_assignment(len(target), 4, seed) == held.fold).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heldout_best_single_equals_a_nested_loop(seed: int) -> None:
    dots, qsq, csq, target, valid = tiny_instance(seed)
    n, _, k = dots.shape
    folds, seeds = 4, (5, 6, 7)
    got = trust.heldout_best_single(run_arrays(dots, qsq, csq, target, valid), folds, seeds)
    verdict = [loop_correct(dots, qsq, csq, target, [c], valid) for c in range(k)]
    hits = np.zeros((len(seeds), n), dtype=bool)
    for s, fold_seed in enumerate(seeds):
        # greedy's own folds, so both held-out rows split the queries alike
        fold = sel.kfold_greedy(dots, qsq, csq, target, folds, fold_seed, valid=valid).fold
        for f in range(folds):
            train = [i for i in range(n) if fold[i] != f]
            best, best_count = 0, -1
            for c in range(k):
                count = sum(verdict[c][i] for i in train)
                if count > best_count:  # strict: the lowest index keeps a tie
                    best, best_count = c, count
            assert got.fold_component[s, f] == best
            for i in range(n):
                if fold[i] == f:
                    hits[s, i] = verdict[best][i]
    assert (got.correct_by_seed == hits).all()
    assert got.per_seed == pytest.approx(hits.mean(axis=1), abs=1e-15)
    assert got.correct == pytest.approx(hits.mean(axis=0), abs=1e-15)
    assert got.accuracy == pytest.approx(hits.mean(), abs=1e-15)


def loop_greedy_curve(dots, qsq, csq, target, valid) -> list[float]:
    """Greedy by accuracy with plain loops: add the component with the best accuracy (lowest
    index on ties) until all are in; the accuracy after each step."""
    chosen: list[int] = []
    curve = []
    rest = list(range(dots.shape[2]))
    while rest:
        scores = [loop_accuracy(dots, qsq, csq, target, chosen + [c], valid) for c in rest]
        pick = rest[scores.index(max(scores))]
        chosen.append(pick)
        rest.remove(pick)
        curve.append(max(scores))
    return curve


def test_permutation_null_equals_a_plain_loop() -> None:
    dots, qsq, csq, target, valid = tiny_instance(3, n=16, b=4, k=5)
    arrays = run_arrays(dots, qsq, csq, target, valid)
    n, b, k = dots.shape
    draws, seed = 6, 9
    picks = np.random.default_rng(seed).integers(
        0, [max(1, int(valid[i].sum()) - 1) for i in range(n)], size=(draws, n)
    )
    single = trust.permutation_null(arrays, "best_single", draws, seed)
    greedy = trust.permutation_null(arrays, "greedy_peak", draws, seed, workers=2)
    for d in range(draws):
        permuted = []
        for i in range(n):
            others = [j for j in range(b) if valid[i, j] and j != target[i]]
            permuted.append(others[picks[d, i]] if others else int(target[i]))
        assert list(single.targets[d]) == permuted == list(greedy.targets[d])
        assert permuted[1] == target[1]  # its original is its only valid slot
        t = np.array(permuted)
        for c in range(k):
            assert single.scores[d, c] == loop_accuracy(dots, qsq, csq, t, [c], valid)
        assert list(greedy.scores[d]) == loop_greedy_curve(dots, qsq, csq, t, valid)
    for null in (single, greedy):
        assert null.selected == pytest.approx(null.scores.max(axis=1))
        assert null.null_hi == np.quantile(null.scores.max(axis=1), 0.95)
        assert (null.band_lo == np.quantile(null.scores, 0.05, axis=0)).all()
        assert (null.band_hi == np.quantile(null.scores, 0.95, axis=0)).all()
    again = trust.permutation_null(arrays, "greedy_peak", draws, seed, workers=1)
    assert (again.scores == greedy.scores).all()


def test_permuted_targets_leave_the_original_and_stay_valid() -> None:
    _, _, _, target, valid = tiny_instance(4, n=40, b=5)
    moves = trust.permuted_targets(target, valid, 300, 0)
    rows = np.arange(len(target))
    for t in moves:
        assert valid[rows, t].all()
        single = valid.sum(axis=1) == 1
        assert (t[single] == target[single]).all() and (t[~single] != target[~single]).all()
    # uniform over each query's valid other slots: query 0 has 3 (one padded), query 2 has 4
    for i, m in ((0, 3), (2, 4)):
        counts = np.bincount(moves[:, i], minlength=5)[valid[i] & (np.arange(5) != target[i])]
        assert len(counts) == m and counts.min() > 300 / m - 30


def gaussian_run(seed: int, planted: float = 0.0, n: int = 300, b: int = 5, k: int = 36):
    """Random Gaussian dots (cos of every single component ~ N(0, 1) scaled); ``planted``
    raises the original's dot on component 0 only."""
    rng = np.random.default_rng(seed)
    qsq = rng.gamma(2.0, 1.0, size=(n, k))
    csq = rng.gamma(2.0, 1.0, size=(n, b, k))
    target = rng.integers(0, b, size=n)
    dots = rng.normal(size=(n, b, k)) * np.sqrt(qsq[:, None, :] * csq)
    rows = np.arange(n)
    dots[rows, target, 0] += planted * np.sqrt(qsq[:, 0] * csq[rows, target, 0])
    return run_arrays(dots, qsq, csq, target, np.ones((n, b), dtype=bool))


def in_sample(arrays: RunArrays) -> tuple[float, float]:
    """(best single component, greedy peak) accuracy, chosen and scored on all queries."""
    single = sel.per_component_accuracy(*arrays.core, arrays.valid).max()
    peak = max(s.accuracy for s in sel.greedy_select(*arrays.core, valid=arrays.valid))
    return float(single), peak


def test_null_on_random_dots_rarely_flags_and_held_out_best_single_is_chance() -> None:
    """50 data seeds of pure noise with the default 20 draws.

    The 95th percentile of 20 draws (linear) sits between the two largest, so under the null a
    row exceeds it about when it is among the top 2 of 21 near-exchangeable values: 2/21 = 9.5 %
    per row (fewer with ties), the binomial sd over 50 seeds being 2 seeds. Seeds 0-49 put 1
    best single and 7 greedy peaks above (200 seeds: 9 % and 9.5 %), so the 10 % bound holds
    for the two rows pooled and each row is held to 16 % (8 of 50)."""
    seeds = range(50)
    above_single = above_peak = 0
    held, in_single = [], []
    for seed in seeds:
        arrays = gaussian_run(seed)
        single, peak = in_sample(arrays)
        above_single += single > trust.permutation_null(arrays, "best_single", 20, seed).null_hi
        above_peak += peak > trust.permutation_null(arrays, "greedy_peak", 20, seed).null_hi
        held.append(trust.heldout_best_single(arrays).accuracy)
        in_single.append(single)
    assert above_single + above_peak <= 0.1 * 2 * len(seeds)
    assert max(above_single, above_peak) <= 0.16 * len(seeds)
    # held out, the best single component is chance (1/b = 0.2); in sample it is not
    held_dev = np.abs(np.array(held) - 0.2)
    assert abs(np.mean(held) - 0.2) < 0.015 and np.mean(held_dev <= 0.07) >= 0.96
    assert np.mean(in_single) - np.mean(held) > 0.04


def test_null_on_a_planted_component_flags_the_greedy_peak() -> None:
    """One informative component (alone it retrieves ~0.42 against chance 0.2; null_hi ~0.32).
    5 draws per seed are enough here: the assertion needs the peak above the null, not the
    null's tail."""
    seeds = range(50)
    above = 0
    for seed in seeds:
        arrays = gaussian_run(seed, planted=0.8)
        _, peak = in_sample(arrays)
        above += peak > trust.permutation_null(arrays, "greedy_peak", 5, seed).null_hi
    assert above >= 0.9 * len(seeds)
