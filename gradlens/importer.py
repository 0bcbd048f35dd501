"""Import long tables of per-component dot products computed elsewhere, and pivot long frames
into the arrays ``gradlens.selection`` works on.

Input (Parquet or CSV, by extension):

- dots table: ``query_id, candidate_id, [rank], [bm25], component, dot`` plus any filter columns
  (e.g. ``setting``); the query's original is the candidate with ``candidate_id == query_id``.
- norms table: ``split (query|train), example_id, component, sqnorm``.
- optional n_params JSON: ``{parameter name: count or null}``; its key order is the component
  order (component index), otherwise components are numbered by first appearance.

``read_long_tables`` returns the frames in the DuckDB schema shapes (without ``run_id``);
``arrays_from_frames`` is the single place that turns such frames into ``RunArrays``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "ImportedTables",
    "RunArrays",
    "arrays_from_frames",
    "parse_component_name",
    "read_long_tables",
    "to_arrays",
]

KINDS = ("embed", "q", "k", "v", "o", "gate", "up", "down", "qkv", "fc_in", "fc_out", "lm_head")
MODEL_WIDE = ("embed", "lm_head")

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_USER_RE = re.compile(r"^L(\d+)\.(" + "|".join(k for k in KINDS if k not in MODEL_WIDE) + r")$")
# (pattern on the parameter name without ".weight", kind); first match wins
_KIND_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), k)
    for p, k in (
        (r"(?:^|\.)(?:embed_tokens|wte|embed_in|word_embeddings)$", "embed"),
        (r"(?:^|\.)(?:lm_head|embed_out)$", "lm_head"),
        (r"\.q_proj$", "q"),
        (r"\.k_proj$", "k"),
        (r"\.v_proj$", "v"),
        (r"\.(?:o_proj|out_proj)$", "o"),
        (r"\.qkv_proj$", "qkv"),
        (r"\.gate_proj$", "gate"),
        (r"\.up_proj$", "up"),
        (r"\.down_proj$", "down"),
        (r"\.attn\.c_attn$", "qkv"),
        (r"\.attn\.c_proj$", "o"),
        (r"\.mlp\.c_fc$", "fc_in"),
        (r"\.mlp\.c_proj$", "fc_out"),
        (r"\.attention\.query_key_value$", "qkv"),
        (r"\.attention\.dense$", "o"),
        (r"\.mlp\.dense_h_to_4h$", "fc_in"),
        (r"\.mlp\.dense_4h_to_h$", "fc_out"),
        (r"\.fc1$", "fc_in"),
        (r"\.fc2$", "fc_out"),
    )
)

DOTS_COLUMNS = ("query_id", "candidate_id", "component", "dot")
NORMS_COLUMNS = ("split", "example_id", "component", "sqnorm")
SPLITS = ("query", "train")


def parse_component_name(name: str) -> tuple[str, int | None, str]:
    """Map a parameter name to ``(component, layer, kind)``.

    ``model.layers.9.mlp.down_proj.weight`` -> ``("L9.down", 9, "down")``,
    ``transformer.wte.weight`` -> ``("embed", None, "embed")``; Llama/OLMo/Qwen/Mistral, GPT-2,
    GPT-NeoX (and OPT/Phi-style fc1/fc2) names are understood, as are names already in the
    user-facing form (``L3.gate``, ``embed``, ``lm_head``). Raises ValueError naming an unknown
    name."""
    if name in MODEL_WIDE:
        return name, None, name
    user = _USER_RE.match(name)
    if user:
        return name, int(user.group(1)), user.group(2)
    base = name[: -len(".weight")] if name.endswith(".weight") else name
    for pattern, kind in _KIND_PATTERNS:
        if pattern.search(base):
            if kind in MODEL_WIDE:
                return kind, None, kind
            layer = _LAYER_RE.search(base)
            if layer is None:
                break
            return f"L{int(layer.group(1))}.{kind}", int(layer.group(1)), kind
    raise ValueError(
        f"cannot map parameter {name!r} to a component (expected e.g. model.layers.N.mlp.down_proj"
        ".weight, transformer.h.N.attn.c_attn.weight or gpt_neox.layers.N.attention.dense.weight)"
    )


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


@dataclass(frozen=True, eq=False)
class RunArrays:
    """One run (one method) as selection arrays; N queries, b candidate slots, K components.

    dots[N,b,K], query_sq[N,K], cand_sq[N,b,K] (float64; 0 in padding slots), target[N] (slot of
    the original), valid[N,b] (False for padding), bm25[N,b] (NaN when unknown or padding),
    query_ids[N] and candidate_ids[N,b] (object; None in padding), components (frame sorted by
    component_idx; row k is array index k)."""

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


def _codes(s: pd.Series, path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Factorise an id column: codes int64[n] and the distinct values as Python str (object)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy().astype(np.int64)
        uniques = s.cat.categories
    else:
        codes, uniques = pd.factorize(s)
        codes = codes.astype(np.int64)
    if (codes < 0).any():
        raise ValueError(f"{path}: column {s.name!r} has missing values")
    return codes, np.array([str(u) for u in uniques], dtype=object)


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
    parsed = [parse_component_name(n) for n in names]
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

    # one id space for queries, candidates and norm examples
    qc, qu = _codes(raw["query_id"], dots_path)
    cc, cu = _codes(raw["candidate_id"], dots_path)
    ec, eu = _codes(nraw["example_id"], norms_path)
    ids = pd.Index(pd.unique(np.concatenate([qu, cu, eu])))
    id_str = np.asarray(ids, dtype=object)
    q = ids.get_indexer(qu)[qc]
    c = ids.get_indexer(cu)[cc]
    e = ids.get_indexer(eu)[ec]
    n_ids = len(ids)

    dot = pd.to_numeric(raw["dot"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(dot).any():
        i = int(np.flatnonzero(np.isnan(dot))[0])
        raise ValueError(
            f"{dots_path}: column 'dot' is missing or not numeric at query_id={id_str[q[i]]!r}, "
            f"candidate_id={id_str[c[i]]!r}"
        )

    # components
    kc, ku = _codes(raw["component"], dots_path)
    first_pos = pd.unique(kc)
    seen_names = [str(x) for x in ku[first_pos]]
    n_params = _read_n_params(Path(n_params_path)) if n_params_path is not None else None
    if n_params is not None:
        names = list(n_params)
        extra = [n for n in seen_names if n not in n_params]
        if extra:
            raise ValueError(f"{dots_path}: component {extra[0]!r} is not in {n_params_path}")
        seen_set = set(seen_names)
        missing = [n for n in names if n not in seen_set]
        if missing:
            raise ValueError(
                f"{n_params_path}: component {missing[0]!r} has no rows in {dots_path}"
            )
    else:
        names = seen_names
    try:
        components = _components_frame(names, n_params)
    except ValueError as err:
        raise ValueError(f"{n_params_path or dots_path}: {err}") from None
    k = len(names)
    name_index = pd.Index(names)
    comp = name_index.get_indexer(ku)[kc]

    pair = q * n_ids + c
    dup = pd.Series(pair * k + comp).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        extra_cols = [x for x in raw.columns if x not in (*DOTS_COLUMNS, "rank", "bm25")]
        hint = f"; filter by one of {extra_cols}?" if extra_cols else ""
        raise ValueError(
            f"{dots_path}: duplicate (query_id, candidate_id, component) row at "
            f"query_id={id_str[q[i]]!r}, candidate_id={id_str[c[i]]!r}, "
            f"component={names[comp[i]]!r}{hint}"
        )

    # candidates: one row per (query, candidate) in order of first appearance
    pair_codes, pair_uniques = pd.factorize(pair)
    first_rows = np.flatnonzero(~pd.Series(pair_codes).duplicated().to_numpy())
    cq, ccand = q[first_rows], c[first_rows]
    cand = pd.DataFrame({"query_id": _obj(id_str[cq]), "candidate_id": _obj(id_str[ccand])})
    for col in ("rank", "bm25"):
        if col not in raw.columns:
            continue
        vals = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        first = vals[first_rows][pair_codes]
        same = (vals == first) | (np.isnan(vals) & np.isnan(first))
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            raise ValueError(
                f"{dots_path}: column {col!r} differs between rows of query_id={id_str[q[i]]!r}, "
                f"candidate_id={id_str[c[i]]!r}"
            )
        cand[col] = vals[first_rows]
    if "rank" in cand.columns:
        if np.isnan(cand["rank"].to_numpy()).any():
            raise ValueError(f"{dots_path}: column 'rank' has missing or non-numeric values")
        cand["rank"] = cand["rank"].astype(np.int64)
        rep = pd.Series(cq * (int(cand["rank"].max()) + 1) + cand["rank"].to_numpy()).duplicated()
        if rep.any():
            i = int(np.flatnonzero(rep.to_numpy())[0])
            raise ValueError(
                f"{dots_path}: column 'rank' repeats within query {id_str[cq[i]]!r} "
                f"(rank {int(cand['rank'].iloc[i])})"
            )
    else:
        cand["rank"] = pd.Series(cq).groupby(cq, sort=False).cumcount().to_numpy() + 1
    if "bm25" not in cand.columns:
        cand["bm25"] = np.nan
    cand = cand[["query_id", "candidate_id", "rank", "bm25"]]

    queries = pd.unique(cq)
    has_orig = np.zeros(n_ids, dtype=bool)
    has_orig[cq[cq == ccand]] = True
    if not has_orig[queries].all():
        bad = queries[~has_orig[queries]][0]
        raise ValueError(
            f"{dots_path}: query {id_str[bad]!r} has no row with candidate_id == query_id "
            "(its original is not among its candidates)"
        )
    per_pair = np.bincount(pair_codes, minlength=len(pair_uniques))
    if (per_pair != k).any():
        j = int(np.flatnonzero(per_pair != k)[0])
        raise ValueError(
            f"{dots_path}: query_id={id_str[cq[j]]!r}, candidate_id={id_str[ccand[j]]!r} has "
            f"{per_pair[j]} of {k} components in column 'component'"
        )

    # norms
    sc, su = _codes(nraw["split"], norms_path)
    bad_split = [x for x in su[np.unique(sc)] if x not in SPLITS]
    if bad_split:
        raise ValueError(
            f"{norms_path}: column 'split' has value {bad_split[0]!r} (expected query or train)"
        )
    split_is_train = (su == "train")[sc]
    nkc, nku = _codes(nraw["component"], norms_path)
    nk_map = name_index.get_indexer(nku)
    ncomp = nk_map[nkc]
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
            f"example_id={id_str[e[i]]!r}, component={names[ncomp[i]]!r}"
        )
    nkey = (split_is_train.astype(np.int64) * n_ids + e) * k + ncomp
    ndup = pd.Series(nkey).duplicated().to_numpy()
    if ndup.any():
        i = int(np.flatnonzero(ndup)[0])
        raise ValueError(
            f"{norms_path}: duplicate (split, example_id, component) row at "
            f"split={su[sc[i]]!r}, example_id={id_str[e[i]]!r}, component={names[ncomp[i]]!r}"
        )
    have = np.zeros((2, n_ids, k), dtype=bool)
    have[split_is_train.astype(np.int64), e, ncomp] = True
    for split_i, role, need in ((0, "query", queries), (1, "candidate", pd.unique(ccand))):
        gaps = ~have[split_i, need]
        if gaps.any():
            r, col = np.argwhere(gaps)[0]
            raise ValueError(
                f"{norms_path}: no 'sqnorm' for {role} {id_str[need[r]]!r} "
                f"(split {SPLITS[split_i]!r}) component {names[col]!r}"
            )
    norms = pd.DataFrame(
        {
            "method": _obj(np.full(len(sq), "exact", dtype=object)),
            "split": _obj(su[sc]),
            "example_id": _obj(id_str[e]),
            "component_idx": ncomp.astype(np.int64),
            "sqnorm": sq,
        }
    )
    dots = pd.DataFrame(
        {
            "method": _obj(np.full(len(dot), "exact", dtype=object)),
            "query_id": _obj(id_str[q]),
            "candidate_id": _obj(id_str[c]),
            "component_idx": comp.astype(np.int64),
            "dot": dot,
        }
    )
    return ImportedTables(components=components, candidates=cand, dots=dots, norms=norms)


# --------------------------------------------------------------------------------------------
# long frames -> arrays


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
    k = len(comps)
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
    coded = [_codes(col, what) for col, what in cols]
    ids = pd.Index(pd.unique(np.concatenate([u for _, u in coded])))
    id_str = np.asarray(ids, dtype=object)
    cq, cc, dq, dc, ne = (ids.get_indexer(u)[codes] for codes, u in coded)
    n_ids = len(ids)

    # candidates -> (query position, slot)
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
    pair_flat = qpos * b + slot

    # dots
    prow = pair_index.get_indexer(dq * n_ids + dc)
    if (prow < 0).any():
        i = int(np.flatnonzero(prow < 0)[0])
        raise ValueError(
            f"{dwhat}: query_id={id_str[dq[i]]!r}, candidate_id={id_str[dc[i]]!r} is not a "
            "pair in candidates"
        )
    dk = comp_index.get_indexer(np.asarray(dm["component_idx"], dtype=np.int64))
    if (dk < 0).any():
        raise ValueError(
            f"{dwhat}: component_idx {dm['component_idx'].to_numpy()[dk < 0][0]} "
            "is not in components"
        )
    flat = pair_flat[prow] * k + dk
    hits = np.bincount(flat, minlength=n * b * k).reshape(n, b, k)
    if (hits > 1).any():
        i, j, c = np.argwhere(hits > 1)[0]
        raise ValueError(
            f"{dwhat}: duplicate rows for query {id_str[query_g[i]]!r} candidate "
            f"{candidate_ids[i, j]!r} component {names[c]!r}"
        )
    missing = (hits == 0) & valid[:, :, None]
    if missing.any():
        i, j, c = np.argwhere(missing)[0]
        raise ValueError(
            f"{dwhat}: no dot product for query {id_str[query_g[i]]!r} candidate "
            f"{candidate_ids[i, j]!r} component {names[c]!r}"
        )
    dmat = np.zeros(n * b * k)
    dmat[flat] = dm["dot"].to_numpy(dtype=np.float64)
    dmat = dmat.reshape(n, b, k)

    # norms: queries by query position, candidates by position among distinct candidate ids
    sc, su = _codes(nm["split"], nwhat)
    split_i = np.select([su == "query", su == "train"], [0, 1], -1)[sc]
    nk = comp_index.get_indexer(np.asarray(nm["component_idx"], dtype=np.int64))
    sqnorm = nm["sqnorm"].to_numpy(dtype=np.float64)
    train_g = pd.unique(cc)
    tpos_of = np.full(n_ids, -1, dtype=np.int64)
    tpos_of[train_g] = np.arange(len(train_g))
    query_sq = np.full((n, k), np.nan)
    train_sq = np.full((len(train_g), k), np.nan)
    for which, pos_of, out in ((0, qpos_of, query_sq), (1, tpos_of, train_sq)):
        rows = pos_of[ne]
        sel = (split_i == which) & (rows >= 0) & (nk >= 0)
        out[rows[sel], nk[sel]] = sqnorm[sel]
    if np.isnan(query_sq).any():
        i, c = np.argwhere(np.isnan(query_sq))[0]
        raise ValueError(
            f"{nwhat}: no sqnorm for query {id_str[query_g[i]]!r} (split 'query') "
            f"component {names[c]!r}"
        )
    cand_sq = np.zeros((n, b, k))
    cand_sq[qpos, slot] = train_sq[tpos_of[cc]]
    if np.isnan(cand_sq).any():
        i, j, c = np.argwhere(np.isnan(cand_sq))[0]
        raise ValueError(
            f"{nwhat}: no sqnorm for candidate {candidate_ids[i, j]!r} (split 'train') "
            f"component {names[c]!r}"
        )

    return RunArrays(
        dots=dmat,
        query_sq=query_sq,
        cand_sq=cand_sq,
        target=target,
        valid=valid,
        bm25=bm25,
        query_ids=id_str[query_g],
        candidate_ids=candidate_ids,
        components=comps,
        method=method,
    )


def to_arrays(tables: ImportedTables, method: str = "exact") -> RunArrays:
    """RunArrays of imported tables (``arrays_from_frames`` on its frames)."""
    return arrays_from_frames(
        tables.components, tables.candidates, tables.dots, tables.norms, method=method
    )
