"""The dashboard's shared pieces that need no running page: chart-click parsing, routed
component picks, and the shared greedy stepper's ``extend`` against ``greedy_select``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("streamlit")

from dashboard import common, widgets  # noqa: E402
from gradlens.selection import GreedyStepper, greedy_select  # noqa: E402


def event(*points: dict) -> SimpleNamespace:
    return SimpleNamespace(selection=SimpleNamespace(points=list(points)))


def test_clicked_indices_reads_customdata_then_point_index():
    clicked = event(
        {"customdata": 3},
        {"customdata": [1, "extra"]},
        {"point_index": 0},
        {"customdata": 3},  # the same square twice: once
        {"customdata": 9},  # not a component of this chart
        {"customdata": "x"},
        {"customdata": []},
        {},
    )
    assert widgets.clicked_indices(clicked, 5) == (3, 1, 0)


def test_clicked_indices_of_no_selection():
    assert widgets.clicked_indices(None, 5) == ()
    assert widgets.clicked_indices(SimpleNamespace(selection={}), 5) == ()
    assert widgets.clicked_indices(event(), 5) == ()


@pytest.mark.parametrize(
    ("value", "want"),
    [(2, 2), (np.int64(4), 4), (0, 0), (5, None), (-1, None), (True, None), ("2", None)],
)
def test_component_index_takes_only_integers_in_range(value, want):
    assert widgets.component_index(value, 5) == want


def random_core(n: int = 60, b: int = 4, k: int = 9, seed: int = 3):
    rng = np.random.default_rng(seed)
    dots = rng.normal(size=(n, b, k))
    query_sq = rng.gamma(2.0, 1.0, (n, k))
    cand_sq = rng.gamma(2.0, 1.0, (n, b, k))
    return dots, query_sq, cand_sq, rng.integers(0, b, n)


def test_shared_stepper_extend_follows_greedy_select():
    core = random_core()
    want = [s.component_idx for s in greedy_select(*core)]
    shared = common.SharedStepper(GreedyStepper(*core))
    assert shared.extend((), 1) == tuple(want[:1])
    assert shared.extend(want[:2], 3) == tuple(want[:5])
    assert shared.extend(want[:4]) == tuple(want)  # every remaining component
    assert shared.extend(want, 2) == tuple(want)  # nothing left to add
