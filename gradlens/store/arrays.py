"""``RunArrays``: one run (one similarity method) as the arrays ``gradlens.selection`` works on,
and the single place that pivots long frames (the DuckDB schema's shapes) into them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["RunArrays", "arrays_from_frames", "id_codes"]


@dataclass(frozen=True, eq=False)
class RunArrays:
    """One run (one method) as selection arrays; N queries, b candidate slots, K components.

    dots[N,b,K], query_sq[N,K], cand_sq[N,b,K] (float64; 0 in padding slots), target[N] (slot of
    the original), valid[N,b] (False for padding), bm25[N,b] (NaN when unknown or padding),
    query_ids[N] and candidate_ids[N,b] (object; None in padding), components (frame sorted by
    component_idx with columns component, layer, kind, n_params; row k is array index k)."""

    dots: np.ndarray
    query_sq: np.ndarray
    cand_sq: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    bm25: np.ndarray
    query_ids: np.ndarray
    candidate_ids: np.ndarray
    components: pd.DataFrame
    method: str = "exact"

    def __post_init__(self) -> None:
        if self.dots.ndim != 3:
            raise ValueError(f"dots must be [N, b, K], got shape {self.dots.shape}")
        n, b, k = self.dots.shape
        expected = {
            "query_sq": (n, k),
            "cand_sq": (n, b, k),
            "target": (n,),
            "valid": (n, b),
            "bm25": (n, b),
            "query_ids": (n,),
            "candidate_ids": (n, b),
        }
        for name, shape in expected.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"RunArrays.{name} must have shape {shape}, got {got}")
        if len(self.components) != k:
            raise ValueError(f"RunArrays.components has {len(self.components)} rows, not K={k}")
        if n and not self.valid[np.arange(n), self.target].all():
            raise ValueError("RunArrays.target points at a padding slot")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, b, K)."""
        return self.dots.shape

    @property
    def core(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(dots, query_sq, cand_sq, target)``: the leading arguments of the selection API."""
        return self.dots, self.query_sq, self.cand_sq, self.target

    @property
    def names(self) -> list[str]:
        """User-facing component names [K]."""
        return [str(c) for c in self.components["component"]]

    @property
    def n_params(self) -> np.ndarray:
        """float[K] parameter counts (NaN where unknown)."""
        return pd.to_numeric(self.components["n_params"], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )

    @property
    def known_n_params(self) -> np.ndarray | None:
        """``n_params`` when every count is known, else None."""
        sizes = self.n_params
        return None if np.isnan(sizes).any() else sizes

    @property
    def known_bm25(self) -> np.ndarray | None:
        """``bm25`` when every valid slot has a score, else None."""
        return None if np.isnan(self.bm25[self.valid]).any() else self.bm25

    @property
    def layers(self) -> list[int | None]:
        """Layer (depth) of each component [K]; None for model-wide ones."""
        return [None if pd.isna(v) else int(v) for v in self.components["layer"]]

    @property
    def kinds(self) -> list[str]:
        return [str(v) for v in self.components["kind"]]


def id_codes(s: pd.Series, what: object) -> tuple[np.ndarray, np.ndarray]:
    """Factorise an id column: codes int64[n] and the distinct values as Python str (object).
    ValueError naming ``what`` (a file path or a table's description) and the column when a value
    is missing."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy().astype(np.int64)
        uniques = s.cat.categories
    else:
        codes, uniques = pd.factorize(s)
        codes = codes.astype(np.int64)
    if (codes < 0).any():
        raise ValueError(f"{what}: column {s.name!r} has missing values")
    return codes, np.array([str(u) for u in uniques], dtype=object)


@dataclass(frozen=True, eq=False)
class _Slots:
    """Candidate layout: query position and slot of each candidates row (sorted by query, then
    rank), the global id codes, and the arrays that depend only on the candidates."""

    n: int
    b: int
    qpos: np.ndarray
    slot: np.ndarray
    cq: np.ndarray
    cc: np.ndarray
    query_g: np.ndarray
    qpos_of: np.ndarray
    valid: np.ndarray
    target: np.ndarray
    bm25: np.ndarray
    candidate_ids: np.ndarray
    pair_index: pd.Index


def _layout(candidates: pd.DataFrame, cq, cc, id_str, n_ids: int) -> _Slots:
    """Number queries in order of first appearance, order candidates by rank, pad to max b."""
    query_g = pd.unique(cq)
    n = len(query_g)
    qpos_of = np.full(n_ids, -1, dtype=np.int64)
    qpos_of[query_g] = np.arange(n)
    qpos = qpos_of[cq]
    rank = pd.to_numeric(candidates["rank"]).to_numpy(dtype=np.float64, na_value=np.inf)
    order = np.lexsort((rank, qpos))
    qpos, cq, cc = qpos[order], cq[order], cc[order]
    starts = np.searchsorted(qpos, np.arange(n))
    slot = np.arange(len(qpos)) - starts[qpos]
    b = int(slot.max()) + 1 if len(slot) else 0
    valid = np.zeros((n, b), dtype=bool)
    valid[qpos, slot] = True
    candidate_ids = np.full((n, b), None, dtype=object)
    candidate_ids[qpos, slot] = id_str[cc]
    bm25 = np.full((n, b), np.nan)
    if "bm25" in candidates.columns:
        vals = pd.to_numeric(candidates["bm25"], errors="coerce")
        bm25[qpos, slot] = vals.to_numpy(dtype=np.float64, na_value=np.nan)[order]
    target = np.full(n, -1, dtype=np.int64)
    is_orig = cq == cc
    target[qpos[is_orig]] = slot[is_orig]
    if (target < 0).any():
        raise ValueError(
            f"candidates: query {id_str[query_g[np.flatnonzero(target < 0)[0]]]!r} has no "
            "candidate with candidate_id == query_id (its original)"
        )
    pair_index = pd.Index(cq * n_ids + cc)
    if not pair_index.is_unique:
        raise ValueError("candidates: a (query_id, candidate_id) pair repeats")
    return _Slots(
        n, b, qpos, slot, cq, cc, query_g, qpos_of, valid, target, bm25, candidate_ids, pair_index
    )


def _dots_matrix(lay: _Slots, dm, dq, dc, comp_index, names, id_str, n_ids, what) -> np.ndarray:
    """dots[N,b,K] from long rows; ValueError for unknown pairs, duplicates or gaps."""
    n, b, k = lay.n, lay.b, len(names)
    prow = lay.pair_index.get_indexer(dq * n_ids + dc)
    if (prow < 0).any():
        i = int(np.flatnonzero(prow < 0)[0])
        raise ValueError(
            f"{what}: query_id={id_str[dq[i]]!r}, candidate_id={id_str[dc[i]]!r} is not a "
            "pair in candidates"
        )
    dk = comp_index.get_indexer(np.asarray(dm["component_idx"], dtype=np.int64))
    if (dk < 0).any():
        bad = dm["component_idx"].to_numpy()[dk < 0][0]
        raise ValueError(f"{what}: component_idx {bad} is not in components")
    flat = (lay.qpos * b + lay.slot)[prow] * k + dk
    hits = np.bincount(flat, minlength=n * b * k).reshape(n, b, k)
    for bad, word in ((hits > 1, "duplicate rows"), ((hits == 0) & lay.valid[:, :, None], None)):
        if bad.any():
            i, j, c = np.argwhere(bad)[0]
            q, cand = id_str[lay.query_g[i]], lay.candidate_ids[i, j]
            if word:
                raise ValueError(
                    f"{what}: {word} for query {q!r} candidate {cand!r} component {names[c]!r}"
                )
            raise ValueError(
                f"{what}: no dot product for query {q!r} candidate {cand!r} component {names[c]!r}"
            )
    out = np.zeros(n * b * k)
    out[flat] = dm["dot"].to_numpy(dtype=np.float64)
    return out.reshape(n, b, k)


def _norm_arrays(lay: _Slots, nm, ne, comp_index, names, id_str, n_ids, what):
    """query_sq[N,K] and cand_sq[N,b,K]: queries by position, candidates by distinct id."""
    n, k = lay.n, len(names)
    sc, su = id_codes(nm["split"], what)
    split_i = np.select([su == "query", su == "train"], [0, 1], -1)[sc]
    nk = comp_index.get_indexer(np.asarray(nm["component_idx"], dtype=np.int64))
    sqnorm = nm["sqnorm"].to_numpy(dtype=np.float64)
    train_g = pd.unique(lay.cc)
    tpos_of = np.full(n_ids, -1, dtype=np.int64)
    tpos_of[train_g] = np.arange(len(train_g))
    query_sq = np.full((n, k), np.nan)
    train_sq = np.full((len(train_g), k), np.nan)
    for which, pos_of, out in ((0, lay.qpos_of, query_sq), (1, tpos_of, train_sq)):
        rows = pos_of[ne]
        sel = (split_i == which) & (rows >= 0) & (nk >= 0)
        out[rows[sel], nk[sel]] = sqnorm[sel]
    if np.isnan(query_sq).any():
        i, c = np.argwhere(np.isnan(query_sq))[0]
        raise ValueError(
            f"{what}: no sqnorm for query {id_str[lay.query_g[i]]!r} (split 'query') "
            f"component {names[c]!r}"
        )
    cand_sq = np.zeros((n, lay.b, k))
    cand_sq[lay.qpos, lay.slot] = train_sq[tpos_of[lay.cc]]
    if np.isnan(cand_sq).any():
        i, j, c = np.argwhere(np.isnan(cand_sq))[0]
        raise ValueError(
            f"{what}: no sqnorm for candidate {lay.candidate_ids[i, j]!r} (split 'train') "
            f"component {names[c]!r}"
        )
    return query_sq, cand_sq


def arrays_from_frames(
    components: pd.DataFrame,
    candidates: pd.DataFrame,
    dots: pd.DataFrame,
    norms: pd.DataFrame,
    method: str = "exact",
) -> RunArrays:
    """Pivot long frames (DuckDB schema shapes; run_id, if present, is ignored) into RunArrays.

    Queries are numbered in order of first appearance in ``candidates`` (so the caller's row
    order matters: SELECT with an ORDER BY), candidates ordered by rank within a query and padded
    to the largest b with valid=False. Rows of ``dots``/``norms`` whose ``method`` differs are
    ignored, as are norms of examples no candidate list uses. Raises ValueError for a missing
    original, missing or duplicate dot products, or missing norms."""
    comps = components.sort_values("component_idx", kind="stable").reset_index(drop=True)
    comp_index = pd.Index(np.asarray(comps["component_idx"], dtype=np.int64))
    if not comp_index.is_unique:
        raise ValueError("components: component_idx repeats")
    names = [str(x) for x in comps["component"]]
    dm = dots[dots["method"] == method] if "method" in dots.columns else dots
    nm = norms[norms["method"] == method] if "method" in norms.columns else norms
    dwhat, nwhat = f"dots (method {method!r})", f"norms (method {method!r})"
    if len(dm) == 0:
        raise ValueError(f"{dwhat}: no rows")
    # one integer id space for every id column
    cols = [
        (candidates["query_id"], "candidates"),
        (candidates["candidate_id"], "candidates"),
        (dm["query_id"], dwhat),
        (dm["candidate_id"], dwhat),
        (nm["example_id"], nwhat),
    ]
    coded = [id_codes(col, what) for col, what in cols]
    ids = pd.Index(pd.unique(np.concatenate([u for _, u in coded])))
    id_str = np.asarray(ids, dtype=object)
    cq, cc, dq, dc, ne = (ids.get_indexer(u)[codes] for codes, u in coded)
    lay = _layout(candidates, cq, cc, id_str, len(ids))
    dmat = _dots_matrix(lay, dm, dq, dc, comp_index, names, id_str, len(ids), dwhat)
    query_sq, cand_sq = _norm_arrays(lay, nm, ne, comp_index, names, id_str, len(ids), nwhat)
    return RunArrays(
        dots=dmat,
        query_sq=query_sq,
        cand_sq=cand_sq,
        target=lay.target,
        valid=lay.valid,
        bm25=lay.bm25,
        query_ids=id_str[lay.query_g],
        candidate_ids=lay.candidate_ids,
        components=comps,
        method=method,
    )
