"""Read long tables of per-component dot products computed elsewhere (``gradlens import``).

Input (Parquet or CSV, by extension):

- dots table: ``query_id, candidate_id, [rank], [bm25], component, dot`` plus any filter columns
  (e.g. ``setting``); the query's original is the candidate with ``candidate_id == query_id``.
- norms table: ``split (query|train), example_id, component, sqnorm``.
- optional n_params JSON: ``{parameter name: count or null}``; its key order is the component
  order (component index), otherwise components are numbered by first appearance.

``read_long_tables`` returns the frames in the DuckDB schema shapes (without ``run_id``);
``gradlens.arrays.arrays_from_frames`` turns such frames into ``RunArrays``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.arrays import RunArrays, arrays_from_frames
from gradlens.arrays import id_codes as _codes
from gradlens.naming import encoder_blocks_in, parse_component_name

__all__ = [
    "ImportedTables",
    "RunArrays",
    "arrays_from_frames",
    "parse_component_name",
    "read_long_tables",
]

DOTS_COLUMNS = ("query_id", "candidate_id", "component", "dot")
NORMS_COLUMNS = ("split", "example_id", "component", "sqnorm")
SPLITS = ("query", "train")


@dataclass(frozen=True, eq=False)
class ImportedTables:
    """Long frames in the DuckDB schema shapes (without run_id).

    components(component_idx, component, layer, kind, n_params, param_name);
    candidates(query_id, candidate_id, rank, bm25); dots(method, query_id, candidate_id,
    component_idx, dot); norms(method, split, example_id, component_idx, sqnorm)."""

    components: pd.DataFrame
    candidates: pd.DataFrame
    dots: pd.DataFrame
    norms: pd.DataFrame

    def to_arrays(self, method: str = "exact") -> RunArrays:
        """The tables as RunArrays (``arrays_from_frames``)."""
        return arrays_from_frames(
            self.components, self.candidates, self.dots, self.norms, method=method
        )


# --------------------------------------------------------------------------------------------
# reading


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz")):
        ids = {"query_id": str, "candidate_id": str, "example_id": str, "component": str}
        return pd.read_csv(path, dtype=ids)
    raise ValueError(f"{path}: unsupported file type (expected .parquet or .csv)")


def _require(df: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    for col in columns:
        if col not in df.columns:
            have = ", ".join(map(str, df.columns))
            raise ValueError(f"{path}: missing column {col!r} (columns: {have})")


def _apply_filters(
    df: pd.DataFrame, filters: dict[str, str], path: Path, required: bool
) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for col, value in filters.items():
        if col not in df.columns:
            if required:
                raise ValueError(f"{path}: filter column {col!r} not found")
            continue
        codes, uniques = _codes(df[col], path)
        hit = np.isin(codes, np.flatnonzero(uniques == str(value)))
        if not hit.any():
            seen = ", ".join(sorted(set(uniques[np.unique(codes)]))[:10])
            raise ValueError(f"{path}: filter {col}={value!r} selects no rows ({col}: {seen})")
        mask &= hit
    if not mask.any():
        raise ValueError(f"{path}: filters {filters} together select no rows")
    if mask.all():
        return df
    return df.loc[mask].reset_index(drop=True)


def _read_n_params(path: Path) -> dict[str, int | None]:
    try:
        with path.open() as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{parameter name: count}}")
    out: dict[str, int | None] = {}
    for key, value in data.items():
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ValueError(f"{path}: n_params of {key!r} must be a non-negative integer or null")
        out[str(key)] = value
    return out


def _components_frame(names: list[str], n_params: dict[str, int | None] | None) -> pd.DataFrame:
    encoder_blocks = encoder_blocks_in(names)
    parsed = [parse_component_name(n, encoder_blocks) for n in names]
    seen: dict[str, str] = {}
    for (disp, _, _), name in zip(parsed, names, strict=True):
        if disp in seen:
            raise ValueError(
                f"parameters {seen[disp]!r} and {name!r} both map to component {disp!r}"
            )
        seen[disp] = name
    counts = [None if n_params is None else n_params.get(n) for n in names]
    return pd.DataFrame(
        {
            "component_idx": np.arange(len(names), dtype=np.int64),
            "component": pd.Series([p[0] for p in parsed], dtype=object),
            "layer": pd.array([p[1] for p in parsed], dtype="Int64"),
            "kind": pd.Series([p[2] for p in parsed], dtype=object),
            "n_params": pd.array(counts, dtype="Int64"),
            "param_name": pd.Series(names, dtype=object),
        }
    )


def _obj(values: np.ndarray) -> pd.Series:
    return pd.Series(values, dtype=object)


@dataclass(frozen=True, eq=False)
class _Ids:
    """One integer id space over queries, candidates and norm examples (codes per row)."""

    q: np.ndarray
    c: np.ndarray
    e: np.ndarray
    names: np.ndarray  # object[n_ids]: code -> id string

    @property
    def n(self) -> int:
        return len(self.names)


def _id_space(raw: pd.DataFrame, nraw: pd.DataFrame, dots_path: Path, norms_path: Path) -> _Ids:
    qc, qu = _codes(raw["query_id"], dots_path)
    cc, cu = _codes(raw["candidate_id"], dots_path)
    ec, eu = _codes(nraw["example_id"], norms_path)
    ids = pd.Index(pd.unique(np.concatenate([qu, cu, eu])))
    return _Ids(
        q=ids.get_indexer(qu)[qc],
        c=ids.get_indexer(cu)[cc],
        e=ids.get_indexer(eu)[ec],
        names=np.asarray(ids, dtype=object),
    )


def _dot_values(raw: pd.DataFrame, ids: _Ids, path: Path) -> np.ndarray:
    dot = pd.to_numeric(raw["dot"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(dot).any():
        i = int(np.flatnonzero(np.isnan(dot))[0])
        raise ValueError(
            f"{path}: column 'dot' is missing or not numeric at query_id={ids.names[ids.q[i]]!r}, "
            f"candidate_id={ids.names[ids.c[i]]!r}"
        )
    return dot


def _component_order(
    raw: pd.DataFrame, dots_path: Path, n_params_path: Path | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Components frame (index order: the n_params file's keys, else first appearance) and the
    component index of every dots row."""
    kc, ku = _codes(raw["component"], dots_path)
    seen_names = [str(x) for x in ku[pd.unique(kc)]]
    n_params = _read_n_params(n_params_path) if n_params_path is not None else None
    names = seen_names
    if n_params is not None:
        names = list(n_params)
        extra = [n for n in seen_names if n not in n_params]
        if extra:
            raise ValueError(f"{dots_path}: component {extra[0]!r} is not in {n_params_path}")
        missing = [n for n in names if n not in set(seen_names)]
        if missing:
            raise ValueError(
                f"{n_params_path}: component {missing[0]!r} has no rows in {dots_path}"
            )
    try:
        components = _components_frame(names, n_params)
    except ValueError as err:
        raise ValueError(f"{n_params_path or dots_path}: {err}") from None
    return components, pd.Index(names).get_indexer(ku)[kc]


def _check_no_duplicate_dots(raw, ids: _Ids, comp: np.ndarray, names, path: Path) -> None:
    k = len(names)
    dup = pd.Series((ids.q * ids.n + ids.c) * k + comp).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        extra_cols = [x for x in raw.columns if x not in (*DOTS_COLUMNS, "rank", "bm25")]
        hint = f"; filter by one of {extra_cols}?" if extra_cols else ""
        raise ValueError(
            f"{path}: duplicate (query_id, candidate_id, component) row at "
            f"query_id={ids.names[ids.q[i]]!r}, candidate_id={ids.names[ids.c[i]]!r}, "
            f"component={names[comp[i]]!r}{hint}"
        )


def _candidates_frame(raw: pd.DataFrame, ids: _Ids, k: int, path: Path):
    """One candidates row per (query, candidate) in order of first appearance, with rank/bm25
    (consistent across a pair's rows); also each row's pair code and the pairs' id codes."""
    pair_codes, pair_uniques = pd.factorize(ids.q * ids.n + ids.c)
    first_rows = np.flatnonzero(~pd.Series(pair_codes).duplicated().to_numpy())
    cq, ccand = ids.q[first_rows], ids.c[first_rows]
    cand = pd.DataFrame({"query_id": _obj(ids.names[cq]), "candidate_id": _obj(ids.names[ccand])})
    for col in ("rank", "bm25"):
        if col not in raw.columns:
            continue
        vals = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        first = vals[first_rows][pair_codes]
        same = (vals == first) | (np.isnan(vals) & np.isnan(first))
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            raise ValueError(
                f"{path}: column {col!r} differs between rows of "
                f"query_id={ids.names[ids.q[i]]!r}, candidate_id={ids.names[ids.c[i]]!r}"
            )
        cand[col] = vals[first_rows]
    _check_ranks(cand, cq, ids, path)
    if "bm25" not in cand.columns:
        cand["bm25"] = np.nan
    _check_pairs(cq, ccand, np.bincount(pair_codes, minlength=len(pair_uniques)), ids, k, path)
    return cand[["query_id", "candidate_id", "rank", "bm25"]], cq, ccand


def _check_ranks(cand: pd.DataFrame, cq: np.ndarray, ids: _Ids, path: Path) -> None:
    """Ranks must be numbers, distinct within a query; absent ranks follow the row order."""
    if "rank" not in cand.columns:
        cand["rank"] = pd.Series(cq).groupby(cq, sort=False).cumcount().to_numpy() + 1
        return
    if np.isnan(cand["rank"].to_numpy()).any():
        raise ValueError(f"{path}: column 'rank' has missing or non-numeric values")
    cand["rank"] = cand["rank"].astype(np.int64)
    rep = pd.Series(cq * (int(cand["rank"].max()) + 1) + cand["rank"].to_numpy()).duplicated()
    if rep.any():
        i = int(np.flatnonzero(rep.to_numpy())[0])
        raise ValueError(
            f"{path}: column 'rank' repeats within query {ids.names[cq[i]]!r} "
            f"(rank {int(cand['rank'].iloc[i])})"
        )


def _check_pairs(cq, ccand, per_pair: np.ndarray, ids: _Ids, k: int, path: Path) -> None:
    """Every query has its original among its candidates; every pair has all K components."""
    queries = pd.unique(cq)
    has_orig = np.zeros(ids.n, dtype=bool)
    has_orig[cq[cq == ccand]] = True
    if not has_orig[queries].all():
        bad = queries[~has_orig[queries]][0]
        raise ValueError(
            f"{path}: query {ids.names[bad]!r} has no row with candidate_id == query_id "
            "(its original is not among its candidates)"
        )
    if (per_pair != k).any():
        j = int(np.flatnonzero(per_pair != k)[0])
        raise ValueError(
            f"{path}: query_id={ids.names[cq[j]]!r}, candidate_id={ids.names[ccand[j]]!r} has "
            f"{per_pair[j]} of {k} components in column 'component'"
        )


def _norms_frame(nraw, ids: _Ids, names, cq, ccand, norms_path: Path, dots_path: Path):
    """Validated norms rows (method ``exact``): known splits and components, non-negative
    values, no duplicates, and a norm for every query and candidate of every component."""
    k = len(names)
    sc, su = _codes(nraw["split"], norms_path)
    bad_split = [x for x in su[np.unique(sc)] if x not in SPLITS]
    if bad_split:
        raise ValueError(
            f"{norms_path}: column 'split' has value {bad_split[0]!r} (expected query or train)"
        )
    split_is_train = (su == "train")[sc]
    nkc, nku = _codes(nraw["component"], norms_path)
    ncomp = pd.Index(names).get_indexer(nku)[nkc]
    if (ncomp < 0).any():
        bad = nku[nkc[ncomp < 0][0]]
        raise ValueError(
            f"{norms_path}: column 'component' has {bad!r}, which {dots_path} does not have"
        )
    sq = pd.to_numeric(nraw["sqnorm"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad_sq = np.isnan(sq) | (sq < 0)
    if bad_sq.any():
        i = int(np.flatnonzero(bad_sq)[0])
        raise ValueError(
            f"{norms_path}: column 'sqnorm' is missing, non-numeric or negative at "
            f"example_id={ids.names[ids.e[i]]!r}, component={names[ncomp[i]]!r}"
        )
    ndup = pd.Series((split_is_train.astype(np.int64) * ids.n + ids.e) * k + ncomp).duplicated()
    if ndup.any():
        i = int(np.flatnonzero(ndup.to_numpy())[0])
        raise ValueError(
            f"{norms_path}: duplicate (split, example_id, component) row at "
            f"split={su[sc[i]]!r}, example_id={ids.names[ids.e[i]]!r}, "
            f"component={names[ncomp[i]]!r}"
        )
    have = np.zeros((2, ids.n, k), dtype=bool)
    have[split_is_train.astype(np.int64), ids.e, ncomp] = True
    for split_i, role, need in ((0, "query", pd.unique(cq)), (1, "candidate", pd.unique(ccand))):
        gaps = ~have[split_i, need]
        if gaps.any():
            r, col = np.argwhere(gaps)[0]
            raise ValueError(
                f"{norms_path}: no 'sqnorm' for {role} {ids.names[need[r]]!r} "
                f"(split {SPLITS[split_i]!r}) component {names[col]!r}"
            )
    return pd.DataFrame(
        {
            "method": _obj(np.full(len(sq), "exact", dtype=object)),
            "split": _obj(su[sc]),
            "example_id": _obj(ids.names[ids.e]),
            "component_idx": ncomp.astype(np.int64),
            "sqnorm": sq,
        }
    )


def read_long_tables(
    dots_path: str | Path,
    norms_path: str | Path,
    n_params_path: str | Path | None = None,
    filters: dict[str, str] | None = None,
) -> ImportedTables:
    """Read and validate long dots/norms tables (see module docstring) into ImportedTables.

    ``filters`` ({column: value}, compared as strings) selects rows of the dots table (the column
    must exist there) and of the norms table where it has that column. Raises a one-line
    ValueError naming the file and column for missing columns, empty filters, duplicate
    (query, candidate, component) rows, a query without its original among its candidates,
    missing norms, and unknown component names. Id columns come back as Python str (object)."""
    dots_path, norms_path = Path(dots_path), Path(norms_path)
    filters = dict(filters or {})
    raw = _read_table(dots_path)
    _require(raw, DOTS_COLUMNS, dots_path)
    raw = _apply_filters(raw, filters, dots_path, required=True)
    nraw = _read_table(norms_path)
    _require(nraw, NORMS_COLUMNS, norms_path)
    nraw = _apply_filters(nraw, filters, norms_path, required=False)
    ids = _id_space(raw, nraw, dots_path, norms_path)
    dot = _dot_values(raw, ids, dots_path)
    components, comp = _component_order(
        raw, dots_path, Path(n_params_path) if n_params_path is not None else None
    )
    names = [str(x) for x in components["param_name"]]  # as the tables spell them
    _check_no_duplicate_dots(raw, ids, comp, names, dots_path)
    cand, cq, ccand = _candidates_frame(raw, ids, len(names), dots_path)
    norms = _norms_frame(nraw, ids, names, cq, ccand, norms_path, dots_path)
    dots = pd.DataFrame(
        {
            "method": _obj(np.full(len(dot), "exact", dtype=object)),
            "query_id": _obj(ids.names[ids.q]),
            "candidate_id": _obj(ids.names[ids.c]),
            "component_idx": comp.astype(np.int64),
            "dot": dot,
        }
    )
    return ImportedTables(components=components, candidates=cand, dots=dots, norms=norms)
