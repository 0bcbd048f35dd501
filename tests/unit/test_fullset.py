"""gradlens.selection.fullset against brute force: ranks from a numpy argsort of cosines computed
from the vectors themselves, greedy and held-out greedy by full-set recall@1 from plain loops."""

from __future__ import annotations

import numpy as np
import pytest

from gradlens.selection import fullset


def vectors(seed: int, q: int = 9, n: int = 14, k: int = 5, d: int = 3, signal: float = 0.4):
    """Per-component vectors of Q queries and N training examples (query i's original is
    training row ``perm[i]``, which leans towards it in a few components)."""
    rng = np.random.default_rng(seed)
    qv = rng.normal(size=(k, q, d))
    tv = rng.normal(size=(k, n, d))
    original = rng.permutation(n)[:q]
    tv[:2, original] += signal * qv[:2]
    return qv, tv, original


def full_set_of(qv, tv, original) -> fullset.FullSet:
    return fullset.FullSet(
        dots=np.einsum("kqd,knd->qnk", qv, tv),
        query_sq=(qv**2).sum(-1).T,
        train_sq=(tv**2).sum(-1).T,
        original=original,
    )


def brute_cosines(qv, tv, subset) -> np.ndarray:
    """cos [Q, N] of the concatenated vectors of ``subset``'s components."""
    a = np.concatenate([qv[c] for c in subset], axis=1)
    b = np.concatenate([tv[c] for c in subset], axis=1)
    return (a @ b.T) / (
        np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None] + 1e-12
    )


def argsort_ranks(cos: np.ndarray, original: np.ndarray) -> np.ndarray:
    """1-based position of each original in a descending sort where a tie puts the original
    after the examples it ties with (the benchmark's strict rule)."""
    ranks = []
    for i, o in enumerate(original):
        n = cos.shape[1]
        order = np.lexsort((np.arange(n) == o, -cos[i]))  # last key first: -cos, then original last
        ranks.append(int(np.flatnonzero(order == o)[0]) + 1)
    return np.array(ranks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_set_ranks_equal_an_argsort_of_brute_force_cosines(seed: int) -> None:
    qv, tv, original = vectors(seed)
    fs = full_set_of(qv, tv, original)
    k = qv.shape[0]
    for subset in ([0], [1, 3], [4, 0, 2], list(range(k))):
        cos = brute_cosines(qv, tv, subset)
        np.testing.assert_allclose(
            fullset.full_set_cosines(fs, subset), cos, rtol=1e-12, atol=1e-14
        )
        got = fullset.retrieval(fs, subset).ranks
        np.testing.assert_array_equal(got, argsort_ranks(cos, original))
    np.testing.assert_array_equal(
        fullset.retrieval(fs).ranks, argsort_ranks(brute_cosines(qv, tv, range(k)), original)
    )


def test_ties_count_against_the_original_and_metrics_follow_the_ranks() -> None:
    scores = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.0, 0.0, 0.0], [0.3, 0.1, 0.2]])
    original = np.array([0, 1, 2, 0])
    ranks = fullset.original_ranks(scores, original)
    np.testing.assert_array_equal(ranks, [2, 2, 3, 1])
    np.testing.assert_array_equal(ranks, argsort_ranks(scores, original))
    r = fullset.Retrieval(ranks)
    assert (r.recall(1), r.recall(2), r.recall(3)) == (0.25, 0.75, 1.0)
    assert r.mrr == pytest.approx((0.5 + 0.5 + 1 / 3 + 1) / 4)
    assert r.summary() == {"recall@1": 0.25, "recall@5": 1.0, "recall@10": 1.0, "MRR": r.mrr}


def test_restricted_to_the_candidates_rank_one_is_the_benchmarks_correct() -> None:
    from gradlens.selection import correct

    qv, tv, original = vectors(5, q=12, n=12, signal=0.2)
    cos = brute_cosines(qv, tv, [0, 2])
    rng = np.random.default_rng(1)
    for i in range(12):
        others = rng.choice(np.setdiff1d(np.arange(12), original[i]), size=4, replace=False)
        slots = np.concatenate([[original[i]], others])
        rank = fullset.original_ranks(cos[i, slots][None], np.array([0]))[0]
        assert (rank == 1) == bool(correct(cos[i, slots][None], np.array([0]))[0])


def loop_recall1(qv, tv, original, subset) -> int:
    cos = brute_cosines(qv, tv, subset)
    return int(sum(argsort_ranks(cos, original) == 1))


def loop_greedy(qv, tv, original) -> tuple[list[int], list[int]]:
    """Greedy by full-set recall@1 as plain loops: try every remaining component, keep the best
    count of rank-1 originals, lowest index on ties."""
    k = qv.shape[0]
    chosen, counts = [], []
    while len(chosen) < k:
        best, best_count = None, -1
        for c in range(k):
            if c in chosen:
                continue
            count = loop_recall1(qv, tv, original, chosen + [c])
            if count > best_count:
                best, best_count = c, count
        chosen.append(best)
        counts.append(best_count)
    return chosen, counts


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_greedy_by_full_set_recall1_equals_a_plain_loop(seed: int) -> None:
    qv, tv, original = vectors(seed, signal=0.25)
    fs = full_set_of(qv, tv, original)
    steps = fullset.full_set_greedy(fs)
    order, counts = loop_greedy(qv, tv, original)
    assert [s.component_idx for s in steps] == order
    q = len(original)
    assert [s.accuracy for s in steps] == pytest.approx([c / q for c in counts], abs=0)
    for s in steps:
        assert s.accuracy == fullset.retrieval(fs, s.subset).recall(1)


def test_held_out_greedy_by_full_set_recall1_equals_plain_loops() -> None:
    from gradlens.selection.trust import fold_assignment

    qv, tv, original = vectors(8, q=10, n=12, k=4, signal=0.3)
    fs = full_set_of(qv, tv, original)
    est = fullset.full_set_heldout(fs, folds=2, seeds=(0, 1))
    q = len(original)
    per_seed = []
    for seed in (0, 1):
        fold = fold_assignment(q, 2, seed)
        hit = np.zeros(q, dtype=bool)
        for f in range(2):
            train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            order, counts = loop_greedy(qv[:, train], tv, original[train])
            keep = int(np.argmax(counts)) + 1  # the training part's peak, shortest on ties
            cos = brute_cosines(qv[:, test], tv, order[:keep])
            hit[test] = argsort_ranks(cos, original[test]) == 1
        per_seed.append(hit)
    np.testing.assert_array_equal(est.correct, np.mean(per_seed, axis=0))
    assert est.accuracy == pytest.approx(np.mean(per_seed), abs=1e-15)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="train_sq"):
        fullset.FullSet(np.zeros((2, 3, 4)), np.zeros((2, 4)), np.zeros((3, 5)), np.zeros(2, int))
    with pytest.raises(ValueError, match="original"):
        fullset.FullSet(np.zeros((2, 3, 4)), np.zeros((2, 4)), np.zeros((3, 4)), np.array([0, 3]))


def benchmark(qv, tv, original, b: int, seed: int):
    """The BM25-style benchmark of the same vectors: each query's original and b - 1 other
    training rows as candidates, in a shuffled slot order."""
    from gradlens.selection.trust import Core

    rng = np.random.default_rng(seed)
    q, n = len(original), tv.shape[1]
    slot_rows = np.empty((q, b), dtype=np.int64)
    for i, o in enumerate(original):
        others = rng.choice(np.setdiff1d(np.arange(n), [o]), size=b - 1, replace=False)
        slot_rows[i] = rng.permutation(np.concatenate([[o], others]))
    dots = np.einsum("kqd,qbkd->qbk", qv, tv.transpose(1, 0, 2)[slot_rows])
    cand_sq = (tv**2).sum(-1).T[slot_rows]
    target = np.argmax(slot_rows == original[:, None], axis=1)
    core = Core(dots, (qv**2).sum(-1).T, cand_sq, target, np.ones((q, b), dtype=bool))
    return core, slot_rows


def test_full_set_rows_equal_plain_loops() -> None:
    from gradlens.selection import correct
    from gradlens.selection.trust import clopper_pearson, fold_assignment, permuted_targets

    qv, tv, original = vectors(11, q=12, n=15, k=4, signal=0.3)
    core, slot_rows = benchmark(qv, tv, original, 4, 2)
    fs = full_set_of(qv, tv, original)
    names = [f"c{c}" for c in range(4)]
    bm25 = np.random.default_rng(3).random((12, 15))
    x = fullset.FullSetInputs(core, fs, (0, 1, 2, 3), slot_rows, names, None, bm25, "toy")
    head = fullset.full_set_headline(x, folds=3, null_draws=6, seed=1, heldout_seeds=2)
    table = head.table.set_index("id")

    def row(sid, metric="recall@1"):
        return table.loc[fullset.full_set_row_id(sid, metric)]

    def bench_correct(subset, target=core.target):
        cos = np.einsum("qbk->qb", core.dots[:, :, subset]) / (
            np.sqrt(core.query_sq[:, subset].sum(1)[:, None] * core.cand_sq[:, :, subset].sum(2))
            + 1e-12
        )
        return correct(cos, target, core.valid)

    full = argsort_ranks(brute_cosines(qv, tv, range(4)), original)
    assert row("full").accuracy == np.mean(full == 1)
    assert (row("full").ci_lo, row("full").ci_hi) == clopper_pearson(int(np.sum(full == 1)), 12)
    assert row("full", "MRR").accuracy == pytest.approx(np.mean(1 / full), abs=1e-15)
    best = int(np.argmax([bench_correct([c]).sum() for c in range(4)]))
    ranks = argsort_ranks(brute_cosines(qv, tv, [best]), original)
    assert row("best_single").accuracy == np.mean(ranks == 1) and row("best_single").k == 1
    assert np.isnan(row("best_single").ci_lo) and row("best_single").type == "selected_in_sample"
    # the null: each draw's component chosen on the benchmark with permuted originals, scored
    # over all N for the replaced originals
    null = []
    for t in permuted_targets(core.target, core.valid, 6, 1):
        c = int(np.argmax([bench_correct([c], t).sum() for c in range(4)]))
        fake = slot_rows[np.arange(12), t]
        null.append(np.mean(argsort_ranks(brute_cosines(qv, tv, [c]), fake) == 1))
    assert row("best_single").null_hi == pytest.approx(np.quantile(null, 0.95), abs=1e-15)
    # held out: each fold's component chosen on the other folds' benchmark queries
    per_seed = []
    for s in (1, 2):
        fold = fold_assignment(12, 3, s)
        hit = np.zeros(12)
        for f in range(3):
            c = int(np.argmax([bench_correct([c])[fold != f].sum() for c in range(4)]))
            r = argsort_ranks(brute_cosines(qv, tv, [c]), original)
            hit[fold == f] = (r == 1)[fold == f]
        per_seed.append(hit)
    assert row("best_single_heldout").accuracy == pytest.approx(np.mean(per_seed), abs=1e-15)
    bm = argsort_ranks(bm25, original)
    assert row("bm25").accuracy == np.mean(bm == 1)
    assert row("bm25", "MRR").accuracy == pytest.approx(np.mean(1 / bm), abs=1e-15)
    assert set(table["type"]) == {"not_selected", "selected_in_sample", "held_out"}
    assert row("greedy_peak").heldout_id == fullset.full_set_row_id("greedy_heldout", "recall@1")
    assert head.curve is None


def test_full_set_greedy_rows_and_curve() -> None:
    qv, tv, original = vectors(12, q=10, n=12, k=4, signal=0.3)
    core, slot_rows = benchmark(qv, tv, original, 3, 4)
    fs = full_set_of(qv, tv, original)
    x = fullset.FullSetInputs(core, fs, (0, 1, 2, 3), slot_rows, list("abcd"), None, None, "toy")
    head = fullset.full_set_headline(x, folds=2, null_draws=3, greedy=True, heldout_seeds=1)
    order, counts = loop_greedy(qv, tv, original)
    curve = head.curve
    assert list(curve["component_idx"]) == order and list(curve["component"]) == [
        "abcd"[c] for c in order
    ]
    assert list(curve["accuracy"]) == pytest.approx([c / 10 for c in counts], abs=0)
    assert set(curve["objective"]) == {fullset.FULL_SET_OBJECTIVE} and set(curve["method"]) == {
        "toy"
    }
    peak = fullset.full_set_row_id("full_set_greedy_peak", "recall@1")
    row = head.table.set_index("id").loc[peak]
    assert row.accuracy == max(counts) / 10 and row.k == int(np.argmax(counts)) + 1
    est = fullset.full_set_heldout(fs, folds=2, seeds=(0,))
    held = head.table.set_index("id").loc[
        fullset.full_set_row_id("full_set_greedy_heldout", "recall@1")
    ]
    assert held.accuracy == pytest.approx(est.accuracy, abs=1e-15)
    np.testing.assert_array_equal(curve["heldout_accuracy"], est.runs[0].accuracy)
