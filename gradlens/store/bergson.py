"""Gradient stores written by bergson (``gradlens import --bergson-train/--bergson-queries``).

A store is the folder ``bergson build`` writes (bergson 2.5.1: ``bergson/data.py``
``create_index`` / ``load_gradients``, ``bergson/builder.py``,
``bergson/collector/gradient_collectors.py``):

- ``info.json``: ``num_items``, ``num_grads`` (rows), ``grad_sizes`` ({module name: size}, in
  column order), ``base_dtype`` (older stores: a structured ``dtype`` with one field per
  module), ``attribute_tokens`` (per-token rows: refused here);
- ``gradients.bin``: a C-order ``[num_grads, sum(grad_sizes)]`` array of ``base_dtype``
  (``bfloat16`` read bit-exactly as float32), module ``m``'s gradient in its column range;
- ``data.hf``: the dataset (``save_to_disk``), row i being gradient row i; it keeps the
  dataset's own columns (ids, texts) only when built with ``--drop_columns False``;
- ``processor_config.yaml``: ``projection_dim`` (0 or null: unprojected; ``p``: every module
  projected to ``p × p``), ``projection_target``, ``include_bias``; ``config.yaml``: the build
  command (its ``preprocess_cfg``: ``hessian_path``, ``unit_normalize``).

Module names (bergson names the modules of ``model.base_model``: ``layers.3.mlp.gate_proj``)
map to components through ``gradlens.models.naming``. Dots and squared norms are float64 sums
over each module's columns; a projected store's vectors also become the run's index
(``write_index``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.data.candidates import bm25_candidates
from gradlens.data.examples import Example, check_queries, content_hash, load_examples
from gradlens.data.sources import Columns
from gradlens.errors import DataError, GradLensError, show
from gradlens.files import file_digest
from gradlens.models.naming import encoder_blocks_in, parse_name
from gradlens.store.importer import ImportedTables

__all__ = [
    "BergsonStore",
    "bergson_tables",
    "module_names",
    "read_bergson_store",
    "store_digest",
    "write_index",
]

#: Bytes of float64 rows handled at once (pairs of rows for dots).
_CHUNK_BYTES = 1 << 26
#: Component kinds bergson does not collect: it hooks the linear layers of ``model.base_model``.
_NOT_COLLECTED = ("embed", "pos_embed", "type_embed", "rel_bias", "lm_head")
#: The base-model prefixes of the supported families' parameter names (bergson names modules
#: inside ``model.base_model``: ``layers.3.mlp.up_proj``, ``h.0.attn.c_attn``).
_BASE_PREFIXES = ("model.", "transformer.", "gpt_neox.")


@dataclass(frozen=True, eq=False)
class BergsonStore:
    """One bergson store: ``grads`` [n, D] (memory-mapped, the store's dtype; ``bf16``: raw
    uint16 bits), ``modules`` (names, column order), ``columns`` (each module's [lo, hi)),
    ``examples`` (n, gradient row order), ``method`` (``exact`` or ``bergson:...``) and the
    ``settings`` the run's config records."""

    path: Path
    grads: np.ndarray
    bf16: bool
    modules: tuple[str, ...]
    columns: dict[str, tuple[int, int]]
    examples: list[Example]
    method: str
    settings: dict


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(
            f"{path}: not found (a bergson gradient store holds info.json and gradients.bin, "
            "as `bergson build` writes them)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _read_yaml(path: Path) -> dict | None:
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read YAML ({str(exc).splitlines()[0]})") from None
    return data if isinstance(data, dict) else None


def _dtype(info: dict, path: Path) -> tuple[np.dtype, bool]:
    """The scalar dtype of ``gradients.bin`` and whether it is bfloat16 (read as uint16)."""
    if "base_dtype" in info:
        name = str(info["base_dtype"])
    elif isinstance(info.get("dtype"), dict) and info["dtype"].get("formats"):
        name = str(info["dtype"]["formats"][0])  # older stores: one structured field a module
    else:
        raise DataError(f"{path}: missing field 'base_dtype'")
    if "bfloat16" in name:
        return np.dtype(np.uint16), True
    try:
        dtype = np.dtype(name).base
    except TypeError:
        raise DataError(f"{path}: field 'base_dtype' has unknown dtype {show(name)}") from None
    if dtype.kind != "f":
        raise DataError(f"{path}: field 'base_dtype' must be a float type, got {show(name)}")
    return dtype, False


def _sizes(info: dict, path: Path) -> dict[str, int]:
    for key in ("num_grads", "grad_sizes"):
        if key not in info:
            raise DataError(f"{path}: missing field {show(key)}")
    sizes = info["grad_sizes"]
    if not isinstance(sizes, dict) or not sizes:
        raise DataError(f"{path}: field 'grad_sizes' must be a non-empty object {{module: size}}")
    for name, size in sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise DataError(f"{path}: grad_sizes of {show(name)} must be a positive integer")
    if info.get("attribute_tokens"):
        raise DataError(
            f"{path}: a per-token store (attribute_tokens); build the store per example"
        )
    n = info["num_grads"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or info.get("num_items", n) != n:
        raise DataError(f"{path}: field 'num_grads' must equal num_items, a positive integer")
    return sizes


def _method(folder: Path, sizes: dict[str, int]) -> tuple[str, dict]:
    """``exact`` for plain gradients; ``bergson:p<dim>`` (projected), with ``+bias`` (bias
    columns appended) and ``+hessian`` (preconditioned) where those apply; ``bergson`` when the
    store has no processor_config.yaml (its projection cannot be told)."""
    proc = _read_yaml(folder / "processor_config.yaml")
    build = _read_yaml(folder / "config.yaml") or {}
    steps = build.get("steps") if isinstance(build.get("steps"), list) else []
    step = steps[0].get("build") if steps and isinstance(steps[0], dict) else {}
    prep = step.get("preprocess_cfg") if isinstance(step, dict) else {}
    prep = prep if isinstance(prep, dict) else {}
    if proc is None:
        return "bergson", {"processor_config": None}
    if proc.get("projection_target") == "global" or list(sizes) == ["gradients"]:
        raise DataError(
            f"{folder / 'info.json'}: a globally projected store (projection_target global) "
            "sums every module into one vector; build it with projection_target per_module"
        )
    dim = proc.get("projection_dim") or 0
    if not isinstance(dim, int) or dim < 0:
        raise DataError(f"{folder / 'processor_config.yaml'}: projection_dim must be an integer")
    parts = [f"p{dim}"] if dim else []
    parts += ["bias"] if proc.get("include_bias") else []
    parts += ["hessian"] if prep.get("hessian_path") else []
    settings = {
        "projection_dim": dim,
        "include_bias": bool(proc.get("include_bias")),
        "hessian_path": prep.get("hessian_path"),
        "unit_normalize": bool(prep.get("unit_normalize")),
    }
    return ("bergson:" + "+".join(parts) if parts else "exact"), settings


def _examples(folder: Path, columns: Columns, train: bool, n: int) -> list[Example]:
    data = folder / "data.hf"
    if not data.is_dir():
        raise DataError(f"{data}: not found (the store's dataset, which bergson build writes)")
    try:
        examples = load_examples(data, columns, row_ids=train)
    except DataError as exc:
        hint = (
            "; bergson keeps the dataset's columns only with --drop_columns False"
            if "missing column" in str(exc)
            else ""
        )
        raise DataError(f"{exc}{hint}") from None
    if len(examples) != n:
        raise DataError(f"{data}: {len(examples)} rows, but info.json says num_items {n}")
    return examples


def read_bergson_store(folder: str | Path, columns: Columns | None = None, train=True):
    """The store at ``folder`` (module docstring) as a BergsonStore; DataError (one line, naming
    the file and field) for anything missing or inconsistent."""
    folder = Path(folder)
    info_path = folder / "info.json"
    info = _read_json(info_path)
    sizes = _sizes(info, info_path)
    dtype, bf16 = _dtype(info, info_path)
    n, width = info["num_grads"], sum(sizes.values())
    bin_path = folder / "gradients.bin"
    if not bin_path.is_file():
        raise DataError(f"{bin_path}: not found")
    expected = n * width * dtype.itemsize
    if bin_path.stat().st_size != expected:
        raise DataError(
            f"{bin_path}: {bin_path.stat().st_size} bytes, but info.json's num_grads, grad_sizes "
            f"and dtype make {expected}"
        )
    method, settings = _method(folder, sizes)
    bounds = np.cumsum([0, *sizes.values()])
    return BergsonStore(
        path=folder,
        grads=np.memmap(bin_path, dtype=dtype, mode="r", shape=(n, width)),
        bf16=bf16,
        modules=tuple(sizes),
        columns={m: (int(bounds[i]), int(bounds[i + 1])) for i, m in enumerate(sizes)},
        examples=_examples(folder, columns or Columns(), train, n),
        method=method,
        settings=settings,
    )


def _rows(store: BergsonStore, rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Gradient rows ``rows`` as float64, columns in ``order`` (module after module)."""
    raw = np.asarray(store.grads[rows])[:, order]
    if store.bf16:  # bfloat16 is the top half of a float32
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float64)


def _size(store: BergsonStore, module: str) -> int:
    lo, hi = store.columns[module]
    return hi - lo


def _column_order(store: BergsonStore, modules: tuple[str, ...]) -> np.ndarray:
    return np.concatenate([np.arange(*store.columns[m]) for m in modules])


def _segment_sums(
    a: BergsonStore, ai: np.ndarray, b: BergsonStore, bi: np.ndarray, modules: tuple[str, ...]
) -> np.ndarray:
    """[len(ai), K]: per module, the dot of row ``ai[p]`` of ``a`` with row ``bi[p]`` of ``b``."""
    a_cols, b_cols = _column_order(a, modules), _column_order(b, modules)
    starts = np.cumsum([0] + [_size(a, m) for m in modules])[:-1]
    out = np.zeros((len(ai), len(modules)))
    step = max(1, _CHUNK_BYTES // (16 * len(a_cols)))
    for s in range(0, len(ai), step):
        prod = _rows(a, ai[s : s + step], a_cols) * _rows(b, bi[s : s + step], b_cols)
        out[s : s + step] = np.add.reduceat(prod, starts, axis=1)
    return out


def _components(train: BergsonStore, queries: BergsonStore) -> pd.DataFrame:
    """Components in the training store's module order; errors for a module with no component,
    two modules on one component, and modules or sizes the two stores do not share."""
    for x, y in ((train, queries), (queries, train)):
        extra = [m for m in x.modules if m not in y.columns]
        if extra:
            raise DataError(
                f"{x.path / 'info.json'}: module {show(extra[0])} is not in "
                f"{y.path / 'info.json'} (the two stores must hold the same modules)"
            )
    for m in train.modules:
        if _size(train, m) != _size(queries, m):
            raise DataError(
                f"{queries.path / 'info.json'}: module {show(m)} has another size than in "
                f"{train.path / 'info.json'}"
            )
    if train.method != queries.method:
        raise DataError(
            f"{queries.path}: built as {queries.method}, {train.path} as {train.method} (the "
            "two stores need the same projection settings)"
        )
    names = [m + ".weight" for m in train.modules]
    blocks = encoder_blocks_in(names)
    rows, seen = [], {}
    for module, name in zip(train.modules, names, strict=True):
        try:
            c = parse_name(name, blocks)
        except ValueError:
            raise DataError(
                f"{train.path / 'info.json'}: module {show(module)} has no GradLens component "
                "(gradlens/models/naming.py names linear layers such as model.layers.3.mlp.up_proj)"
            ) from None
        if c.component in seen:
            raise DataError(
                f"{train.path / 'info.json'}: modules {show(seen[c.component])} and "
                f"{show(module)} both map to component {show(c.component)}"
            )
        seen[c.component] = module
        size = _size(train, module) if train.method == "exact" else None
        rows.append((c.component, c.layer, c.kind, size))
    frame = pd.DataFrame(rows, columns=["component", "layer", "kind", "n_params"])
    frame.insert(0, "component_idx", np.arange(len(rows), dtype=np.int64))
    frame["layer"] = frame["layer"].astype("Int64")
    frame["n_params"] = frame["n_params"].astype("Int64")
    frame["param_name"] = pd.Series(train.modules, dtype=object)
    return frame


def _pairs(train: BergsonStore, queries: BergsonStore, candidates: int | None) -> pd.DataFrame:
    """query_id, candidate_id, rank, bm25: BM25's ``candidates`` per query, or every pair."""
    if candidates is not None:
        return bm25_candidates(train.examples, queries.examples, candidates)
    ids = [ex.id for ex in train.examples]
    return pd.DataFrame(
        {
            "query_id": np.repeat([q.id for q in queries.examples], len(ids)),
            "candidate_id": ids * len(queries.examples),
            "rank": np.tile(np.arange(1, len(ids) + 1), len(queries.examples)),
            "bm25": np.nan,
        }
    )


def _long(values: np.ndarray, keys: dict[str, np.ndarray], method: str, name: str):
    """A long frame: one row per (key row, component) of ``values`` [P, K]."""
    p, k = values.shape
    frame = pd.DataFrame({col: pd.Series(np.repeat(v, k), dtype=object) for col, v in keys.items()})
    frame.insert(0, "method", method)
    frame["component_idx"] = np.tile(np.arange(k, dtype=np.int64), p)
    frame[name] = values.reshape(-1)
    return frame


def bergson_tables(train: BergsonStore, queries: BergsonStore, candidates: int | None = 5):
    """ImportedTables of the two stores: dots for BM25's ``candidates`` pairs per query (the
    original always among them) or for every pair (``None``), squared norms of every example.
    The method is the stores' (``exact`` or ``bergson:...``)."""
    check_queries(train.examples, queries.examples, str(queries.path / "data.hf"))
    components = _components(train, queries)
    pairs = _pairs(train, queries, candidates)
    row_of = {ex.id: i for i, ex in enumerate(train.examples)}
    q_row = {ex.id: i for i, ex in enumerate(queries.examples)}
    qi = pairs["query_id"].map(q_row).to_numpy()
    ti = pairs["candidate_id"].map(row_of).to_numpy()
    modules, method = train.modules, train.method
    dots = _segment_sums(queries, qi, train, ti, modules)
    norms = []
    for split, store in (("query", queries), ("train", train)):
        rows = np.arange(len(store.examples))
        ids = np.array([ex.id for ex in store.examples], dtype=object)
        sq = _segment_sums(store, rows, store, rows, modules)
        keys = {"split": np.full(len(ids), split, dtype=object), "example_id": ids}
        norms.append(_long(sq, keys, method, "sqnorm"))
    keys = {c: pairs[c].to_numpy(dtype=object) for c in ("query_id", "candidate_id")}
    return ImportedTables(
        components=components,
        candidates=pairs,
        dots=_long(dots, keys, method, "dot"),
        norms=pd.concat(norms, ignore_index=True),
    )


def write_index(db: str | Path, store, run_id: str, train: BergsonStore, queries: BergsonStore):
    """The stores' vectors as the run's index (``gradlens.store.index``'s layout, method the
    stores' own): placed in ``X.index/<run_id>/`` and recorded through ``store`` (an open
    ``Store``, inside the caller's transaction), so stored queries rank against all N."""
    from gradlens.store.index import (
        IndexWriter,
        method_slug,
        publish_folder,
        record_method,
        work_index_dir,
    )

    modules, method = train.modules, train.method
    dims = [_size(train, m) for m in modules]
    folder = work_index_dir(db, run_id) / method_slug(method)
    splits = {"train": train, "query": queries}
    rows = {split: len(s.examples) for split, s in splits.items()}
    writer = IndexWriter(folder, method, range(len(modules)), dims, rows)
    step = max(1, _CHUNK_BYTES // (8 * sum(dims)))
    for split, s in splits.items():
        order = _column_order(s, modules)
        for start in range(0, rows[split], step):
            block = _rows(s, np.arange(start, min(rows[split], start + step)), order)
            writer.write_block(split, start, np.split(block, np.cumsum(dims)[:-1], axis=1))
    description = writer.finalize()
    writer.close()
    publish_folder(folder, db, run_id, method)
    if not any(folder.parent.iterdir()):
        folder.parent.rmdir()
    ids = {split: [ex.id for ex in s.examples] for split, s in splits.items()}
    record_method(store, run_id, description, ids)


def store_digest(store: BergsonStore) -> list[str]:
    """What identifies a store's numbers: its info.json, gradients.bin and examples."""
    return [
        file_digest(store.path / "info.json"),
        file_digest(store.path / "gradients.bin"),
        content_hash(store.examples),
        store.method,
    ]


def _module(param_name: str) -> str:
    """bergson's name of a component's module: an imported run keeps it as its ``param_name``;
    a computed run's parameter name loses ``.weight`` and its base-model prefix."""
    if not param_name.endswith(".weight"):
        return param_name
    name = param_name.removesuffix(".weight")
    prefix = next((p for p in _BASE_PREFIXES if name.startswith(p)), "")
    return name.removeprefix(prefix)


def module_names(components: pd.DataFrame, names: list[str]) -> list[str]:
    """The module names (as bergson names them) of the components ``names`` of a run's
    components frame, in the order given; GradLensError for an unknown component or one that
    bergson does not collect (embeddings, the output projection)."""
    by_name = components.set_index("component")
    modules = []
    for name in names:
        if name not in by_name.index:
            have = show(", ".join(by_name.index[:8]), 100)
            raise GradLensError(f"--subset: no component {show(name)} in the run (has {have})")
        row = by_name.loc[name]
        if row["kind"] in _NOT_COLLECTED:
            raise GradLensError(
                f"component {show(name)} is not collected by bergson (it hooks the linear layers "
                "of the base model, not embeddings or lm_head)"
            )
        modules.append(_module(str(row["param_name"])))
    return modules
