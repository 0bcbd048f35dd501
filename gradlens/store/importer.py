"""Read long tables of per-component dot products computed elsewhere (``gradlens import``).

Input (Parquet or CSV, by extension):

- dots table: ``query_id, candidate_id, [rank], [bm25], component, dot`` plus any filter columns
  (e.g. ``setting``); the query's original is the candidate with ``candidate_id == query_id``.
- norms table: ``split (query|train), example_id, component, sqnorm``.
- optional n_params JSON: ``{parameter name: count or null}``; its key order is the component
  order (component index), otherwise components are numbered by first appearance.

``read_long_tables`` returns the frames in the DuckDB schema shapes (without ``run_id``);
``gradlens.store.arrays.arrays_from_frames`` turns such frames into ``RunArrays``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.errors import TableError, show
from gradlens.models.naming import encoder_blocks_in, parse_component_name
from gradlens.store.arrays import RunArrays, arrays_from_frames, id_codes

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
#: Number columns of the dots table (``rank`` and ``bm25`` optional).
DOTS_NUMBERS = ("dot", "rank", "bm25")


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
    if not path.is_file():
        raise TableError(f"{path}: file not found")
    if name.endswith((".parquet", ".pq")):
        kind, read = "Parquet", pd.read_parquet
    elif name.endswith((".csv", ".csv.gz")):
        ids = {"query_id": str, "candidate_id": str, "example_id": str, "component": str}
        kind, read = "CSV", lambda p: pd.read_csv(p, dtype=ids)
    else:
        raise TableError(f"{path}: unsupported file type (expected .parquet or .csv)")
    try:
        frame = read(path)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file is a user error here
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TableError(f"{path}: cannot read as {kind} ({first})") from None
    frame.columns = [str(c) for c in frame.columns]
    if frame.columns.duplicated().any():
        dup = frame.columns[frame.columns.duplicated()][0]
        raise TableError(f"{path}: column {show(dup)} appears twice")
    return frame


def _require(df: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    for col in columns:
        if col not in df.columns:
            have = show(", ".join(map(str, df.columns)), 100)
            raise TableError(f"{path}: missing column {show(col)} (columns: {have})")


def _values(s: pd.Series) -> str:
    """What a column holds: ``text``, ``integer``, ``float``, ``bool`` or a description."""
    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _values(pd.Series(dtype.categories))
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        kind = pd.api.types.infer_dtype(s, skipna=True)
        return {"string": "text", "empty": "text"}.get(kind, kind)
    return str(dtype)


def _check_types(df: pd.DataFrame, path: Path, ids, numbers, filters) -> None:
    """Id columns hold text or integers, filter columns single values; number columns numbers
    (a CSV's text is parsed later, row by row; a Parquet file's column types must be right as
    they are)."""
    parquet = not path.name.lower().endswith((".csv", ".csv.gz"))
    for col in ids:
        if col in df.columns and _values(df[col]) not in ("text", "integer"):
            raise TableError(
                f"{path}: column {show(col)} must hold text or integers, not {_values(df[col])}"
            )
    for col in filters:
        kind = _values(df[col]) if col in df.columns else "text"
        if kind not in ("text", "integer", "float", "bool"):
            raise TableError(f"{path}: filter column {show(col)} holds {kind}, not single values")
    for col in numbers:
        if col not in df.columns:
            continue
        kind = _values(df[col])
        if kind not in ("integer", "float") and (parquet or kind != "text"):
            raise TableError(f"{path}: column {show(col)} must hold numbers, not {kind}")


def _codes(s: pd.Series, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        return id_codes(s, path)
    except ValueError as exc:
        raise TableError(str(exc)) from None


def _apply_filters(
    df: pd.DataFrame, filters: dict[str, str], path: Path, required: bool
) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for col, value in filters.items():
        if col not in df.columns:
            if required:
                raise TableError(f"{path}: filter column {show(col)} not found")
            continue
        codes, uniques = _codes(df[col], path)
        hit = np.isin(codes, np.flatnonzero(uniques == str(value)))
        if not hit.any():
            seen = show(", ".join(sorted(set(uniques[np.unique(codes)]))[:10]), 100)
            raise TableError(f"{path}: filter {col}={show(value)} selects no rows ({col}: {seen})")
        mask &= hit
    if not mask.any():
        raise TableError(f"{path}: filters {show(filters, 100)} together select no rows")
    if mask.all():
        return df
    return df.loc[mask].reset_index(drop=True)


def _read_n_params(path: Path) -> dict[str, int | None]:
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise TableError(f"{path}: cannot read ({e.strerror or e})") from None
    except RecursionError:
        raise TableError(f"{path}: cannot read JSON (nested too deeply)") from None
    except ValueError as e:  # broken JSON, invalid UTF-8, an integer too long to convert
        raise TableError(f"{path}: cannot read JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TableError(f"{path}: expected a JSON object {{parameter name: count}}")
    out: dict[str, int | None] = {}
    for key, value in data.items():
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise TableError(
                f"{path}: n_params of {show(key)} must be a non-negative integer or null"
            )
        out[str(key)] = value
    return out


def _components_frame(names: list[str], n_params: dict[str, int | None] | None) -> pd.DataFrame:
    encoder_blocks = encoder_blocks_in(names)
    parsed = [parse_component_name(n, encoder_blocks) for n in names]
    seen: dict[str, str] = {}
    for (disp, _, _), name in zip(parsed, names, strict=True):
        if disp in seen:
            raise TableError(
                f"parameters {show(seen[disp])} and {show(name)} both map to component {show(disp)}"
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
    query_codes, query_ids = _codes(raw["query_id"], dots_path)
    cand_codes, cand_ids = _codes(raw["candidate_id"], dots_path)
    example_codes, example_ids = _codes(nraw["example_id"], norms_path)
    ids = pd.Index(pd.unique(np.concatenate([query_ids, cand_ids, example_ids])))
    return _Ids(
        q=ids.get_indexer(query_ids)[query_codes],
        c=ids.get_indexer(cand_ids)[cand_codes],
        e=ids.get_indexer(example_ids)[example_codes],
        names=np.asarray(ids, dtype=object),
    )


def _refuse_first(bad: np.ndarray, message: Callable[[int], str]) -> None:
    """A TableError saying ``message(i)`` for the first row ``i`` where ``bad`` holds."""
    if bad.any():
        raise TableError(message(int(np.flatnonzero(bad)[0])))


def _cell(value: object) -> str:
    """A table cell as an error message quotes it (``nan``, ``inf``, ``'abc'``)."""
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return show(value)


def _finite(raw: pd.DataFrame, col: str, path: Path, where, nonneg: bool = False) -> np.ndarray:
    """Column ``col`` as float64; TableError naming the file and the first row (``where(i)``)
    whose value is missing, not a number, NaN, infinite (or negative, with ``nonneg``)."""
    vals = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(vals)
    if nonneg:
        bad |= vals < 0
    need = "a finite number >= 0" if nonneg else "a finite number"
    _refuse_first(
        bad,
        lambda i: (
            f"{path}: column {col!r} must be {need}, got {_cell(raw[col].iloc[i])} at {where(i)}"
        ),
    )
    return vals


def _dot_values(raw: pd.DataFrame, ids: _Ids, comp: np.ndarray, names, path: Path) -> np.ndarray:
    return _finite(raw, "dot", path, lambda i: f"{_pair(ids, i)}, component={show(names[comp[i]])}")


def _component_order(
    raw: pd.DataFrame, dots_path: Path, n_params_path: Path | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Components frame (index order: the n_params file's keys, else first appearance) and the
    component index of every dots row."""
    comp_codes, comp_names = _codes(raw["component"], dots_path)
    seen_names = [str(x) for x in comp_names[pd.unique(comp_codes)]]
    n_params = _read_n_params(n_params_path) if n_params_path is not None else None
    names = seen_names
    if n_params is not None:
        names = list(n_params)
        extra = [n for n in seen_names if n not in n_params]
        if extra:
            raise TableError(f"{dots_path}: component {show(extra[0])} is not in {n_params_path}")
        missing = [n for n in names if n not in set(seen_names)]
        if missing:
            raise TableError(
                f"{n_params_path}: component {show(missing[0])} has no rows in {dots_path}"
            )
    try:
        components = _components_frame(names, n_params)
    except ValueError as err:
        raise TableError(f"{n_params_path or dots_path}: {err}") from None
    return components, pd.Index(names).get_indexer(comp_names)[comp_codes]


def _check_no_duplicate_dots(raw, ids: _Ids, comp: np.ndarray, names, path: Path) -> None:
    k = len(names)
    dup = pd.Series((ids.q * ids.n + ids.c) * k + comp).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        extra_cols = [x for x in raw.columns if x not in (*DOTS_COLUMNS, "rank", "bm25")]
        hint = f"; filter by one of {extra_cols}?" if extra_cols else ""
        raise TableError(
            f"{path}: duplicate (query_id, candidate_id, component) row at {_pair(ids, i)}, "
            f"component={show(names[comp[i]])}{hint}"
        )


def _pair(ids: _Ids, i: int) -> str:
    """The (query, candidate) pair of dots row ``i``, as a message names it."""
    return _pair_of(ids, ids.q[i], ids.c[i])


def _pair_of(ids: _Ids, query: int, candidate: int) -> str:
    """The pair of the id codes ``query`` and ``candidate``, as a message names it."""
    return f"query_id={show(ids.names[query])}, candidate_id={show(ids.names[candidate])}"


def _rank_bm25(raw: pd.DataFrame, col: str, ids: _Ids, path: Path) -> np.ndarray:
    """``rank`` (whole numbers) or ``bm25`` (finite numbers; NaN where unknown) as float64."""
    if col == "rank":
        vals = _finite(raw, col, path, lambda i: _pair(ids, i))
        _refuse_first(
            vals != np.round(vals),
            lambda i: (
                f"{path}: column 'rank' must be a whole number, got {_cell(vals[i])} at "
                f"{_pair(ids, i)}"
            ),
        )
        return vals
    vals = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isinf(vals) | (np.isnan(vals) & raw[col].notna().to_numpy())  # text, not a number
    _refuse_first(
        bad,
        lambda i: (
            f"{path}: column 'bm25' must be a finite number (or empty where unknown), "
            f"got {_cell(raw[col].iloc[i])} at {_pair(ids, i)}"
        ),
    )
    return vals


def _candidates_frame(raw: pd.DataFrame, ids: _Ids, comp: np.ndarray, names, path: Path):
    """One candidates row per (query, candidate) in order of first appearance, with rank/bm25
    (consistent across a pair's rows); also each row's pair code and the pairs' id codes."""
    pair_codes, pair_uniques = pd.factorize(ids.q * ids.n + ids.c)
    first_rows = np.flatnonzero(~pd.Series(pair_codes).duplicated().to_numpy())
    cq, ccand = ids.q[first_rows], ids.c[first_rows]
    cand = pd.DataFrame({"query_id": _obj(ids.names[cq]), "candidate_id": _obj(ids.names[ccand])})
    for col in ("rank", "bm25"):
        if col not in raw.columns:
            continue
        vals = _rank_bm25(raw, col, ids, path)
        first = vals[first_rows][pair_codes]
        same = (vals == first) | (np.isnan(vals) & np.isnan(first))
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            raise TableError(f"{path}: column {show(col)} differs between rows of {_pair(ids, i)}")
        cand[col] = vals[first_rows]
    _check_ranks(cand, cq, ids, path)
    if "bm25" not in cand.columns:
        cand["bm25"] = np.nan
    per_pair = np.bincount(pair_codes, minlength=len(pair_uniques))
    _check_pairs(cq, ccand, ids, path)
    _check_components(pair_codes, per_pair, comp, names, cq, ccand, ids, path)
    return cand[["query_id", "candidate_id", "rank", "bm25"]], cq, ccand


def _check_ranks(cand: pd.DataFrame, cq: np.ndarray, ids: _Ids, path: Path) -> None:
    """Ranks must be numbers, distinct within a query; absent ranks follow the row order."""
    if "rank" not in cand.columns:
        cand["rank"] = pd.Series(cq).groupby(cq, sort=False).cumcount().to_numpy() + 1
        return
    if np.isnan(cand["rank"].to_numpy()).any():
        raise TableError(f"{path}: column 'rank' has missing or non-numeric values")
    cand["rank"] = cand["rank"].astype(np.int64)
    rep = pd.Series(cq * (int(cand["rank"].max()) + 1) + cand["rank"].to_numpy()).duplicated()
    if rep.any():
        i = int(np.flatnonzero(rep.to_numpy())[0])
        raise TableError(
            f"{path}: column 'rank' repeats within query {show(ids.names[cq[i]])} "
            f"(rank {int(cand['rank'].iloc[i])})"
        )


def _check_pairs(cq, ccand, ids: _Ids, path: Path) -> None:
    """Every query has its original among its candidates."""
    queries = pd.unique(cq)
    has_orig = np.zeros(ids.n, dtype=bool)
    has_orig[cq[cq == ccand]] = True
    if not has_orig[queries].all():
        bad = queries[~has_orig[queries]][0]
        raise TableError(
            f"{path}: query {show(ids.names[bad])} has no row with candidate_id == query_id "
            "(its original is not among its candidates)"
        )


def _check_components(pair_codes, per_pair, comp, names, cq, ccand, ids: _Ids, path: Path) -> None:
    """Every (query, candidate) pair has a row for each of the K components (duplicates were
    refused before, so a pair with fewer than K rows lacks one)."""
    k = len(names)
    short = np.flatnonzero(per_pair != k)
    if short.size:
        j = int(short[0])
        have = set(comp[pair_codes == j].tolist())
        missing = next(c for c in range(k) if c not in have)
        raise TableError(
            f"{path}: {_pair_of(ids, cq[j], ccand[j])} has {per_pair[j]} of {k} components: no "
            f"row for component {show(names[missing])}"
        )


def _norms_frame(nraw, ids: _Ids, names, cq, ccand, norms_path: Path, dots_path: Path):
    """Validated norms rows (method ``exact``): known splits and components, non-negative
    values, no duplicates, and a norm for every query and candidate of every component."""
    k = len(names)
    split_codes, split_names = _codes(nraw["split"], norms_path)
    bad_split = [x for x in split_names[np.unique(split_codes)] if x not in SPLITS]
    if bad_split:
        raise TableError(
            f"{norms_path}: column 'split' has value {show(bad_split[0])} (expected query or train)"
        )
    split_is_train = (split_names == "train")[split_codes]
    comp_codes, comp_names = _codes(nraw["component"], norms_path)
    ncomp = pd.Index(names).get_indexer(comp_names)[comp_codes]
    if (ncomp < 0).any():
        bad = comp_names[comp_codes[ncomp < 0][0]]
        raise TableError(
            f"{norms_path}: column 'component' has {show(bad)}, which {dots_path} does not have"
        )
    sq = _finite(
        nraw,
        "sqnorm",
        norms_path,
        lambda i: (
            f"split={show(split_names[split_codes[i]])}, example_id={show(ids.names[ids.e[i]])}, "
            f"component={show(names[ncomp[i]])}"
        ),
        nonneg=True,
    )
    ndup = pd.Series((split_is_train.astype(np.int64) * ids.n + ids.e) * k + ncomp).duplicated()
    if ndup.any():
        i = int(np.flatnonzero(ndup.to_numpy())[0])
        raise TableError(
            f"{norms_path}: duplicate (split, example_id, component) row at "
            f"split={show(split_names[split_codes[i]])}, example_id={show(ids.names[ids.e[i]])}, "
            f"component={show(names[ncomp[i]])}"
        )
    have = np.zeros((2, ids.n, k), dtype=bool)
    have[split_is_train.astype(np.int64), ids.e, ncomp] = True
    for split_i, role, need in ((0, "query", pd.unique(cq)), (1, "candidate", pd.unique(ccand))):
        gaps = ~have[split_i, need]
        if gaps.any():
            r, col = np.argwhere(gaps)[0]
            raise TableError(
                f"{norms_path}: no 'sqnorm' for {role} {show(ids.names[need[r]])} "
                f"(split {show(SPLITS[split_i])}) component {show(names[col])}"
            )
    return pd.DataFrame(
        {
            "method": _obj(np.full(len(sq), "exact", dtype=object)),
            "split": _obj(split_names[split_codes]),
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
    missing norms, and unknown component names; for a file that is not a table of the right
    types; for NaN, infinite or (norms) negative values; for a pair without a row for every
    component. The message names an offending row. Id columns come back as Python str
    (object)."""
    dots_path, norms_path = Path(dots_path), Path(norms_path)
    filters = {str(k): str(v) for k, v in (filters or {}).items()}
    try:
        return _read_long_tables(dots_path, norms_path, n_params_path, filters)
    except TableError:
        raise
    except ValueError as exc:  # a check below that names no file itself
        raise TableError(f"{dots_path}: {exc}") from None


def _read_long_tables(dots_path: Path, norms_path: Path, n_params_path, filters) -> ImportedTables:
    raw = _read_table(dots_path)
    _require(raw, DOTS_COLUMNS, dots_path)
    _check_types(raw, dots_path, ("query_id", "candidate_id", "component"), DOTS_NUMBERS, filters)
    raw = _apply_filters(raw, filters, dots_path, required=True)
    nraw = _read_table(norms_path)
    _require(nraw, NORMS_COLUMNS, norms_path)
    _check_types(nraw, norms_path, ("split", "example_id", "component"), ("sqnorm",), filters)
    nraw = _apply_filters(nraw, filters, norms_path, required=False)
    ids = _id_space(raw, nraw, dots_path, norms_path)
    components, comp = _component_order(
        raw, dots_path, Path(n_params_path) if n_params_path is not None else None
    )
    names = [str(x) for x in components["param_name"]]  # as the tables spell them
    dot = _dot_values(raw, ids, comp, names, dots_path)
    _check_no_duplicate_dots(raw, ids, comp, names, dots_path)
    cand, cq, ccand = _candidates_frame(raw, ids, comp, names, dots_path)
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
