"""The run index's files (gradlens.store.index) against plain numpy: the writer's resume and
float16 storage, the streaming scorer against brute-force cosines, top-k and contributions;
``--index`` specs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradlens.engine.projection import IndexSpec, parse_index, parse_index_spec
from gradlens.errors import GradLensError
from gradlens.models.loading import Component
from gradlens.store.database import Store
from gradlens.store.index import (
    IndexWriter,
    description_frames,
    ensure_index_tables,
    index_methods,
    method_slug,
    open_index,
    publish_folder,
    read_description,
    run_index_dir,
    work_index_dir,
)

COMPONENTS = (0, 2, 5)
DIMS = (4, 8, 3)
ROWS = {"train": 57, "query": 3}


def _vectors(seed: int) -> dict[str, list[list[np.ndarray]]]:
    """Random float32 vectors per split, row and component; one train row all zeros."""
    rng = np.random.default_rng(seed)
    out = {
        split: [[(rng.standard_normal(d) * 10.0 ** rng.integers(-6, 3)).astype(np.float32)
                 for d in DIMS] for _ in range(n)]
        for split, n in ROWS.items()
    }  # fmt: skip
    out["train"][7] = [np.zeros(d, dtype=np.float32) for d in DIMS]
    return out


def _index(tmp_path, dtype: str, vectors) -> tuple:
    """A published index of run r1 (method 'm' + dtype) in a real database."""
    db = tmp_path / "x.duckdb"
    method = f"sjlt:d8{'h' if dtype == 'float16' else ''}"
    with Store(db) as s:
        s.con.execute("INSERT INTO runs VALUES ('r1', 'one', now(), 'complete', '{}', NULL)")
    folder = work_index_dir(db, "r1") / method_slug(method)
    w = IndexWriter(folder, method, COMPONENTS, DIMS, ROWS, dtype)
    for split, rows in vectors.items():
        for r, v in enumerate(rows):
            w.write(split, r, v)
    description = w.finalize()
    w.close()
    publish_folder(folder, db, "r1", method)
    ids = {"train": [f"t{i}" for i in range(ROWS["train"])], "query": ["q0", "q1", "q2"]}
    files, rows = description_frames("r1", description, ids)
    with Store(db) as s:
        ensure_index_tables(s.con)
        s.insert("index_files", "r1", files.drop(columns="run_id"))
        s.insert("index_rows", "r1", rows.drop(columns="run_id"))
    return db, method


def _brute_cosines(vectors, query, subset_positions):
    t = [np.stack([row[k] for row in vectors["train"]]).astype(np.float64) for k in range(3)]
    q = [np.asarray(v, dtype=np.float64) for v in query]
    dots = sum(t[k] @ q[k] for k in subset_positions)
    t_sq = sum((t[k] ** 2).sum(1) for k in subset_positions)
    q_sq = sum(q[k] @ q[k] for k in subset_positions)
    return dots / (np.sqrt(q_sq * t_sq) + 1e-12), np.stack([t[k] @ q[k] for k in range(3)], 1)


def test_float32_index_stores_the_vectors_and_scores_like_brute_force(tmp_path):
    vectors = _vectors(0)
    db, method = _index(tmp_path, "float32", vectors)
    assert index_methods(db, "one") == [method]
    ix = open_index(db, "one", method)
    assert (ix.info.components, ix.info.dims) == (COMPONENTS, DIMS)
    assert (ix.info.n_train, ix.info.n_query, ix.info.dtype) == (57, 3, "float32")
    assert list(ix.train_ids[:2]) == ["t0", "t1"] and list(ix.query_ids) == ["q0", "q1", "q2"]
    for split in ROWS:
        for r in (0, ROWS[split] - 1):
            for got, want in zip(ix.vectors(split, r), vectors[split][r]):
                assert np.array_equal(got, want)
    want_sq = [[float(np.dot(v.astype(np.float64), v)) for v in row] for row in vectors["train"]]
    np.testing.assert_allclose(ix.sqnorms("train"), want_sq, rtol=1e-12)
    query = vectors["query"][1]
    for subset, positions in ((None, (0, 1, 2)), ([5, 0], (2, 0)), ([2], (1,))):
        scores = ix.score(query, subset, chunk_bytes=320)  # 10-row chunks, the last one short
        want, per_component = _brute_cosines(vectors, query, positions)
        # float32 products of d <= 8 terms: cosine error <= 8 * 2^-24
        np.testing.assert_allclose(scores.cosine, want, rtol=0, atol=5e-7)
        assert scores.cosine[7] == 0.0  # a zero gradient scores 0, not NaN
        top = scores.top(5)
        order = np.lexsort((np.arange(len(want)), -want))[:5]
        assert list(top.rows) == list(order)
        np.testing.assert_allclose(top.cosines, want[order], rtol=1e-12)  # re-scored in float64
        np.testing.assert_allclose(top.contributions.sum(1), top.cosines, rtol=1e-12)
        denominator = np.sqrt(scores.query_sqnorm * scores.train_sqnorm[order]) + 1e-12
        np.testing.assert_allclose(
            top.contributions * denominator[:, None],
            per_component[order][:, list(positions)],
            rtol=1e-12,
        )
        best = int(order[0])
        assert scores.rank_of(best) == 1
        assert scores.rank_of(int(order[3])) == 1 + int(np.sum(want > want[order[3]]))
    dots = ix.all_dots(subset=[2, 5])
    assert dots.shape == (3, 57, 2)
    np.testing.assert_allclose(dots[1], _brute_cosines(vectors, query, (0,))[1][:, 1:], rtol=1e-6)


def test_float16_index_keeps_unit_vectors_within_its_cosine_error(tmp_path):
    """Vectors spanning nine decades store without underflow (each divided by its norm); the
    cosines differ from float32's by far less than 1e-3."""
    vectors = _vectors(1)
    db, method = _index(tmp_path, "float16", vectors)
    ix = open_index(db, "one", method)
    raw = np.load(run_index_dir(db, "r1") / method_slug(method) / "train" / "c0002.npy")
    assert raw.dtype == np.float16
    norms = np.linalg.norm(raw.astype(np.float64), axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-3)
    for got, want in zip(ix.vectors("train", 3), vectors["train"][3]):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3 * np.abs(want).max())
    for q in range(3):
        want, _ = _brute_cosines(vectors, vectors["query"][q], (0, 1, 2))
        got = ix.score(vectors["query"][q], chunk_bytes=256).cosine  # 16 rows
        assert np.abs(got - want).max() < 1e-3


def test_writer_resumes_at_unwritten_rows_and_restarts_on_another_shape(tmp_path):
    folder = tmp_path / "w"
    rows = {"train": 5}
    w = IndexWriter(folder, "m", (0, 1), (2, 3), rows)
    w.write("train", 1, [np.ones(2), np.arange(3)])
    w.write("train", 3, [np.ones(2), np.arange(3)])
    w.close()
    again = IndexWriter(folder, "m", (0, 1), (2, 3), rows)
    assert again.missing("train") == [0, 2, 4] and not again.complete
    again.close()
    with pytest.raises(ValueError, match="rows are missing"):
        IndexWriter(folder, "m", (0, 1), (2, 3), rows).finalize()
    other = IndexWriter(folder, "m", (0, 1), (2, 4), rows)  # another shape: starts over
    assert other.missing("train") == [0, 1, 2, 3, 4]
    for r in range(5):
        other.write("train", r, [np.ones(2), np.arange(4)])
    description = other.finalize()
    assert read_description(folder) == json.loads(json.dumps(description))
    assert not (folder / "train" / "written.npy").exists()
    assert IndexWriter(folder, "m", (0, 1), (2, 4), rows).complete


def test_open_index_says_what_is_missing(tmp_path):
    vectors = _vectors(2)
    db, method = _index(tmp_path, "float32", vectors)
    with pytest.raises(GradLensError, match=r"has no exact:L0\.q index .*\(indexed: sjlt:d8\)"):
        open_index(db, "one", "exact:L0.q")
    (run_index_dir(db, "r1") / method_slug(method) / "train" / "c0005.npy").unlink()
    with pytest.raises(GradLensError, match="c0005.npy: index file missing"):
        open_index(db, "one", method)
    with pytest.raises(GradLensError, match="does not hold component 3"):
        (run_index_dir(db, "r1") / method_slug(method) / "train" / "c0005.npy").touch()
        from gradlens.store.index import RunIndex  # noqa: F401 - the type the error comes from

        ix = open_index(db, "one", method)
        ix.score(vectors["query"][0], [3])


def _components(sizes):
    return [
        Component(f"L0.{k}", 0, "q", (f"w{k}",), f"m{k}", p, (p // 4, 4))
        for k, p in zip("abcd", sizes)
    ]


def test_index_specs():
    specs = parse_index_spec("sjlt:0.01, gaussian:d64 ,exact:L0.c+L0.a:float16,kron:d8:float32")
    assert [s.label for s in specs] == ["sjlt:0.01", "gaussian:d64", "exact:L0.c+L0.a", "kron:d8"]
    assert specs[2] == IndexSpec(
        "exact:L0.c+L0.a", "exact", names=("L0.c", "L0.a"), dtype="float16"
    )
    comps = _components([400, 40, 8, 4000])
    assert specs[0].dims(comps) == [4, 1, 1, 40]  # max(1, round(f P_c)), as --project
    assert specs[1].dims(comps) == [64, 40, 8, 64]  # min(N, P_c)
    assert specs[2].index_components(comps) == [0, 2] and specs[2].dims(comps) == [400, 8]
    with pytest.raises(ValueError, match="no component 'L9.q'"):
        IndexSpec("exact:L9.q", "exact", names=("L9.q",)).index_components(comps)
    assert parse_index(None) == []
    for bad, message in [
        ("sjlt", "bad index entry"),
        ("foo:d4", "unknown index method 'foo'"),
        ("sjlt:d0", "bad size 'd0'"),
        ("sjlt:dx", "bad size"),
        ("sjlt:2", "must be in"),
        ("exact:L0.a+", "bad component list"),
        ("sjlt:d4,sjlt:d4:float16", "listed twice"),
    ]:
        with pytest.raises(GradLensError, match=f"^--index: .*{message}"):
            parse_index(bad)
