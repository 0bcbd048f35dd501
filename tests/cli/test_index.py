"""``compute --index`` and ``gradlens index`` end to end on a tiny Llama: every stored vector
against the projection (same seed) of plain autograd's gradient, the index's dots against the
dots table, the passes it costs, an index added to a published run, a training set indexed on
its own, export -> import bit for bit, and deletion with the run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from gradlens.cli import main
from gradlens.data.examples import load_examples, tokenize_all
from gradlens.engine.projection import Projector, component_seed
from gradlens.engine.reference import flat_component_grads
from gradlens.models.loading import discover_components, load_model
from gradlens.store.database import Store
from gradlens.store.index import index_methods, open_index, run_index_dir, work_index_dir

TRAIN = [
    ("t1", "How do I boil an egg?", "Put it in boiling water for eight minutes."),
    ("t2", "How do I fry an egg?", "Heat oil in a pan and crack the egg."),
    ("t3", "What is the capital of France?", "Paris."),
    ("t4", "What is the capital of Spain?", "Madrid."),
    ("t5", "Name a red fruit.", "A strawberry."),
    ("t6", "Name a yellow fruit.", "A banana."),
    ("t7", "Which planet is red?", "Mars."),
]
QUERIES = [
    ("t1", "How can I boil eggs?", "Boil them for eight minutes."),
    ("t3", "Which city is the capital of France?", "It is Paris."),
]
SEED = 3
PROJECT = "sjlt:0.2"
INDEX = "sjlt:0.2,sjlt:d16,exact:L0.q+L1.down"


def _write(path, rows):
    lines = [json.dumps({"id": i, "prompt": p, "response": r}) for i, p, r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("index-data")
    return _write(root / "train.jsonl", TRAIN), _write(root / "queries.jsonl", QUERIES)


def _compute(model_dir, data, db, *extra) -> str:
    argv = ["compute", "--model", str(model_dir), "--train", str(data[0]), "--queries"]
    argv += [str(data[1]), "--db", str(db), "--run", "k", "--candidates", "2", "--seed"]
    argv += [str(SEED), "--project", PROJECT, "--no-progress", *extra]
    return _main(argv)


def _main(argv) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue().strip()


def _field(line: str, name: str) -> int:
    return int(line.split(f"{name}=")[1].split()[0])


@pytest.fixture(scope="module")
def runs(tiny_model_dir, data, tmp_path_factory):
    """(db indexed in the same pass, its summary line, db without an index, its line)."""
    root = tmp_path_factory.mktemp("index-runs")
    indexed = _compute(tiny_model_dir, data, root / "a.duckdb", "--index", INDEX)
    plain = _compute(tiny_model_dir, data, root / "b.duckdb")
    return root / "a.duckdb", indexed, root / "b.duckdb", plain


@pytest.fixture(scope="module")
def reference(tiny_model_dir, data):
    """Plain autograd's flattened component gradients of every example, by (split, id)."""
    model, tok = load_model(str(tiny_model_dir))
    components = discover_components(model)
    out = {}
    for split, path in (("train", data[0]), ("query", data[1])):
        for t in tokenize_all(tok, load_examples(path)):
            out[(split, t.example.id)] = flat_component_grads(model, components, t)
    return components, out


def _close(got: np.ndarray, want: torch.Tensor, what: str) -> None:
    want = want.numpy()
    scale = float(np.abs(want).max()) + 1e-12
    assert float(np.abs(got - want).max()) <= 1e-4 * scale + 1e-7, what


def test_every_vector_is_the_projection_of_the_autograd_gradient(runs, reference):
    db = runs[0]
    components, grads = reference
    assert index_methods(db, "k") == sorted(INDEX.split(","))
    for method in INDEX.split(","):
        ix = open_index(db, "k", method)
        for split, ids in (("train", ix.train_ids), ("query", ix.query_ids)):
            for row, eid in enumerate(ids):
                flat = grads[(split, eid)]
                for c, got in zip(ix.info.components, ix.vectors(split, row)):
                    if method.startswith("exact"):
                        want = flat[c]
                    else:
                        d = ix.info.dims[ix.info.components.index(c)]
                        proj = Projector(components[c].n_params, d, "sjlt", component_seed(SEED, c))
                        want = proj.project(flat[c])
                    _close(got, want, f"{method} {split} {eid} {components[c].name}")
                sq = ix.sqnorms(split)[row]
                vecs = ix.vectors(split, row)
                np.testing.assert_allclose(sq, [np.dot(v.astype(np.float64), v) for v in vecs])
    exact = open_index(db, "k", "exact:L0.q+L1.down").info
    names = [components[c].name for c in exact.components]
    assert names == ["L0.q", "L1.down"] and exact.dims == tuple(
        components[c].n_params for c in exact.components
    )
    d16 = open_index(db, "k", "sjlt:d16").info
    assert d16.dims == tuple(min(16, c.n_params) for c in components)


def test_index_dots_equal_the_dots_table_and_cost_one_pass_per_non_candidate(runs):
    db, indexed, plain_db, plain = runs
    ix = open_index(db, "k", PROJECT)
    with Store(db, read_only=True) as s:
        run_id = s.resolve("k")["run_id"]
        dots = s.frame("dots", run_id, PROJECT)
        norms = s.frame("norms", run_id, PROJECT)
        cands = set(s.frame("candidates", run_id)["candidate_id"])
        examples = s.frame("examples", run_id)
    train_row = {eid: r for r, eid in enumerate(ix.train_ids)}
    query_row = {eid: r for r, eid in enumerate(ix.query_ids)}
    for r in dots.itertuples(index=False):
        q = ix.vectors("query", query_row[r.query_id])
        got = ix.row_dots(q, [r.component_idx], np.array([train_row[r.candidate_id]]))[0, 0]
        assert abs(got - r.dot) <= 1e-6 * abs(r.dot) + 1e-30, r
    for r in norms.itertuples(index=False):
        rows = train_row if r.split == "train" else query_row
        got = ix.sqnorms(r.split)[rows[r.example_id], r.component_idx]
        assert abs(got - r.sqnorm) <= 1e-6 * r.sqnorm, r
    non_candidates = len(TRAIN) - len(cands)
    assert non_candidates > 0
    assert _field(indexed, "passes") == _field(plain, "passes") + non_candidates
    assert indexed.endswith(f"index={INDEX} db={db}")
    assert sorted(examples.loc[examples["split"] == "train", "example_id"]) == [
        t[0] for t in TRAIN
    ]  # an indexed run shows every training example
    with Store(plain_db, read_only=True) as s:
        plain_dots = s.frame("dots", run_id)
    with Store(db, read_only=True) as s:
        same = s.frame("dots", run_id)
    keys = ["method", "query_id", "candidate_id", "component_idx"]
    pd.testing.assert_frame_equal(
        same.sort_values(keys, ignore_index=True),
        plain_dots.sort_values(keys, ignore_index=True),
        check_exact=False,
        rtol=1e-5,
        atol=1e-9,
    )  # --index changes no stored dot (and not the run id), beyond float32 round-off


def test_index_added_to_a_published_run(runs, tiny_model_dir, data, tmp_path):
    """A new --index on a complete run computes only the index (one pass per example), keeps
    the run's rows, and a rerun is a no-op."""
    db = tmp_path / "c.duckdb"
    _compute(tiny_model_dir, data, db)
    with Store(db, read_only=True) as s:
        before = s.frame("dots", s.resolve("k")["run_id"])
    line = _compute(tiny_model_dir, data, db, "--index", "sjlt:d16")
    assert "already complete; indexed 9 examples index=sjlt:d16 passes=9" in line
    with Store(db, read_only=True) as s:
        run_id = s.resolve("k")["run_id"]
        pd.testing.assert_frame_equal(s.frame("dots", run_id), before)
        assert len(s.frame("examples", run_id).query("split == 'train'")) == len(TRAIN)
    same_pass = open_index(runs[0], "k", "sjlt:d16")
    later = open_index(db, "k", "sjlt:d16")
    for split in ("train", "query"):
        for row in range(later.n_rows(split)):
            for a, b in zip(later.vectors(split, row), same_pass.vectors(split, row)):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max() + 1e-7)
    assert not work_index_dir(db, run_id).exists()
    again = _compute(tiny_model_dir, data, db, "--index", "sjlt:d16")
    assert "nothing to do" in again


def test_a_training_set_indexed_on_its_own(runs, tiny_model_dir, data, tmp_path, capsys):
    db = tmp_path / "i.duckdb"
    argv = ["index", "--model", str(tiny_model_dir), "--train", str(data[0]), "--db", str(db)]
    line = _main([*argv, "--run", "solo", "--index", "sjlt:d16", "--seed", str(SEED)])
    assert line.startswith(f"run=solo examples={len(TRAIN)} pairs=0 ")
    assert f"passes={len(TRAIN)} " in line
    ix = open_index(db, "solo", "sjlt:d16")
    assert (ix.info.n_train, ix.info.n_query) == (len(TRAIN), 0)
    same_pass = open_index(runs[0], "k", "sjlt:d16")
    assert list(ix.train_ids) == list(same_pass.train_ids)
    for row in range(len(TRAIN)):
        for a, b in zip(ix.vectors("train", row), same_pass.vectors("train", row)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max() + 1e-7)
    scores = ix.score(same_pass.vectors("query", 0))
    assert scores.top(1).rows[0] == list(ix.train_ids).index("t1")
    capsys.readouterr()
    assert main(["select", "--db", str(db), "--run", "solo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no queries" in err[0]


def test_export_import_round_trips_the_index_and_delete_removes_it(runs, tmp_path):
    db = runs[0]
    out = tmp_path / "export"
    _main(["export", "--db", str(db), "--run", "k", "--out", str(out)])
    restored = tmp_path / "r.duckdb"
    line = _main(["import", "--db", str(restored), "--from", str(out)])
    assert "index_files=" in line and "index_rows=9" in line
    with Store(db, read_only=True) as s:
        run_id = s.resolve("k")["run_id"]
        want = {t: s.frame(t, run_id) for t in ("index_files", "index_rows")}
    with Store(restored, read_only=True) as s:
        for table, frame in want.items():
            pd.testing.assert_frame_equal(s.frame(table, run_id), frame, check_exact=True)
    src, dst = run_index_dir(db, run_id), run_index_dir(restored, run_id)
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(dst) for p in dst.rglob("*") if p.is_file())
    for f in files:
        assert (src / f).read_bytes() == (dst / f).read_bytes(), f
    assert "nothing to do" in _main(["import", "--db", str(restored), "--from", str(out)])
    corrupted = out / "index" / "sjlt_d16" / "train" / "c0000.npy"
    flipped = bytearray(corrupted.read_bytes())
    flipped[-1] ^= 1
    corrupted.write_bytes(bytes(flipped))
    assert main(["import", "--db", str(restored), "--from", str(out)]) == 2  # refused
    for f in files:  # and the restored index is left as it was
        assert (src / f).read_bytes() == (dst / f).read_bytes(), f
    with Store(restored) as s:
        s.delete_run(run_id)
        assert not s.has_rows("index_files", run_id) and not s.has_rows("index_rows", run_id)
    assert not dst.exists()


def test_training_rows_are_shared_with_an_indexed_run_of_the_same_gradients(
    runs, tiny_model_dir, data, tmp_path
):
    """A second query set over the same training set, model, loss and seed copies the training
    rows of the first run's index instead of passing them again."""
    import shutil

    from gradlens.store.index import index_root

    db = tmp_path / "a.duckdb"
    shutil.copy(runs[0], db)
    shutil.copytree(index_root(runs[0]), index_root(db))
    other = _write(tmp_path / "other.jsonl", QUERIES[:1])
    argv = ["compute", "--model", str(tiny_model_dir), "--train", str(data[0]), "--queries"]
    argv += [str(other), "--db", str(db), "--run", "o", "--candidates", "2", "--seed", str(SEED)]
    line = _main([*argv, "--index", "sjlt:d16", "--no-progress"])
    assert _field(line, "passes") == 1 + 2  # the query and its candidates, for their dots
    first, second = open_index(db, "k", "sjlt:d16"), open_index(db, "o", "sjlt:d16")
    assert second.info.n_query == 1 and list(second.train_ids) == list(first.train_ids)
    for row in range(len(TRAIN)):
        for a, b in zip(second.vectors("train", row), first.vectors("train", row)):
            assert np.array_equal(a, b)
    np.testing.assert_array_equal(second.sqnorms("train"), first.sqnorms("train"))
