"""The gradient index of a run: per-component vectors of EVERY training example and every query,
kept by the compute job (``--index``) for full-set retrieval (docs/design.md, "The index").

Layout (this module is the one place that knows it). The index of run R in database ``X`` lives
in ``X.index/<R>/``, one folder per method (``method_slug``), one per split inside it:

    X.index/<R>/<method_slug>/<split>/c<component_idx:04d>.npy   [n_rows, d_c] float32|float16
    X.index/<R>/<method_slug>/<split>/sqnorms.npy                [n_rows, K_method] float64
    X.index/<R>/<method_slug>/description.json                   what the database records

Split ``train`` holds all N training examples in training-file order, ``query`` every query in
query-file order. ``sqnorms[r, k]`` is the squared norm of row r's vector of the k-th component
the method holds (the projected vector's, or the exact gradient's for ``exact:``), so a subset
cosine is rebuilt from these scalars and one dot per component, as for the candidates. float32
files hold the vectors as computed; float16 files hold each vector divided by its norm (unit
vectors: no overflow or underflow whatever the gradient's scale), the norm coming back from
``sqnorms``.

The database describes it (tables created by their first writer; the schema version stays 1):
``index_files(run_id, method, split, component_idx, dim, dtype, file, digest)`` (``file``
relative to ``X.index/<R>/``, ``digest`` = ``gradlens.files.file_digest``) and
``index_rows(run_id, split, row, example_id)``.

A job builds a method's index in ``X.work/<R>.index/<method_slug>/`` with an ``IndexWriter``
(preallocated memory-mapped files and a written-rows mask, so a stopped job resumes at the rows
not yet written), moves the finished folder into place (``publish_folder``) and records it in
the database in the same transaction as the run (or, for a run already published, in its own).

Reading: ``index_methods``, ``open_index`` -> ``RunIndex`` (memory-mapped, read-only), whose
``score`` streams row chunks of each component file, so memory does not grow with N beyond the
[N] result.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from gradlens.errors import GradLensError
from gradlens.faults import fault_point
from gradlens.files import file_digest, replace_folder, write_atomically
from gradlens.store import score_kernel
from gradlens.store.connect import read_store

__all__ = [
    "DTYPES",
    "INDEX_DDL",
    "INDEX_TABLES",
    "SPLITS",
    "FullSetScores",
    "IndexInfo",
    "IndexWriter",
    "RunIndex",
    "TopK",
    "ensure_index_tables",
    "export_index",
    "exported_index",
    "has_index_tables",
    "index_methods",
    "index_digest",
    "index_root",
    "method_slug",
    "open_folder",
    "open_index",
    "place_index",
    "publish_folder",
    "read_description",
    "remove_run_index",
    "restore_index_rows",
    "run_index_dir",
    "stage_index",
    "work_index_dir",
]

#: The tables describing indexes (created by their first writer, see ``ensure_index_tables``).
INDEX_DDL = """
CREATE TABLE IF NOT EXISTS index_files (
    run_id VARCHAR, method VARCHAR, split VARCHAR, component_idx INTEGER, dim INTEGER,
    dtype VARCHAR, file VARCHAR, digest VARCHAR);
CREATE TABLE IF NOT EXISTS index_rows (run_id VARCHAR, split VARCHAR, "row" INTEGER,
    example_id VARCHAR);
"""
INDEX_TABLES = ("index_files", "index_rows")
#: The index's splits, in the order they are written.
SPLITS = ("train", "query")
#: Storage types of the vector files.
DTYPES = ("float32", "float16")
#: Bytes of one component file multiplied per step of ``RunIndex.score`` (a chunk's rows).
CHUNK_BYTES = 8 << 20
#: Added to every cosine's denominator (as for candidates, docs/design.md).
EPS = 1e-12
_DESCRIPTION = "description.json"
_WRITTEN = "written.npy"


# -- layout ----------------------------------------------------------------------------------


def index_root(db: str | Path) -> Path:
    """``X.index/`` beside the database ``X``."""
    db = Path(db)
    return db.with_name(db.name + ".index")


def run_index_dir(db: str | Path, run_id: str) -> Path:
    """``X.index/<run_id>/``: the published index folders of one run."""
    return index_root(db) / run_id


def work_index_dir(db: str | Path, run_id: str) -> Path:
    """``X.work/<run_id>.index/``: where a job builds a run's index before publishing it."""
    db = Path(db)
    return db.with_name(db.name + ".work") / f"{run_id}.index"


def method_slug(method: str) -> str:
    """A method label as a folder name: ``sjlt:d64`` -> ``sjlt_d64``."""
    return re.sub(r"[^A-Za-z0-9.+-]", "_", method)


def _component_file(split: str, component_idx: int) -> str:
    return f"{split}/c{component_idx:04d}.npy"


def ensure_index_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``index_files`` and ``index_rows`` in ``con``'s database if missing."""
    con.execute(INDEX_DDL)


def has_index_tables(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con``'s database has the index tables (their first writer creates them)."""
    rows = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name IN ('index_files', 'index_rows')"
    ).fetchone()
    return rows[0] == 2


# -- writing ---------------------------------------------------------------------------------


class IndexWriter:
    """One method's index under construction in ``folder`` (``work_index_dir(...)/<slug>``).

    components: the component_idx the method holds; dims: d_c for each; rows: {split: n_rows};
    dtype: one of ``DTYPES``. Files are preallocated (memory-mapped ``.npy``); ``write`` fills
    one row of every component file and its squared norms, then marks the row in the split's
    written-rows mask (``written.npy``), so a job killed at any point resumes at exactly the rows
    not marked (a row being written when it died is written again). An existing folder of the
    same shape is resumed; one of another shape is started over."""

    def __init__(
        self,
        folder: str | Path,
        method: str,
        components: Sequence[int],
        dims: Sequence[int],
        rows: dict[str, int],
        dtype: str = "float32",
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"index dtype must be one of {DTYPES}, got {dtype!r}")
        if len(components) != len(dims):
            raise ValueError("components and dims differ in length")
        self.folder = Path(folder)
        self.method, self.dtype = method, dtype
        self.components, self.dims = tuple(int(c) for c in components), tuple(int(d) for d in dims)
        self.rows = {s: int(rows[s]) for s in SPLITS if s in rows}
        self._shape = {
            "method": method,
            "dtype": dtype,
            "components": list(self.components),
            "dims": list(self.dims),
            "rows": self.rows,
        }
        if self._stored_shape() != self._shape:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._allocate()
        self._open()

    def _stored_shape(self) -> dict | None:
        try:
            return json.loads((self.folder / "shape.json").read_text())
        except (OSError, ValueError):
            return None

    def _allocate(self) -> None:
        open_memmap = np.lib.format.open_memmap
        for split, n in self.rows.items():
            (self.folder / split).mkdir(parents=True, exist_ok=True)
            for c, d in zip(self.components, self.dims):
                open_memmap(self.folder / _component_file(split, c), "w+", self.dtype, (n, d))
            k = len(self.components)
            open_memmap(self.folder / split / "sqnorms.npy", "w+", np.float64, (n, k))
            open_memmap(self.folder / split / _WRITTEN, "w+", np.bool_, (n,))
        write_atomically(self.folder / "shape.json", [json.dumps(self._shape)])

    def _open(self) -> None:
        self._files = {
            split: [np.load(self.folder / _component_file(split, c), mmap_mode="r+")
                    for c in self.components]
            for split in self.rows
        }  # fmt: skip
        self._sq = {s: np.load(self.folder / s / "sqnorms.npy", mmap_mode="r+") for s in self.rows}
        self._written = {}
        for split in self.rows:
            path = self.folder / split / _WRITTEN
            if path.exists():
                self._written[split] = np.load(path, mmap_mode="r+")
            else:  # finalized: every row is written
                self._written[split] = np.ones(self.rows[split], dtype=bool)

    def missing(self, split: str) -> list[int]:
        """Rows of ``split`` not yet written, ascending."""
        return np.flatnonzero(~self._written[split]).tolist()

    def is_written(self, split: str, row: int) -> bool:
        return bool(self._written[split][row])

    @property
    def complete(self) -> bool:
        return all(not len(self.missing(s)) for s in self.rows)

    def write(self, split: str, row: int, vectors: Sequence[np.ndarray]) -> None:
        """Row ``row`` of ``split``: one float32 vector [d_c] per component (in ``components``
        order). Its squared norms are taken in float64 from the float32 values; a float16
        index stores each vector divided by its norm."""
        self._store(split, row, [np.asarray(v, dtype=np.float32).reshape(1, -1) for v in vectors])
        fault_point("index.write")
        self._written[split][row] = True

    def write_block(self, split: str, start: int, blocks: Sequence[np.ndarray]) -> None:
        """Rows ``start ..`` of ``split`` at once: one float32 [rows, d_c] block per component
        (as ``write`` row by row; for bulk writers such as benchmarks/index_scale.py)."""
        n = self._store(split, start, [np.asarray(b, dtype=np.float32) for b in blocks])
        self._written[split][start : start + n] = True

    def _store(self, split: str, start: int, blocks: Sequence[np.ndarray]) -> int:
        if len(blocks) != len(self.components):
            raise ValueError(f"{len(blocks)} vectors for {len(self.components)} components")
        n = blocks[0].shape[0]
        sq = np.empty((n, len(blocks)), dtype=np.float64)
        for k, (v, out) in enumerate(zip(blocks, self._files[split])):
            if v.shape != (n, out.shape[1]):
                raise ValueError(f"component {self.components[k]}: {v.shape} != {out.shape[1]}")
            v64 = v.astype(np.float64)
            sq[:, k] = np.einsum("ij,ij->i", v64, v64)
            if self.dtype == "float16":
                norm = np.sqrt(sq[:, k]).astype(np.float32)
                v = v / np.where(norm > 0, norm, np.float32(1))[:, None]
            out[start : start + n] = v
        self._sq[split][start : start + n] = sq
        return n

    def finalize(self, digests: bool = True) -> dict:
        """Flush every file, drop the masks, record each file's digest (``digests=False``:
        none, for throwaway folders such as a benchmark's) in ``description.json`` (written
        last: its presence means the folder is complete) and return that description.
        ValueError while rows are missing."""
        if not self.complete:
            raise ValueError(f"index {self.method}: rows are missing")
        for split in self.rows:
            for m in self._files[split]:
                m.flush()
            self._sq[split].flush()
        self._files, self._sq = {}, {}
        files = []
        for split in self.rows:
            (self.folder / split / _WRITTEN).unlink(missing_ok=True)
            for c, d in zip(self.components, self.dims):
                name = _component_file(split, c)
                digest = file_digest(self.folder / name) if digests else ""
                files.append([split, c, d, self.dtype, name, digest])
            name = f"{split}/sqnorms.npy"
            files.append([split, -1, len(self.components), "float64", name, ""])
        description = dict(self._shape, files=files)
        write_atomically(self.folder / _DESCRIPTION, [json.dumps(description)])
        return description

    def close(self) -> None:
        self._files, self._sq, self._written = {}, {}, {}


def read_description(folder: str | Path) -> dict | None:
    """A finished method folder's ``description.json`` (None when absent: not finished)."""
    try:
        return json.loads((Path(folder) / _DESCRIPTION).read_text())
    except (OSError, ValueError):
        return None


def publish_folder(work_folder: Path, db: str | Path, run_id: str, method: str) -> Path:
    """Move a finished method folder into ``X.index/<run_id>/`` (replacing an older copy);
    returns its new place."""
    dest = run_index_dir(db, run_id) / method_slug(method)
    replace_folder(work_folder, dest)
    return dest


def description_frames(
    run_id: str, description: dict, row_ids: dict[str, Sequence[str]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``index_files`` and ``index_rows`` rows of one method (``row_ids``: example ids of
    each split in row order). The sqnorms files are rows with component_idx -1 and digest of
    their own."""
    slug = method_slug(description["method"])
    files = pd.DataFrame(
        description["files"],
        columns=["split", "component_idx", "dim", "dtype", "file", "digest"],
    )
    files["file"] = slug + "/" + files["file"]
    files.insert(0, "method", description["method"])
    files["component_idx"] = files["component_idx"].astype(np.int32)
    files["dim"] = files["dim"].astype(np.int32)
    rows = pd.concat(
        [
            pd.DataFrame({"split": s, "row": np.arange(len(ids), dtype=np.int32),
                          "example_id": list(ids)})
            for s, ids in row_ids.items()
        ],
        ignore_index=True,
    )  # fmt: skip
    return files.assign(run_id=run_id), rows.assign(run_id=run_id)


def record_method(store, run_id: str, description: dict, row_ids: dict[str, Sequence[str]]):
    """Describe one published method folder in ``store`` (an open ``Store``, inside the
    caller's transaction): its ``index_files`` rows, replacing earlier ones of that method, and
    the run's ``index_rows`` (``row_ids``: example ids of each split in row order)."""
    ensure_index_tables(store.con)
    files, rows = description_frames(run_id, description, row_ids)
    method = description["method"]
    store.con.execute("DELETE FROM index_files WHERE run_id = ? AND method = ?", [run_id, method])
    store.insert("index_files", run_id, files.drop(columns="run_id"))
    store.con.execute("DELETE FROM index_rows WHERE run_id = ?", [run_id])
    store.insert("index_rows", run_id, rows.drop(columns="run_id"))


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexInfo:
    """One method's index of a run: ``components`` (component_idx held, ascending), ``dims``
    (d_c of each), ``dtype`` of the vector files, ``n_train`` (N) and ``n_query`` rows."""

    run_id: str
    method: str
    components: tuple[int, ...]
    dims: tuple[int, ...]
    dtype: str
    n_train: int
    n_query: int


@dataclass(frozen=True)
class TopK:
    """The k best training rows of a ``FullSetScores``, best first (ties: lower row first):
    ``rows`` int[k], ``cosines`` float64[k], ``contributions`` float64[k, |S|] (component c's
    dot over the subset cosine's denominator, in subset order; each row sums to its cosine)."""

    rows: np.ndarray
    cosines: np.ndarray
    contributions: np.ndarray


@dataclass(frozen=True, eq=False)
class FullSetScores:
    """One query's cosine with every training example for one subset: ``cosine`` float64[N];
    ``subset``: the component_idx it sums over; ``query_sqnorm`` Σ_S |q_c|² and ``train_sqnorm``
    float64[N] Σ_S |t_c|² (the denominators). ``top(k)`` adds per-component contributions."""

    cosine: np.ndarray
    subset: tuple[int, ...]
    query_sqnorm: float
    train_sqnorm: np.ndarray
    _index: RunIndex
    _query: tuple[np.ndarray, ...]
    _positions: tuple[int, ...]

    def rank_of(self, row: int) -> int:
        """1 + the number of training rows with a strictly greater cosine than ``row``'s."""
        return 1 + int(np.count_nonzero(self.cosine > self.cosine[row]))

    def top(self, k: int) -> TopK:
        """The k best rows by ``cosine``, re-scored in float64 from their stored vectors (the
        streamed cosines multiply in float32): ``TopK.cosines`` is the sum of the contributions,
        the order is by that value (ties: lower row first)."""
        n = len(self.cosine)
        k = min(k, n)
        if k < n:
            part = np.argpartition(-self.cosine, k - 1)[:k]
            cand = np.flatnonzero(self.cosine >= self.cosine[part].min())  # ties at the cut
        else:
            cand = np.arange(n)
        cand = cand[np.lexsort((cand, -self.cosine[cand]))][:k]
        denom = np.sqrt(self.query_sqnorm * self.train_sqnorm[cand]) + EPS
        contributions = self._index.row_dots(self._query, self._positions, cand) / denom[:, None]
        cosines = contributions.sum(1)
        order = np.lexsort((cand, -cosines))
        return TopK(cand[order], cosines[order], contributions[order])


class RunIndex:
    """One method's published index of a run, memory-mapped read-only (``open_index``).

    ``info``; ``train_ids`` / ``query_ids``: example ids of each split's rows (object arrays).
    Vectors passed to and returned by it are float32, one per component of ``info.components``
    (a subset is given as component_idx values, all of them held by the method)."""

    def __init__(self, folder: Path, info: IndexInfo, ids: dict[str, np.ndarray]) -> None:
        self.folder, self.info = folder, info
        self.train_ids = ids.get("train", np.array([], dtype=object))
        self.query_ids = ids.get("query", np.array([], dtype=object))
        self._maps: dict[tuple[str, int], np.ndarray] = {}

    def _file(self, split: str, position: int) -> np.ndarray:
        """A component file memory-mapped whole (kept: for reading a few rows)."""
        key = (split, position)
        if key not in self._maps:
            c = self.info.components[position]
            self._maps[key] = np.load(self.folder / _component_file(split, c), mmap_mode="r")
        return self._maps[key]

    def _mapped_rows(self, name: str, rows: slice) -> np.ndarray:
        """Rows ``rows`` of the ``.npy`` file ``name`` (relative to the folder), mapped for
        this chunk only: the pages a streamed score touches leave the process's memory with
        the chunk, so its resident size stays that of one chunk whatever N is."""
        whole = self._file_header(name)
        offset, dtype, cols = whole
        n = rows.stop - rows.start
        if n <= 0:
            return np.empty((0, cols), dtype=dtype)
        start = offset + rows.start * cols * dtype.itemsize
        # copy-on-write: a writable view (for torch), pages shared with the page cache
        return np.memmap(self.folder / name, dtype, "c", start, (n, cols))

    def _file_header(self, name: str) -> tuple[int, np.dtype, int]:
        """(data offset, dtype, columns) of a 2-D ``.npy`` file (read once)."""
        key = ("header", name)
        if key not in self._maps:
            m = np.load(self.folder / name, mmap_mode="r")
            self._maps[key] = (m.offset, m.dtype, m.shape[1])
            del m
        return self._maps[key]

    def sqnorms(self, split: str) -> np.ndarray:
        """float64 [rows, K] (memory-mapped): |v_c|² of each row's vector of each component."""
        return np.load(self.folder / split / "sqnorms.npy", mmap_mode="r")

    def n_rows(self, split: str) -> int:
        return self.info.n_train if split == "train" else self.info.n_query

    def positions(self, subset: Sequence[int] | None) -> tuple[int, ...]:
        """Positions in ``info.components`` of the component_idx in ``subset`` (None: all);
        GradLensError naming a component the index does not hold."""
        if subset is None:
            return tuple(range(len(self.info.components)))
        where = {c: k for k, c in enumerate(self.info.components)}
        missing = [c for c in subset if c not in where]
        if missing:
            raise GradLensError(
                f"the {self.info.method} index of run {self.info.run_id} does not hold "
                f"component {missing[0]}"
            )
        return tuple(where[c] for c in subset)

    def block(self, split: str, position: int, rows: np.ndarray | slice) -> np.ndarray:
        """float32 [len(rows), d_c]: the vectors of the component at ``position`` (in
        ``info.components``) of some rows (float16 scaled back by their norm)."""
        return self._rows(split, position, rows)

    def _rows(self, split: str, position: int, rows: np.ndarray | slice) -> np.ndarray:
        v = np.asarray(self._file(split, position)[rows], dtype=np.float32)
        if self.info.dtype == "float16":
            scale = np.sqrt(self.sqnorms(split)[rows, position]).astype(np.float32)
            v = v * scale[:, None]
        return v

    def vectors(self, split: str, row: int) -> list[np.ndarray]:
        """One example's vectors, float32 [d_c] per component of ``info.components``."""
        return [self._rows(split, k, slice(row, row + 1))[0] for k in range(len(self.info.dims))]

    def matrix(self, split: str, component_idx: int) -> np.ndarray:
        """Every row's vector of one component, float32 [rows, d_c] (in memory)."""
        return self._rows(split, self.positions([component_idx])[0], slice(None))

    def row_dots(
        self, query: Sequence[np.ndarray], positions: Sequence[int], rows: np.ndarray
    ) -> np.ndarray:
        """float64 [len(rows), len(positions)]: <q_c, t_c> for a few training rows."""
        out = np.empty((len(rows), len(positions)), dtype=np.float64)
        for j, k in enumerate(positions):
            t = self._rows("train", k, np.asarray(rows))
            out[:, j] = t.astype(np.float64) @ np.asarray(query[k], dtype=np.float64)
        return out

    def _chunks(self, chunk_rows: int) -> Iterator[slice]:
        for lo in range(0, self.info.n_train, chunk_rows):
            yield slice(lo, min(self.info.n_train, lo + chunk_rows))

    def score(
        self,
        query_vectors: Sequence[np.ndarray],
        subset: Sequence[int] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> FullSetScores:
        """The query's cosine with every training example over ``subset`` (component_idx; None:
        every component the method holds): Σ_S <q_c, t_c> / (sqrt(Σ_S |q_c|² Σ_S |t_c|²) + ε),
        streamed over row chunks of about ``chunk_bytes`` of each memory-mapped component file
        (products in float32 by torch, which reads a skinny matrix several times faster than
        numpy's matmul; sums over components in float64). A float16 index is read by the numba
        kernel of ``score_kernel`` (all components of a block of rows at a time), else its
        chunks are converted into one reused float32 buffer."""
        positions = self.positions(subset)
        query = tuple(np.asarray(v, dtype=np.float32).reshape(-1) for v in query_vectors)
        if len(query) != len(self.info.components):
            raise ValueError(f"{len(query)} query vectors for {len(self.info.components)}")
        q_sq = float(sum(np.dot(query[k].astype(np.float64), query[k]) for k in positions))
        n, pos = self.info.n_train, list(positions)
        dots, t_sq = np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.float64)
        names = [_component_file("train", self.info.components[k]) for k in pos]
        width = max(self.info.dims[k] for k in pos) * np.dtype(self.info.dtype).itemsize
        chunk = max(1, chunk_bytes // width)
        if self.info.dtype == "float16" and score_kernel.available():
            self._half_dots(names, pos, [query[k] for k in pos], chunk, dots, t_sq)
        else:
            self._torch_dots(names, pos, [query[k] for k in pos], chunk, dots, t_sq)
        cosine = dots / (np.sqrt(q_sq * t_sq) + EPS)
        subset_idx = tuple(self.info.components[k] for k in positions)
        return FullSetScores(cosine, subset_idx, q_sq, t_sq, self, query, positions)

    def _torch_dots(
        self,
        names: Sequence[str],
        pos: Sequence[int],
        query: Sequence[np.ndarray],
        chunk: int,
        dots: np.ndarray,
        t_sq: np.ndarray,
    ) -> None:
        """Fill ``dots`` and ``t_sq`` [n_train] by torch, ``chunk`` rows of one file at a time
        (the subset's files ``names``, ``pos`` in ``info.components``)."""
        import torch

        everything = list(pos) == list(range(len(self.info.components)))
        scaled = self.info.dtype == "float16"
        qs = [torch.tensor(q) for q in query]  # a copy: the vectors may be read-only maps
        buffer = torch.empty(chunk * max(self.info.dims[k] for k in pos)) if scaled else None
        for rows in self._chunks(chunk):
            block_sq = self._mapped_rows("train/sqnorms.npy", rows)
            block_sq = np.asarray(block_sq if everything else block_sq[:, pos])
            t_sq[rows] = block_sq.sum(1)
            acc = dots[rows]
            for j in range(len(pos)):
                t = torch.from_numpy(self._mapped_rows(names[j], rows))
                if scaled:
                    t = buffer[: t.numel()].view(t.shape).copy_(t)
                part = torch.mv(t, qs[j]).numpy()
                acc += np.sqrt(block_sq[:, j]) * part if scaled else part

    def _half_dots(
        self,
        names: Sequence[str],
        positions: Sequence[int],
        query: Sequence[np.ndarray],
        chunk: int,
        dots: np.ndarray,
        t_sq: np.ndarray,
    ) -> None:
        """Fill ``dots`` and ``t_sq`` [n_train] of a float16 index by the numba kernel
        (``score_kernel.half_dots``), ``chunk`` rows of every file in ``names`` mapped at a
        time (the subset's files, ``positions`` in ``info.components``)."""
        for rows in self._chunks(chunk):
            sq = self._mapped_rows("train/sqnorms.npy", rows)
            blocks = [self._mapped_rows(name, rows) for name in names]
            score_kernel.half_dots(blocks, query, sq, positions, dots[rows], t_sq[rows])
            del blocks, sq

    def all_dots(
        self, query_rows: Sequence[int] | None = None, subset: Sequence[int] | None = None
    ) -> np.ndarray:
        """float64 [Q, N, |S|]: <q_c, t_c> of stored queries (``query_rows``; None: all) with
        every training example, per component of ``subset`` (in memory: for small runs, e.g.
        greedy selection by full-set recall)."""
        rows = np.arange(self.info.n_query) if query_rows is None else np.asarray(query_rows)
        positions = self.positions(subset)
        out = np.empty((len(rows), self.info.n_train, len(positions)), dtype=np.float64)
        for j, k in enumerate(positions):
            q = self._rows("query", k, rows).astype(np.float64)
            t = self._rows("train", k, slice(None)).astype(np.float64)
            out[:, :, j] = q @ t.T
        return out


def open_folder(folder: str | Path, run_id: str = "") -> RunIndex:
    """The finished method folder ``folder`` read without a database (its
    ``description.json``); example ids are the row numbers as text (benchmarks, tests)."""
    folder = Path(folder)
    d = read_description(folder)
    if d is None:
        raise GradLensError(f"{folder}: not a finished index folder (no {_DESCRIPTION})")
    rows = d["rows"]
    info = IndexInfo(
        run_id,
        d["method"],
        tuple(d["components"]),
        tuple(d["dims"]),
        d["dtype"],
        rows.get("train", 0),
        rows.get("query", 0),
    )
    ids = {s: np.array([str(r) for r in range(n)], dtype=object) for s, n in rows.items()}
    return RunIndex(folder, info, ids)


def recorded_methods(con, run_id: str) -> list[str]:
    """The methods ``con``'s database describes for the index of ``run_id``, sorted."""
    if not has_index_tables(con):
        return []
    rows = con.execute(
        "SELECT DISTINCT method FROM index_files WHERE run_id = ? ORDER BY method", [run_id]
    ).fetchall()
    return [r[0] for r in rows]


def index_methods(db: str | Path, run: str) -> list[str]:
    """The methods indexed for ``run`` (name or id) in ``db``, sorted; [] when none."""
    with read_store(db) as store:
        return recorded_methods(store.con, store.resolve(run)["run_id"])


def open_index(db: str | Path, run: str, method: str) -> RunIndex:
    """The published ``method`` index of ``run`` (name or id), memory-mapped read-only.
    GradLensError (one line) when the run has no such index or its files are missing."""
    with read_store(db) as store:
        run_row = store.resolve(run)
        run_id = run_row["run_id"]
        files = pd.DataFrame()
        rows = pd.DataFrame()
        if has_index_tables(store.con):
            files = store.con.execute(
                "SELECT * FROM index_files WHERE run_id = ? AND method = ? "
                "ORDER BY split, component_idx",
                [run_id, method],
            ).df()
            rows = store.con.execute(
                'SELECT split, "row", example_id FROM index_rows WHERE run_id = ? '
                'ORDER BY split, "row"',
                [run_id],
            ).df()
    if files.empty:
        have = index_methods(db, run_id)
        hint = f" (indexed: {', '.join(have)})" if have else " (it has no index)"
        raise GradLensError(f"run '{run_row['name']}' has no {method} index in {db}{hint}")
    folder = run_index_dir(db, run_id) / method_slug(method)
    vec = files[(files["split"] == "train") & (files["component_idx"] >= 0)]
    for name in files["file"]:
        if not (run_index_dir(db, run_id) / name).exists():
            raise GradLensError(
                f"{run_index_dir(db, run_id) / name}: index file missing (restore the run or "
                "compute its index again)"
            )
    ids = {s: g["example_id"].to_numpy(dtype=object) for s, g in rows.groupby("split")}
    info = IndexInfo(
        run_id=run_id,
        method=method,
        components=tuple(int(c) for c in vec["component_idx"]),
        dims=tuple(int(d) for d in vec["dim"]),
        dtype=str(vec["dtype"].iloc[0]),
        n_train=len(ids.get("train", ())),
        n_query=len(ids.get("query", ())),
    )
    return RunIndex(folder, info, ids)


# -- export and restore ----------------------------------------------------------------------

#: The folder of an export (``gradlens export``) that carries the run's index.
EXPORT_FOLDER = "index"


def remove_run_index(db: str | Path, run_id: str) -> None:
    """Delete the run's index folder (with its run: ``Store.delete_run``)."""
    shutil.rmtree(run_index_dir(db, run_id), ignore_errors=True)


def export_index(con: duckdb.DuckDBPyConnection, db: str | Path, run_id: str, out: Path) -> list:
    """Write the run's index into ``out/index/``: its ``index_files`` and ``index_rows`` rows as
    Parquet beside the method folders, copied as they are. [] (and no folder) without one."""
    import pyarrow.parquet as pq

    target = out / EXPORT_FOLDER
    shutil.rmtree(target, ignore_errors=True)
    if not has_index_tables(con):
        return []
    methods = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT method FROM index_files WHERE run_id = ? ORDER BY method", [run_id]
        ).fetchall()
    ]
    if not methods:
        return []
    for method in methods:
        shutil.copytree(
            run_index_dir(db, run_id) / method_slug(method), target / method_slug(method)
        )
    paths = []
    for table in INDEX_TABLES:
        rows = con.sql(
            f"SELECT * FROM {table} WHERE run_id = ? ORDER BY rowid", params=[run_id]
        ).to_arrow_table()
        paths.append(target / f"{table}.parquet")
        pq.write_table(rows, paths[-1])
    return paths


def exported_index(folder: Path) -> Path | None:
    """The ``index/`` folder of an export, or None when the export carries no index."""
    target = folder / EXPORT_FOLDER
    return target if (target / "index_files.parquet").exists() else None


def _exported_files(con: duckdb.DuckDBPyConnection, target: Path, run_id: str) -> pd.DataFrame:
    """The export's ``index_files`` rows, checked: the run's own, every file present with its
    digest. GradLensError naming the file otherwise."""
    path = target / "index_files.parquet"
    try:
        rows = con.execute("SELECT * FROM read_parquet(?)", [str(path)]).df()
    except duckdb.Error as exc:
        raise GradLensError(f"{path}: cannot read as Parquet: {str(exc).splitlines()[0]}") from None
    want = {"run_id", "method", "split", "component_idx", "dim", "dtype", "file", "digest"}
    if set(rows.columns) != want or (rows["run_id"] != run_id).any():
        raise GradLensError(f"{path}: not the index_files of run {run_id}")
    for r in rows.itertuples(index=False):
        f = target / r.file
        if not f.is_file():
            raise GradLensError(f"{f}: index file not found (listed in {path})")
        if r.digest and file_digest(f) != r.digest:
            raise GradLensError(f"{f}: its bytes differ from the digest {path} records")
    return rows


def index_digest(target: Path) -> str:
    """blake2b-128 over the export index's files (relative names, sorted, and contents)."""
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(p for p in target.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(target)).encode() + b"\0" + file_digest(f).encode())
    return h.hexdigest()


def stage_index(con: duckdb.DuckDBPyConnection, target: Path, db: str | Path, run_id: str) -> Path:
    """Check the export's index (``_exported_files``) and copy its method folders into a
    staging folder beside ``X.index/<run_id>/``; returns it (move it with ``place_index``)."""
    rows = _exported_files(con, target, run_id)
    staging = index_root(db) / f".{run_id}.restoring"
    shutil.rmtree(staging, ignore_errors=True)
    for slug in sorted({f.split("/")[0] for f in rows["file"]}):
        shutil.copytree(target / slug, staging / slug)
    return staging


def place_index(staging: Path, db: str | Path, run_id: str) -> None:
    """Move a staged index into ``X.index/<run_id>/`` (replacing the run's old one)."""
    replace_folder(staging, run_index_dir(db, run_id))


def restore_index_rows(store, target: Path, run_id: str) -> dict[str, int]:
    """Insert the export's ``index_files`` and ``index_rows`` (inside the caller's
    transaction); rows inserted per table."""
    ensure_index_tables(store.con)
    out = {}
    for table in INDEX_TABLES:
        path = target / f"{table}.parquet"
        out[table] = store.con.execute(
            f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?) WHERE run_id = ?",
            [str(path), run_id],
        ).fetchone()[0]
    return out
