"""BM25 candidate retrieval (the paper's Algorithm 1, as its released code does it)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from rank_bm25 import BM25Okapi

from gradlens.data.examples import Example
from gradlens.errors import GradLensError
from gradlens.options import BM25_ON

log = logging.getLogger(__name__)


def _text(ex: Example, on: str) -> str:
    return ex.prompt if on == "prompt" else ex.prompt + " " + ex.response


def bm25_candidates(
    train: Sequence[Example], queries: Sequence[Example], b: int = 5, on: str = "prompt"
) -> pd.DataFrame:
    """Top-``b`` BM25 candidates per query, the original always among them.

    BM25Okapi (default parameters) over the training texts tokenised by ``str.split()``; the
    query's prompt is the search text. If the original is not in the top ``b`` it replaces the
    lowest-scoring one. Returns columns ``query_id, candidate_id, rank (1..b), bm25``, ranked by
    score (ties: training-set order).
    """
    if b < 1:
        raise GradLensError(f"--candidates must be at least 1, got {b}")
    if on not in BM25_ON:
        raise GradLensError(f"--bm25-on must be one of {BM25_ON}, got {on!r}")
    if b > len(train):
        log.warning(
            "--candidates %d exceeds the %d training examples; using %d", b, *[len(train)] * 2
        )
        b = len(train)
    index = {ex.id: i for i, ex in enumerate(train)}
    bm25 = BM25Okapi([_text(ex, on).split() for ex in train])
    rows = []
    for q in queries:
        scores = bm25.get_scores(_text(q, on).split())
        top = list(np.argsort(-scores, kind="stable")[:b])
        orig = index[q.id]
        if orig not in top:
            top[-1] = orig
        top.sort(key=lambda j: (-scores[j], j))
        for rank, j in enumerate(top, start=1):
            rows.append((q.id, train[j].id, rank, float(scores[j])))
    return pd.DataFrame(rows, columns=["query_id", "candidate_id", "rank", "bm25"])
