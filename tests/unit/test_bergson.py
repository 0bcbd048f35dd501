"""bergson gradient stores (``gradlens.store.bergson``): stores written in bergson 2.5.1's layout
with numpy (info.json, gradients.bin, data.hf, processor_config.yaml), imported dots against a
brute-force computation from the same arrays, the projected method's name, the module list of
``export --modules`` through the import again, one-line errors; and, where bergson is installed,
stores bergson itself wrote, and bergson's own scores over the exported modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradlens.errors import GradLensError
from gradlens.runs.read import load_arrays
from gradlens.runs.services import export_modules, import_bergson
from gradlens.store.database import Store

#: Modules of a tiny two-block Llama as bergson names them (inside ``model.base_model``), and
#: their (out, in) shapes.
MODULES = {
    "layers.0.self_attn.q_proj": (4, 3),
    "layers.0.mlp.up_proj": (5, 3),
    "layers.1.self_attn.v_proj": (2, 3),
    "layers.1.mlp.down_proj": (3, 5),
    "layers.1.mlp.gate_proj": (5, 3),
}
TRAIN = [
    ("a", "how do I bake bread at home", "mix flour water yeast"),
    ("b", "how do I bake a cake", "use eggs and sugar"),
    ("c", "what is the capital of France", "Paris"),
    ("d", "what is the capital of Spain", "Madrid"),
    ("e", "name a prime number", "seven"),
    ("f", "write a haiku about rain", "drops on the window"),
]
QUERIES = [
    ("c", "which city is the capital of France", "it is Paris"),
    ("a", "how can I bake bread myself", "flour, water and yeast"),
    ("e", "give me a prime number", "seven is prime"),
]


def write_store(
    folder: Path,
    rows: list[tuple[str, str, str]],
    grads: dict[str, np.ndarray],
    dtype: str = "float32",
    projection_dim: int = 0,
) -> Path:
    """A store as ``bergson build`` writes it: ``grads`` {module: [n, size]} in column order."""
    folder.mkdir(parents=True)
    import datasets

    sizes = {m: int(g.shape[1]) for m, g in grads.items()}
    flat = np.concatenate(list(grads.values()), axis=1)
    if dtype == "bfloat16":  # numpy has none: the top half of each float32, as torch stores it
        flat = (flat.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    else:
        flat = flat.astype(dtype)
    mm = np.memmap(folder / "gradients.bin", dtype=flat.dtype, mode="w+", shape=flat.shape)
    mm[:] = flat
    mm.flush()
    info = {
        "attribute_tokens": False,
        "num_items": len(rows),
        "num_grads": len(rows),
        "grad_sizes": sizes,
        "base_dtype": dtype if dtype == "bfloat16" else np.dtype(dtype).name,
    }
    (folder / "info.json").write_text(json.dumps(info, indent=2))
    (folder / "processor_config.yaml").write_text(
        f"projection_dim: {projection_dim or 'null'}\nprojection_target: per_module\n"
        "include_bias: false\n"
    )
    ids, prompts, responses = (list(col) for col in zip(*rows, strict=True))
    data = {"id": ids, "prompt": prompts, "response": responses, "length": [9] * len(rows)}
    datasets.Dataset.from_dict(data).save_to_disk(str(folder / "data.hf"))
    return folder


def random_grads(n: int, seed: int, modules=MODULES, projection_dim: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    size = {m: projection_dim**2 or out * inp for m, (out, inp) in modules.items()}
    return {m: rng.standard_normal((n, s)) for m, s in size.items()}


def stores(tmp_path: Path, dtype="float32", projection_dim=0, modules=MODULES, tag=""):
    g_train = random_grads(len(TRAIN), 1, modules, projection_dim)
    g_query = random_grads(len(QUERIES), 2, modules, projection_dim)
    train = write_store(tmp_path / f"train{tag}", TRAIN, g_train, dtype, projection_dim)
    queries = write_store(tmp_path / f"queries{tag}", QUERIES, g_query, dtype, projection_dim)
    return train, queries, g_train, g_query


def as_stored(values: np.ndarray, dtype: str) -> np.ndarray:
    """The values a store of ``dtype`` holds (bfloat16: float32 with the low 16 bits cut)."""
    if dtype == "bfloat16":
        return (values.astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    return values.astype(dtype)


def brute_force(a: np.ndarray, b: np.ndarray) -> float:
    return float(sum(float(x) * float(y) for x, y in zip(a, b, strict=True)))


@pytest.mark.parametrize(
    ("dtype", "candidates"), [("float32", 3), ("float16", None), ("bfloat16", 3)]
)
def test_import_dots_equal_brute_force(tmp_path, dtype, candidates):
    train, queries, g_train, g_query = stores(tmp_path, dtype)
    db = str(tmp_path / "x.duckdb")
    summary = import_bergson(db, "berg", str(train), str(queries), candidates)
    b = candidates or len(TRAIN)
    assert summary.shape == (len(QUERIES), b, len(MODULES))
    arrays = load_arrays(db, "berg", "exact")
    assert arrays.names == ["L0.q", "L0.up", "L1.v", "L1.down", "L1.gate"]
    row = {ex[0]: i for i, ex in enumerate(TRAIN)}
    qrow = {ex[0]: i for i, ex in enumerate(QUERIES)}
    checked = 0
    for n, qid in enumerate(arrays.query_ids):
        assert arrays.candidate_ids[n, arrays.target[n]] == qid  # the original is a candidate
        for slot in np.flatnonzero(arrays.valid[n]):
            cand = arrays.candidate_ids[n, slot]
            for k, m in enumerate(MODULES):
                q = as_stored(g_query[m][qrow[qid]], dtype)
                t = as_stored(g_train[m][row[cand]], dtype)
                assert arrays.dots[n, slot, k] == pytest.approx(brute_force(q, t), rel=1e-12)
                assert arrays.cand_sq[n, slot, k] == pytest.approx(brute_force(t, t), rel=1e-12)
                checked += 1
        for k, m in enumerate(MODULES):
            q = as_stored(g_query[m][qrow[qid]], dtype)
            assert arrays.query_sq[n, k] == pytest.approx(brute_force(q, q), rel=1e-12)
    assert checked == len(QUERIES) * b * len(MODULES)
    with Store(db, read_only=True) as s:
        run = s.resolve("berg")
        assert json.loads(run["config"])["candidates"] == candidates
        texts = s.frame("examples", run["run_id"])
    assert set(texts["prompt"]) >= {p for _, p, _ in TRAIN}
    again = import_bergson(db, "berg", str(train), str(queries), candidates)
    assert again.already


def test_projected_store_is_its_own_method(tmp_path):
    train, queries, *_ = stores(tmp_path, projection_dim=2)
    db = str(tmp_path / "x.duckdb")
    import_bergson(db, "proj", str(train), str(queries), 2)
    with Store(db, read_only=True) as s:
        run_id = s.resolve("proj")["run_id"]
        assert s.methods(run_id) == ["bergson:p2"]
        n_params = s.frame("components", run_id)["n_params"]
    assert n_params.isna().all()  # a projection's size is not the matrix's
    assert load_arrays(db, "proj", "bergson:p2").shape == (3, 2, len(MODULES))


def test_export_modules_round_trip(tmp_path):
    train, queries, g_train, g_query = stores(tmp_path)
    db = str(tmp_path / "x.duckdb")
    import_bergson(db, "full", str(train), str(queries), 3)
    chosen = export_modules(db, "full", "L1.down,L0.q", None)
    assert chosen == ["layers.1.mlp.down_proj", "layers.0.self_attn.q_proj"]
    greedy = export_modules(db, "full", None, 2)
    assert len(greedy) == 2 and set(greedy) <= set(MODULES)
    # a store built with only the exported modules imports as exactly those components
    sub = {m: MODULES[m] for m in chosen}
    write_store(tmp_path / "t2", TRAIN, {m: g_train[m] for m in chosen})
    write_store(tmp_path / "q2", QUERIES, {m: g_query[m] for m in chosen})
    import_bergson(db, "sub", str(tmp_path / "t2"), str(tmp_path / "q2"), 3)
    part, full = load_arrays(db, "sub"), load_arrays(db, "full")
    assert part.names == ["L1.down", "L0.q"]
    assert export_modules(db, "sub", "L1.down,L0.q", None) == list(sub)
    idx = [full.names.index(n) for n in part.names]
    np.testing.assert_array_equal(part.dots, full.dots[:, :, idx])


def test_missing_info_json(tmp_path):
    train, queries, *_ = stores(tmp_path)
    (train / "info.json").unlink()
    with pytest.raises(GradLensError, match=r"train/info\.json: not found"):
        import_bergson(str(tmp_path / "x.duckdb"), "r", str(train), str(queries))
    assert not (tmp_path / "x.duckdb").exists()


def test_module_without_component(tmp_path):
    odd = {**MODULES, "vision_tower.patch_proj": (2, 2)}
    train, queries, *_ = stores(tmp_path, modules=odd)
    with pytest.raises(GradLensError, match="'vision_tower.patch_proj' has no GradLens"):
        import_bergson(str(tmp_path / "x.duckdb"), "r", str(train), str(queries))


def test_mismatched_modules(tmp_path):
    train, _, _, g_query = stores(tmp_path)
    fewer = {m: g for m, g in g_query.items() if m != "layers.1.mlp.gate_proj"}
    queries = write_store(tmp_path / "q_fewer", QUERIES, fewer)
    with pytest.raises(
        GradLensError, match=r"module 'layers.1.mlp.gate_proj' is not in .*q_fewer/info\.json"
    ):
        import_bergson(str(tmp_path / "x.duckdb"), "r", str(train), str(queries))


def test_store_without_text_columns(tmp_path):
    import datasets

    train, queries, *_ = stores(tmp_path)
    import shutil

    shutil.rmtree(train / "data.hf")
    datasets.Dataset.from_dict({"length": [9] * len(TRAIN)}).save_to_disk(str(train / "data.hf"))
    with pytest.raises(GradLensError, match="--drop_columns False"):
        import_bergson(str(tmp_path / "x.duckdb"), "r", str(train), str(queries))


def test_export_refuses_unknown_and_embedding_components(tmp_path):
    train, queries, *_ = stores(tmp_path)
    db = str(tmp_path / "x.duckdb")
    import_bergson(db, "full", str(train), str(queries), 3)
    with pytest.raises(GradLensError, match="no component 'L9.q'"):
        export_modules(db, "full", "L9.q", None)
    with pytest.raises(GradLensError, match="the run has 5 components"):
        export_modules(db, "full", None, 6)


def test_module_names_of_a_computed_run():
    """A run GradLens computed names parameters; bergson names modules inside the base model."""
    import pandas as pd

    from gradlens.store.bergson import module_names

    params = ["model.embed_tokens.weight", "model.layers.3.mlp.gate_proj.weight", "lm_head.weight"]
    params += ["transformer.h.0.attn.c_attn.weight"]
    frame = pd.DataFrame(
        {
            "component": ["embed", "L3.gate", "lm_head", "L0.qkv"],
            "kind": ["embed", "gate", "lm_head", "qkv"],
            "param_name": params,
        }
    )
    assert module_names(frame, ["L3.gate", "L0.qkv"]) == [
        "layers.3.mlp.gate_proj",
        "h.0.attn.c_attn",
    ]
    for name in ("embed", "lm_head"):
        with pytest.raises(GradLensError, match="not collected by bergson"):
            module_names(frame, [name])


def _bergson_importable() -> bool:
    try:
        import bergson  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or its dependencies are not
        return False
    return True


def _bergson(command: str, out: Path, data: Path, model: Path, *more: str) -> Path:
    """``bergson COMMAND out`` on CPU over the JSONL ``data`` (dataset columns kept)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "bergson", command, str(out), "--model", str(model)]
    cmd += ["--dataset", str(data), "--prompt_column", "prompt"]
    cmd += ["--completion_column", "response", "--token_batch_size", "64", *more]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=out.parent)
    if done.returncode != 0:
        pytest.fail(f"bergson {command} failed: {done.stderr[-3000:]}")
    return out


def _bergson_store(tmp_path: Path, name: str, rows, model: Path, projection: int) -> Path:
    """``bergson build`` into ``tmp_path/name`` (its data in ``tmp_path/name.jsonl``)."""
    import datasets

    ids, prompts, responses = (list(c) for c in zip(*rows, strict=True))
    data = tmp_path / f"{name}.jsonl"
    datasets.Dataset.from_dict({"id": ids, "prompt": prompts, "response": responses}).to_json(
        str(data)
    )
    more = ["--drop_columns", "False", "--precision", "fp32", "--projection_dim", str(projection)]
    return _bergson("build", tmp_path / name, data, model, *more)


def _rows_of(store: Path) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """The store's gradients as float64 and each module's columns, read from its info.json."""
    info = json.loads((store / "info.json").read_text())
    bounds = np.cumsum([0, *info["grad_sizes"].values()])
    cols = {m: (bounds[i], bounds[i + 1]) for i, m in enumerate(info["grad_sizes"])}
    raw = np.fromfile(store / "gradients.bin", dtype=info["base_dtype"])
    return raw.astype(np.float64).reshape(info["num_grads"], -1), cols


@pytest.mark.skipif(not _bergson_importable(), reason="bergson is not installed")
@pytest.mark.parametrize(("projection", "method"), [(0, "exact"), (4, "bergson:p4")])
def test_store_written_by_bergson(tmp_path, tiny_model_dir, projection, method):
    train = _bergson_store(tmp_path, "train", TRAIN, tiny_model_dir, projection)
    queries = _bergson_store(tmp_path, "queries", QUERIES, tiny_model_dir, projection)
    db = str(tmp_path / "x.duckdb")
    import_bergson(db, "real", str(train), str(queries), 3)
    arrays = load_arrays(db, "real", method)
    (t_rows, cols), (q_rows, _) = _rows_of(train), _rows_of(queries)
    row = {ex[0]: i for i, ex in enumerate(TRAIN)}
    modules = list(arrays.components["param_name"])
    assert set(modules) == set(cols)
    for n, qid in enumerate(arrays.query_ids):
        qi = next(i for i, ex in enumerate(QUERIES) if ex[0] == qid)
        for slot in np.flatnonzero(arrays.valid[n]):
            ti = row[arrays.candidate_ids[n, slot]]
            want = [q_rows[qi, slice(*cols[m])] @ t_rows[ti, slice(*cols[m])] for m in modules]
            np.testing.assert_allclose(arrays.dots[n, slot], want, rtol=1e-10)
    if projection:
        return
    # the way back: bergson's own scores over the exported modules are the subset's dots
    chosen = export_modules(db, "real", None, 3)
    more = ["--query_path", str(queries), "--score_cfg.modules", *chosen]
    out = _bergson("score", tmp_path / "scores", tmp_path / "train.jsonl", tiny_model_dir, *more)
    info = json.loads((out / "info.json").read_text())
    scores = np.fromfile(out / "scores.bin", dtype=np.dtype(info["dtype"]))
    idx = [modules.index(m) for m in chosen]
    for n, qid in enumerate(arrays.query_ids):
        qi = next(i for i, ex in enumerate(QUERIES) if ex[0] == qid)
        for slot in np.flatnonzero(arrays.valid[n]):
            ti = row[arrays.candidate_ids[n, slot]]
            got = float(scores[ti][f"score_{qi}"])
            assert got == pytest.approx(arrays.dots[n, slot, idx].sum(), rel=1e-4, abs=1e-5)
