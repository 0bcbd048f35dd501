"""The run index a compute job keeps (``--index``, ``gradlens index``; layout and reader in
``gradlens.store.index``).

Every example the job passes through for the BM25 pairs gives its index vectors at no extra
pass: ``IndexExtractor`` takes them from the ``ExampleGrads`` the engine computed (projections
from ``ExampleGrads.proj``, computed with the run's seeds, shared with ``--project`` where the
method is the same; ``exact:`` components densified from the terms). Training examples no query
uses, and rows a stopped job left unwritten, get one pass each afterwards (``fill_missing``).
Rank 0 writes through ``IndexBuild``: one ``IndexWriter`` per method in the job's work folder,
then ``finalize`` (digests), ``move`` (into ``X.index/<run_id>/``) and ``record`` (the
``index_files`` / ``index_rows`` rows and the training examples, in the transaction that
publishes the run, or in one of its own for a run already published).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.data.examples import Tokenized
from gradlens.engine.capture import GradientEngine
from gradlens.engine.distributed import DistContext
from gradlens.engine.projection import IndexSpec
from gradlens.engine.terms import ExampleGrads
from gradlens.faults import fault_point
from gradlens.models.loading import Component
from gradlens.store.connect import read_store
from gradlens.store.database import Store
from gradlens.store.index import (
    SPLITS,
    IndexWriter,
    has_index_tables,
    method_slug,
    open_index,
    publish_folder,
    read_description,
    record_method,
    run_index_dir,
    work_index_dir,
)

__all__ = [
    "IndexBuild",
    "IndexExtractor",
    "IndexRow",
    "example_frame",
    "fill_index",
    "fill_missing",
    "index_todo",
]


@dataclass(frozen=True)
class IndexRow:
    """One example's index vectors: {method label: float32 [d_c] per indexed component}."""

    split: str
    example_id: str
    vectors: dict[str, list[np.ndarray]]


class IndexExtractor:
    """Takes the index vectors of computed examples (on whichever rank computed them).

    ``wanted``: {split: example ids still to write} (rank 0's ``IndexBuild.missing``, broadcast);
    each wanted example is extracted once per job, then forgotten."""

    def __init__(
        self,
        engine: GradientEngine,
        specs: Sequence[IndexSpec],
        components: Sequence[Component],
        wanted: dict[str, set[str]],
    ) -> None:
        self.engine, self.specs = engine, list(specs)
        self.held = {s.label: s.index_components(components) for s in self.specs}
        self.wanted = {split: set(ids) for split, ids in wanted.items()}
        self.index_only = [p.method for p in engine.index_projections]

    def __call__(self, split: str, grads: ExampleGrads) -> IndexRow | None:
        """The example's IndexRow if it is wanted (None otherwise); projections only the index
        keeps are dropped from ``grads`` either way (the cache does not carry them)."""
        row = None
        if grads.example_id in self.wanted.get(split, ()):
            self.wanted[split].discard(grads.example_id)
            row = IndexRow(split, grads.example_id, self.vectors(grads))
        for method in self.index_only:
            grads.drop_projection(method)
        return row

    def vectors(self, grads: ExampleGrads) -> dict[str, list[np.ndarray]]:
        """{label: float32 [d_c] per component the entry holds} of one computed example (the
        projections the engine made, or the named components' dense gradients)."""
        out = {}
        for spec in self.specs:
            if spec.method == "exact":
                out[spec.label] = [
                    self.engine.dense_gradient(grads, c).reshape(-1).cpu().numpy()
                    for c in self.held[spec.label]
                ]
            else:
                out[spec.label] = [p.float().cpu().numpy() for p in grads.proj[spec.label]]
        return out


class IndexBuild:
    """Rank 0's side of a run's index: per method, nothing to do (``recorded``: already in the
    database), a folder moved into place but not recorded, a finished work folder, or an
    ``IndexWriter`` still filling one. ``row_ids``: {split: example ids in row order}."""

    def __init__(
        self,
        db: str | Path,
        run_id: str,
        specs: Sequence[IndexSpec],
        components: Sequence[Component],
        row_ids: dict[str, Sequence[str]],
        recorded: Sequence[str] = (),
    ) -> None:
        self.db, self.run_id = db, run_id
        self.row_ids = {s: list(row_ids[s]) for s in SPLITS if row_ids.get(s)}
        self._row = {s: {eid: r for r, eid in enumerate(ids)} for s, ids in self.row_ids.items()}
        self.specs = [s for s in specs if s.label not in recorded]
        self.writers: dict[str, IndexWriter] = {}
        rows = {s: len(ids) for s, ids in self.row_ids.items()}
        for spec in self.specs:
            shape = {
                "method": spec.label,
                "dtype": spec.dtype,
                "components": spec.index_components(components),
                "dims": spec.dims(components),
                "rows": rows,
            }
            if self._finished(shape):
                continue
            self.writers[spec.label] = IndexWriter(
                self._work(spec.label),
                **{k: v for k, v in shape.items() if k != "method"},
                method=spec.label,
            )

    def _work(self, label: str) -> Path:
        return work_index_dir(self.db, self.run_id) / method_slug(label)

    def _published(self, label: str) -> Path:
        return run_index_dir(self.db, self.run_id) / method_slug(label)

    def _finished(self, shape: dict) -> bool:
        """Whether a finished folder of this shape exists (in the work folder or in place)."""
        for folder in (self._work(shape["method"]), self._published(shape["method"])):
            found = read_description(folder)
            if found is not None and {k: found[k] for k in shape} == shape:
                return True
        return False

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.specs]

    def share(self, config: dict) -> int:
        """Copy into the writers the training rows another complete run of the database
        already indexed with the same method, for the same gradients (``SAME_GRADIENTS``
        fields of its config equal ``config``'s: the same model, training set, loss and seed);
        returns the rows copied."""
        if not self.writers or not Path(self.db).exists() or "train" not in self.row_ids:
            return 0
        copied = 0
        for label, writer in self.writers.items():
            donor = _donor(self.db, self.run_id, label, config)
            if donor is None or writer.missing("train") == []:
                continue
            ix = open_index(self.db, donor, label)
            same = (ix.info.components, ix.info.dims, ix.info.dtype) == (
                writer.components,
                writer.dims,
                writer.dtype,
            ) and list(ix.train_ids) == self.row_ids["train"]
            if not same:
                continue
            for start in range(0, ix.info.n_train, SHARE_ROWS):
                rows = slice(start, min(ix.info.n_train, start + SHARE_ROWS))
                blocks = [ix.block("train", k, rows) for k in range(len(writer.components))]
                writer.write_block("train", start, blocks)
            copied += ix.info.n_train
        return copied

    def missing(self) -> dict[str, set[str]]:
        """Example ids some method still lacks, by split."""
        out: dict[str, set[str]] = {s: set() for s in self.row_ids}
        for w in self.writers.values():
            for split in self.row_ids:
                out[split].update(self.row_ids[split][r] for r in w.missing(split))
        return {s: ids for s, ids in out.items() if ids}

    def write(self, row: IndexRow) -> None:
        r = self._row[row.split][row.example_id]
        for label, w in self.writers.items():
            if not w.is_written(row.split, r):
                w.write(row.split, r, row.vectors[label])

    def finalize(self) -> None:
        """Flush and describe every filled folder (``description.json``)."""
        for w in self.writers.values():
            w.finalize()
            w.close()
        self.writers = {}
        fault_point("index.finalized")

    def move(self) -> None:
        """Move every finished work folder into ``X.index/<run_id>/``."""
        for label in self.labels:
            if read_description(self._work(label)) is not None:
                publish_folder(self._work(label), self.db, self.run_id, label)
        work = work_index_dir(self.db, self.run_id)
        if work.exists() and not any(work.iterdir()):
            work.rmdir()
        fault_point("index.moved")

    def record(self, store: Store, examples: pd.DataFrame) -> None:
        """Describe the moved folders in ``store`` (inside the caller's transaction): the
        methods' ``index_files`` rows, the run's ``index_rows`` and the training examples
        ``examples`` lacks (``example_frame``)."""
        con, run_id = store.con, self.run_id
        for label in self.labels:
            record_method(store, run_id, read_description(self._published(label)), self.row_ids)
        fault_point("index.record")
        have = {r[0] for r in con.execute(
            "SELECT example_id FROM examples WHERE run_id = ? AND split = 'train'", [run_id]
        ).fetchall()}  # fmt: skip
        store.insert("examples", run_id, examples[~examples["example_id"].isin(have)])


#: Config fields that fix a training example's gradient (``IndexBuild.share``).
SAME_GRADIENTS = (
    "model_hash", "train_hash", "loss_on", "reduction", "max_length", "dtype", "system_prompt",
    "seed",
)  # fmt: skip
#: Rows copied per step by ``IndexBuild.share``.
SHARE_ROWS = 4096


def _donor(db: str | Path, run_id: str, method: str, config: dict) -> str | None:
    """Another complete run of ``db`` indexed with ``method`` whose config agrees with
    ``config`` on ``SAME_GRADIENTS`` (missing fields read as their defaults)."""
    defaults = {"system_prompt": "default", "max_length": None}
    with read_store(db) as store:
        if not has_index_tables(store.con):
            return None
        rows = store.con.execute(
            "SELECT DISTINCT r.run_id, r.config FROM index_files f JOIN runs r "
            "ON r.run_id = f.run_id WHERE f.method = ? AND f.run_id <> ? "
            "AND r.status = 'complete' ORDER BY r.run_id",
            [method, run_id],
        ).fetchall()
    want = {k: config.get(k, defaults.get(k)) for k in SAME_GRADIENTS}
    for other, text in rows:
        theirs = json.loads(text)
        if {k: theirs.get(k, defaults.get(k)) for k in SAME_GRADIENTS} == want:
            return other
    return None


def example_frame(train: dict[str, Tokenized]) -> pd.DataFrame:
    """``examples`` rows of every training example (an indexed run shows any of them)."""
    rows = [
        ("train", t.example.id, t.example.prompt, t.example.response, t.n_tokens)
        for t in train.values()
    ]
    return pd.DataFrame(rows, columns=["split", "example_id", "prompt", "response", "n_tokens"])


def fill_missing(
    engine: GradientEngine,
    extract: IndexExtractor,
    todo: Sequence[tuple[str, Tokenized]],
    batch_size: int,
) -> Iterator[IndexRow]:
    """One pass for each (split, example) in ``todo``, in batches; their IndexRows."""
    for start in range(0, len(todo), batch_size):
        part = todo[start : start + batch_size]
        grads = engine.compute([tok for _, tok in part])
        for (split, _), g in zip(part, grads):
            row = extract(split, g)
            if row is not None:
                yield row


def index_todo(
    wanted: dict[str, set[str]], toks: dict[str, dict[str, Tokenized]]
) -> list[tuple[str, Tokenized]]:
    """The wanted examples as (split, tokenized), splits in ``SPLITS`` order and each in file
    order (``toks``: {split: {example id: Tokenized}} in file order)."""
    return [
        (split, tok)
        for split in SPLITS
        for eid, tok in toks.get(split, {}).items()
        if eid in wanted.get(split, ())
    ]


def fill_index(
    ctx: DistContext,
    engine: GradientEngine,
    extract: IndexExtractor,
    build: IndexBuild | None,
    todo: Sequence[tuple[str, Tokenized]],
    batch_size: int,
    advance=None,
) -> None:
    """Compute ``todo`` (one pass each) and write its rows through rank 0's ``build``. Under
    torchrun each rank takes a contiguous slice and rank 0 gathers one batch per rank and
    round. ``advance(n)``: called on rank 0 after each round with the rows it wrote."""
    lo, hi = len(todo) * ctx.rank // ctx.world, len(todo) * (ctx.rank + 1) // ctx.world
    longest = max(
        len(todo) * (r + 1) // ctx.world - len(todo) * r // ctx.world for r in range(ctx.world)
    )
    mine = list(todo[lo:hi])
    for start in range(0, longest, batch_size):
        part = mine[start : start + batch_size]
        rows = list(fill_missing(engine, extract, part, batch_size)) if part else []
        gathered = ctx.gather(rows)
        if build is None:
            continue
        written = 0
        for rank_rows in gathered or []:
            for row in rank_rows:
                build.write(row)
                written += 1
        if advance is not None:
            advance(written)
