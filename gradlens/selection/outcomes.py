"""What one component subset does to each query of a run (``RunArrays`` in, tables and values
out): per-query margins and ranks, failures and the training examples that steal them, one
query's candidates and which components decide its margin, the queries a change of subset
fixed or broke, the subset's parameter share, and the chance baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradlens.selection.greedy import param_fractions
from gradlens.selection.subsets import EPS, Subset, correct, cosines, subset_indices
from gradlens.store.arrays import RunArrays


def chance(arrays: RunArrays) -> float:
    """Accuracy of picking one valid candidate at random: the mean over queries of
    1 / (number of valid candidates); NaN without queries."""
    if arrays.shape[0] == 0:
        return float("nan")
    return float(np.mean(1.0 / arrays.valid.sum(axis=1)))


def param_fraction(arrays: RunArrays, subset: Subset) -> float | None:
    """The subset's share of the run's parameters (0.0 for the empty subset; None when a
    component's parameter count is unknown)."""
    sizes = arrays.known_n_params
    k = arrays.shape[2]
    idx = subset_indices(subset, k)
    if sizes is None:
        return None
    return float(param_fractions(idx, sizes, k)[-1]) if idx.size else 0.0


def retrieved(arrays: RunArrays, subset: Subset) -> np.ndarray:
    """bool[N]: query i's original beats every other valid candidate under ``subset`` (the
    empty subset has no gradient to compare, so it retrieves no query)."""
    if subset_indices(subset, arrays.shape[2]).size == 0:
        return np.zeros(arrays.shape[0], dtype=bool)
    cos = cosines(arrays.dots, arrays.query_sq, arrays.cand_sq, subset)
    return correct(cos, arrays.target, arrays.valid)


@dataclass(frozen=True, eq=False)
class SubsetChange:
    """What changing the subset did: ``fixed`` (query ids [m], object) retrieved after but not
    before, ``broken`` (query ids [m']) retrieved before but not after; in query order."""

    fixed: np.ndarray
    broken: np.ndarray


def subset_change(arrays: RunArrays, before: Subset, after: Subset) -> SubsetChange:
    """The queries that going from subset ``before`` to ``after`` fixed and broke."""
    was, now = retrieved(arrays, before), retrieved(arrays, after)
    return SubsetChange(fixed=arrays.query_ids[now & ~was], broken=arrays.query_ids[was & ~now])


def _ranks(scores: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """int[N]: 1 + number of valid candidates scoring at least the original's score (so a tie
    with another candidate counts against the original, as in ``correct``)."""
    rows = np.arange(len(target))
    own = scores[rows, target]
    ge = (scores >= own[:, None]) & valid
    ge[rows, target] = False
    return 1 + ge.sum(axis=1)


def _rivals(cos: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """int[N]: each query's best valid candidate other than its original (lowest slot on ties;
    -1 when there is none), from cos [N, b]."""
    rows = np.arange(len(target))
    others = np.where(valid, cos, -np.inf)
    others[rows, target] = -np.inf
    rival = np.argmax(others, axis=1)
    return np.where(np.isfinite(others[rows, rival]), rival, -1)


def query_table(arrays: RunArrays, subset: Subset) -> pd.DataFrame:
    """One row per query for ``subset``: query_id, original_id, retrieved_id (best valid
    candidate other than the original), cos_original, cos_retrieved, margin (cos_original -
    cos_retrieved; > 0 iff retrieved correctly), correct, rank (of the original by cosine, 1 =
    retrieved), bm25_rank (the original's place in the candidate list, which is BM25 order)."""
    n = arrays.shape[0]
    rows = np.arange(n)
    cos = cosines(arrays.dots, arrays.query_sq, arrays.cand_sq, subset)
    rival = _rivals(cos, arrays.target, arrays.valid)
    has_rival = rival >= 0
    rival_cos = np.where(has_rival, cos[rows, rival], np.nan)
    own = cos[rows, arrays.target]
    margin = np.where(has_rival, own - rival_cos, np.inf)
    return pd.DataFrame(
        {
            "query_id": arrays.query_ids,
            "original_id": arrays.candidate_ids[rows, arrays.target],
            "retrieved_id": np.where(has_rival, arrays.candidate_ids[rows, rival], None),
            "cos_original": own,
            "cos_retrieved": rival_cos,
            "margin": margin,
            "correct": margin > 0,
            "rank": _ranks(cos, arrays.target, arrays.valid),
            "bm25_rank": arrays.target + 1,
        }
    )


def failures(arrays: RunArrays, subset: Subset) -> pd.DataFrame:
    """The queries whose original ``subset`` does not retrieve (``query_table`` rows with
    correct == False), worst margin first."""
    table = query_table(arrays, subset)
    bad = table[~table["correct"]].sort_values("margin", kind="stable")
    return bad.rename(columns={"retrieved_id": "wrong_id", "cos_retrieved": "cos_wrong"})


def steals(arrays: RunArrays, subset: Subset) -> pd.DataFrame:
    """Training examples that win the most queries that are not their own under ``subset``:
    candidate_id, stolen (number of queries), queries (their ids, comma-separated)."""
    bad = failures(arrays, subset)
    if bad.empty:
        return pd.DataFrame({"candidate_id": [], "stolen": [], "queries": []})
    grouped = bad.groupby("wrong_id", sort=False)["query_id"]
    out = pd.DataFrame(
        {"stolen": grouped.size(), "queries": grouped.agg(lambda s: ", ".join(map(str, s)))}
    )
    out = out.rename_axis("candidate_id").reset_index()
    return out.sort_values(["stolen", "candidate_id"], ascending=[False, True], kind="stable")


def component_shares(
    arrays: RunArrays, query: int, candidate_slots: Sequence[int], subset: Subset
) -> pd.DataFrame:
    """Each component's additive share of cos_S(query, j) for the given candidate slots:
    ``dot_c / (sqrt(|q_S|² · |j_S|²) + EPS)`` (the same denominator as the cosine, so a
    column sums to the cosine). Rows: the components of ``subset`` (index order); columns:
    component_idx, component, then one column per slot (``slot_<j>``)."""
    idx = subset_indices(subset, arrays.shape[2])
    qs = arrays.query_sq[query, idx].sum()
    out = pd.DataFrame({"component_idx": idx, "component": [arrays.names[c] for c in idx]})
    for j in candidate_slots:
        den = np.sqrt(qs * arrays.cand_sq[query, j, idx].sum()) + EPS
        out[f"slot_{j}"] = arrays.dots[query, j, idx] / den
    return out


def _one_query(arrays: RunArrays, query_id: str, subset: Subset) -> tuple[int, np.ndarray, int]:
    """(row of ``query_id``, its cos_S over its b slots, its rival's slot or -1)."""
    hit = np.flatnonzero(arrays.query_ids == query_id)
    if hit.size == 0:
        raise KeyError(f"query {query_id!r} is not in the run")
    qi = int(hit[0])
    one = slice(qi, qi + 1)
    cos = cosines(arrays.dots[one], arrays.query_sq[one], arrays.cand_sq[one], subset)
    rival = _rivals(cos, arrays.target[one], arrays.valid[one])
    return qi, cos[0], int(rival[0])


def candidate_roles(arrays: RunArrays, subset: Subset, query_id: str) -> pd.DataFrame:
    """One row per valid candidate of query ``query_id`` in BM25 order: candidate_id, cosine
    (under ``subset``), bm25, role (``original``; ``retrieved``: the best other candidate, the
    one ``failures`` names; ``other``)."""
    qi, cos, rival = _one_query(arrays, query_id, subset)
    slots = np.flatnonzero(arrays.valid[qi])
    roles = {int(arrays.target[qi]): "original", rival: "retrieved"}
    return pd.DataFrame(
        {
            "candidate_id": arrays.candidate_ids[qi, slots],
            "cosine": cos[slots],
            "bm25": arrays.bm25[qi, slots],
            "role": [roles.get(int(j), "other") for j in slots],
        }
    )


def margin_contributions(arrays: RunArrays, subset: Subset, query_id: str) -> pd.DataFrame:
    """Each component's part of query ``query_id``'s margin cos_S(original) - cos_S(retrieved)
    (``component_shares`` of the two slots, subtracted; the column sums to the margin):
    component_idx, component, contribution. Empty when the query has no other candidate."""
    qi, _, rival = _one_query(arrays, query_id, subset)
    if rival < 0:
        return pd.DataFrame({"component_idx": [], "component": [], "contribution": []})
    target = int(arrays.target[qi])
    shares = component_shares(arrays, qi, [target, rival], subset)
    contribution = shares[f"slot_{target}"] - shares[f"slot_{rival}"]
    return shares[["component_idx", "component"]].assign(contribution=contribution)
