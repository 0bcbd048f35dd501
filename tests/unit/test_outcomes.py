"""What a subset does to each query (gradlens.selection.outcomes), the headline's row ids and
types, and the shared text formatters, against plain Python loops over the same numbers."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from gradlens import selection as sel
from gradlens.runs.read import RunInfo
from gradlens.runs.report import (
    format_accuracy,
    format_headline,
    format_interval,
    headline_strings,
    run_description,
)
from gradlens.selection.headline import HEADLINE_COLUMNS
from gradlens.store.arrays import RunArrays
from tests.unit.test_selection import loop_correct, loop_cos, make_instance


def run_arrays(seed: int = 5, n_params: list | None = None) -> RunArrays:
    """A padded random instance as RunArrays: queries q0.., candidates t<i>_<j>, the original of
    query i named q<i>; BM25 scores descending with the slot."""
    dots, qsq, csq, target, valid = make_instance(seed=seed, pad=True)
    n, b, k = dots.shape
    ids = np.array([[f"t{i}_{j}" for j in range(b)] for i in range(n)], dtype=object)
    ids[np.arange(n), target] = [f"q{i}" for i in range(n)]
    ids[~valid] = None
    sizes = n_params if n_params is not None else [10.0 * (c + 1) for c in range(k)]
    comps = pd.DataFrame(
        {"component": [f"c{c}" for c in range(k)], "layer": [0] * k, "kind": ["q"] * k}
    ).assign(n_params=sizes)
    bm25 = np.where(valid, np.arange(b, 0, -1.0)[None, :], np.nan)
    qids = np.array([f"q{i}" for i in range(n)], dtype=object)
    return RunArrays(dots, qsq, csq, target, valid, bm25, qids, ids, comps)


def loop_retrieved(a: RunArrays, subset: list[int]) -> list[bool]:
    if not subset:
        return [False] * a.shape[0]
    return loop_correct(a.dots, a.query_sq, a.cand_sq, a.target, subset, a.valid)


def test_chance_is_the_mean_of_one_over_the_valid_candidates():
    a = run_arrays()
    want = sum(Fraction(1, int(row.sum())) for row in a.valid) / a.shape[0]
    assert sel.chance(a) == pytest.approx(float(want), abs=1e-15)
    assert sel.chance(a) > 1 / a.shape[1]  # padded queries have fewer candidates than b


def test_subset_change_lists_the_queries_fixed_and_broken():
    a = run_arrays()
    for before, after in (([], [1, 4]), ([1, 4], [1, 4, 6]), ([2, 5, 8], [0])):
        was, now = loop_retrieved(a, before), loop_retrieved(a, after)
        change = sel.subset_change(a, before, after)
        assert list(change.fixed) == [f"q{i}" for i in range(len(now)) if now[i] and not was[i]]
        assert list(change.broken) == [f"q{i}" for i in range(len(now)) if was[i] and not now[i]]
        assert sel.retrieved(a, after).tolist() == now


def test_param_fraction_sums_the_subset_over_all_components():
    a = run_arrays()
    sizes = [10.0 * (c + 1) for c in range(a.shape[2])]
    assert sel.param_fraction(a, [3, 0, 7]) == pytest.approx(
        (sizes[3] + sizes[0] + sizes[7]) / sum(sizes), abs=1e-15
    )
    assert sel.param_fraction(a, []) == 0.0
    unknown = run_arrays(n_params=[np.nan] + [1.0] * 11)
    assert sel.param_fraction(unknown, [1, 2]) is None


def test_candidate_roles_and_margin_contributions_of_a_failed_query():
    a = run_arrays()
    subset = [1, 4, 6]
    cos = loop_cos(a.dots, a.query_sq, a.cand_sq, subset)
    fails = sel.failures(a, subset)
    assert not fails.empty
    for row in fails.itertuples(index=False):
        i = int(row.query_id[1:])
        t = int(a.target[i])
        others = [j for j in range(a.shape[1]) if a.valid[i, j] and j != t]
        rival = max(others, key=lambda j: (cos[i][j], -j))  # best other, lowest slot on ties
        roles = sel.candidate_roles(a, subset, row.query_id)
        assert list(roles.columns) == ["candidate_id", "cosine", "bm25", "role"]
        slots = [j for j in range(a.shape[1]) if a.valid[i, j]]
        assert list(roles["candidate_id"]) == [a.candidate_ids[i, j] for j in slots]
        assert roles["cosine"].tolist() == pytest.approx([cos[i][j] for j in slots], abs=1e-12)
        want = ["original" if j == t else "retrieved" if j == rival else "other" for j in slots]
        assert roles["role"].tolist() == want
        assert a.candidate_ids[i, rival] == row.wrong_id
        contrib = sel.margin_contributions(a, subset, row.query_id)
        assert contrib["component_idx"].tolist() == sorted(subset)
        assert contrib["contribution"].sum() == pytest.approx(row.margin, abs=1e-12)
    with pytest.raises(KeyError):
        sel.candidate_roles(a, subset, "no such query")


def test_headline_rows_have_ids_types_and_typed_access():
    dots, qsq, csq, target, valid = make_instance(seed=10)
    names = [f"c{i}" for i in range(12)]
    bm = np.random.default_rng(0).random((40, 5))
    projected = {"sjlt:0.5": (dots, qsq, csq), "gaussian:0.1": (dots * 0.5, qsq, csq)}
    table = sel.headline(
        dots, qsq, csq, target, names, valid=valid, n_params=np.ones(12), bm25=bm,
        projected=projected, folds=4, n_boot=200,
    )  # fmt: skip
    assert list(table.columns) == list(HEADLINE_COLUMNS)
    want = {
        "full": ("full gradient", "not_selected"),
        "best_single": ("best single component (in-sample)", "selected_in_sample"),
        "best_single_heldout": ("best single component (held-out, 4-fold)", "held_out"),
        "greedy_peak": ("greedy peak (in-sample)", "selected_in_sample"),
        "greedy_heldout": ("greedy (held-out, 4-fold)", "held_out"),
        "bm25": ("BM25 top-1", "not_selected"),
        "project:sjlt:0.5": ("full gradient (sjlt:0.5)", "not_selected"),
        "project:gaussian:0.1": ("full gradient (gaussian:0.1)", "not_selected"),
    }
    assert {r.id: (r.metric, r.type) for r in sel.headline_rows(table)} == want
    assert list(table["id"]) == list(want)
    by_metric = table.set_index("metric")
    for row in sel.headline_rows(table):
        assert row.accuracy == by_metric.loc[row.metric, "accuracy"]
        assert row.in_sample == (row.type == sel.SELECTED_IN_SAMPLE)
        if row.in_sample:  # no interval of their own; a null and a held-out row instead
            assert np.isnan(row.ci_lo) and np.isnan(row.ci_hi) and row.ci_method is None
            assert 0 <= row.null_hi <= 1 and row.heldout_id in want
        else:
            assert row.ci_lo <= row.accuracy <= row.ci_hi and np.isnan(row.null_hi)
            assert row.heldout_id is None
        assert np.isnan(row.diff_lo) == (row.id == sel.FULL)
    full = sel.headline_row(table, sel.FULL)
    assert full.accuracy == sel.accuracy(dots, qsq, csq, target, list(range(12)), valid)
    assert full.k == 12 and full.param_fraction == 1.0 and full.projection is None
    assert [r.projection for r in sel.headline_rows(table) if r.projection] == list(projected)
    assert sel.headline_row(table, sel.projection_id("sjlt:0.5")).accuracy == full.accuracy
    assert sel.headline_row(table, "project:kron:0.1") is None
    single = sel.per_component_accuracy(dots, qsq, csq, target, valid)
    assert sel.headline_row(table, sel.BEST_SINGLE).accuracy == single.max()
    steps = sel.greedy_select(dots, qsq, csq, target, valid=valid)
    peak = sel.headline_row(table, sel.GREEDY_PEAK)
    assert peak.accuracy == max(s.accuracy for s in steps)
    assert peak.k == 1 + int(np.argmax([s.accuracy for s in steps]))


def test_formatters_and_headline_strings():
    assert format_accuracy(0.99291) == "0.9929" and format_accuracy(float("nan")) == "–"
    assert format_accuracy(None) == "–" and format_accuracy(1) == "1.0000"
    assert format_interval(0.97581, 1.0) == "[0.976, 1.000]"
    assert format_interval(math.nan, 1.0) == "–"
    nan = np.nan
    table = pd.DataFrame(
        {
            "id": ["full", "bm25", "best_single", "greedy_peak"],
            "metric": ["full gradient", "BM25 top-1", "best single", "greedy peak"],
            "type": ["not_selected"] * 2 + ["selected_in_sample"] * 2,
            "detail": ["all 3 components", "x", "c1", "first 2"],
            "in_sample": [False, False, True, True],
            "accuracy": [0.99291, 0.5, 0.7, 0.9], "ci_lo": [0.97581, 0.41, nan, nan],
            "ci_hi": [1.0, 0.6, nan, nan],
            "ci_method": ["clopper-pearson"] * 2 + [None] * 2,
            "null_hi": [nan, nan, 0.8, 0.85], "diff_lo": [nan, -0.6, -0.3, 0.01],
            "diff_hi": [nan, -0.4, 0.1, 0.2], "k": [3.0, nan, 1.0, 2.0],
            "param_fraction": [1.0, nan, nan, nan],
            "heldout_id": [None, None, "best_single_heldout", "greedy_heldout"],
        }
    )  # fmt: skip
    shown = headline_strings(table)
    assert shown.loc[0].tolist() == [
        "full", "full gradient", "all 3 components", "0.9929", "[0.976, 1.000]", "", "–", "3",
        "100.00%", "",
    ]  # fmt: skip
    assert shown.loc[1, "k"] == "" and shown.loc[1, "params"] == ""
    # the verdicts follow the numbers: bm25's paired interval excludes 0 below; best single
    # sits under its null; greedy's paired interval excludes 0 but it was selected in-sample
    assert shown["reading"].tolist() == [
        "", "worse than the full gradient", "not distinguishable from selection on noise",
        "above its null; see its held-out row",
    ]  # fmt: skip
    assert shown.loc[2, "95% CI"] == "–" and shown.loc[2, "null 95%"] == "0.8000"
    text = format_headline(table)
    assert "0.9929" in text and "[0.976, 1.000]" in text and "not_selected" not in text
    header = ["metric", "detail", "accuracy", "95%", "CI", "null", "95%", "Δ", "full", "95%"]
    assert text.splitlines()[0].split()[: len(header)] == header  # no id column


def _info(config: dict, methods: tuple[str, ...] = ("exact",)) -> RunInfo:
    return RunInfo("abc", "r", "complete", None, config, {}, 7, 4, 5, methods)


def test_run_description_of_a_computed_and_an_imported_run():
    computed = run_description(
        _info(
            {
                "model": "smollm2", "dtype": "bf16", "train_path": "/d/train.jsonl",
                "queries_path": "/d/q.jsonl", "loss_on": "response", "reduction": "mean",
                "projections": ["sjlt:0.01"], "candidates": 5,
            },
            ("exact", "sjlt:0.01"),
        )
    )  # fmt: skip
    assert computed.model == "smollm2 (bf16)"
    assert computed.data == "train train.jsonl, queries q.jsonl"
    assert computed.loss == "response tokens, mean" and computed.projections == "sjlt:0.01"
    assert computed.shape == "7 × 4 × 5" and computed.candidates == 5
    assert dict(computed.table_rows())["run id"] == "abc"
    imported = run_description(
        _info({"source": "import", "dots": "/x/dots.parquet", "filters": {"setting": "a"}})
    )
    assert imported.model == "computed elsewhere"
    assert imported.data == "imported from dots.parquet (setting=a)"
    assert imported.loss == "as computed elsewhere" and imported.projections == "none"
    assert imported.candidates == 4 and imported.methods == "exact"
