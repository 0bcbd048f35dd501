"""The rank service: the training examples whose gradients are closest to one query's, over
every training example of an indexed run (``gradlens rank``, the Attribute page).

A query is a stored one (its vectors are read from the index) or free text (its vectors come
from ``gradlens.engine.query_vectors``: the run's own model and settings, one forward+backward).
Each result carries its subset cosine, the per-component contributions that add up to it, and
the example's BM25 score for the query's text (BM25 over all N training examples, on the text
the run's candidates were ranked by). A stored query's original, or the query or training
example whose prompt a typed one repeats, gets its rank among all N by both scores (the
benchmark's strict rule, ``gradlens.selection.fullset``).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rank_bm25 import BM25Okapi

from gradlens.errors import GradLensError
from gradlens.options import ComputeOptions, RankOptions, to_argv
from gradlens.runs.read import curves, stored_headline
from gradlens.runs.read import examples as read_examples
from gradlens.selection.fullset import (
    FULL_SET_OBJECTIVE,
    FullSet,
    FullSetInputs,
    full_set_row_id,
    original_ranks,
)
from gradlens.selection.subsets import check_shapes
from gradlens.selection.trust import Core
from gradlens.store.arrays import RunArrays
from gradlens.store.connect import read_store
from gradlens.store.index import RunIndex, index_methods, open_index

__all__ = [
    "BOTH_VIEWS",
    "RankedExample",
    "Ranking",
    "RankSource",
    "both_views",
    "check_free_text",
    "full_set_curve",
    "full_set_inputs",
    "full_set_lines",
    "index_hint",
    "open_source",
    "rank",
    "rank_query",
    "rank_text",
    "stored_full_set",
]

#: The index method ``gradlens compute --index`` is suggested with for a run without one.
SUGGESTED_INDEX = "sjlt:d64"


def index_hint(row: dict, db: str) -> str:
    """One line saying what to run to get an index for the run ``row`` (a ``runs`` row)."""
    config = json.loads(row["config"]) if isinstance(row.get("config"), str) else {}
    name = row["name"]
    if config.get("source") == "import" or "train_path" not in config:
        return (
            f"run '{name}' was imported as dot products: there are no gradients to index; "
            f"compute the run with `gradlens compute ... --index {SUGGESTED_INDEX}` to rank over "
            "every training example"
        )
    opts = ComputeOptions(
        train=config["train_path"],
        queries=config["queries_path"],
        db=str(db),
        model=config["model"],
        run=name,
        **{
            k: config[k]
            for k in ("candidates", "bm25_on", "loss_on", "reduction", "max_length", "dtype")
            if k in config
        },
        **({"system_prompt": config["system_prompt"]} if "system_prompt" in config else {}),
        **{k: config[k] for k in ("train_columns", "query_columns") if config.get(k)},
        project=",".join(config.get("projections") or ()) or None,
        seed=config.get("seed", 0),
        index=SUGGESTED_INDEX,
    )
    command = shlex.join(["gradlens", "compute", *to_argv(opts)])
    return f"run '{name}' has no gradient index; build one (only the index is computed): {command}"


@dataclass(frozen=True, eq=False)
class RankSource:
    """What ranking against one indexed run needs, read once: the run's ``name``, ``config``
    and ``db``; the ``index`` of one method; ``names`` {component_idx: name}; the training
    examples ``train`` (example_id, prompt, response in index row order) and queries
    ``queries`` (example_id, prompt, response); the BM25 index over the training texts."""

    db: str
    name: str
    config: dict
    index: RunIndex
    names: dict[int, str]
    train: pd.DataFrame
    queries: pd.DataFrame
    bm25: BM25Okapi = field(repr=False)

    @property
    def method(self) -> str:
        return self.index.info.method

    def bm25_text(self, prompt: str, response: str) -> str:
        """The text BM25 ranks the training examples by, for this query."""
        return _bm25_text(self.config, prompt, response)

    def subset(self, names: Sequence[str] | None) -> tuple[int, ...]:
        """component_idx of ``names`` (None: every component the index holds); GradLensError
        naming an unknown or unindexed component."""
        held = self.index.info.components
        if names is None:
            return tuple(held)
        by_name = {self.names[c]: c for c in held}
        out = []
        for n in names:
            if n not in by_name:
                some = ", ".join(self.names[c] for c in held[:6])
                raise GradLensError(
                    f"--subset: the {self.method} index holds no component {n!r} "
                    f"(it holds {len(held)}: {some}{', ...' if len(held) > 6 else ''})"
                )
            out.append(by_name[n])
        if len(set(out)) != len(out):
            raise GradLensError("--subset names a component twice")
        return tuple(out)


def _bm25_text(config: dict, prompt: str, response: str) -> str:
    """The text the run's BM25 reads (``--bm25-on``: the prompt, or prompt and response)."""
    return prompt if config.get("bm25_on", "prompt") == "prompt" else prompt + " " + response


def _choose_method(methods: list[str], method: str | None, name: str) -> str:
    if method is None:  # a method over every component first (exact: holds only a few)
        return sorted(methods, key=lambda m: m.startswith("exact:"))[0]
    if method == "exact":  # the index's exact components, whatever they are
        exact = [m for m in methods if m.startswith("exact:")]
        if exact:
            return exact[0]
    if method not in methods:
        raise GradLensError(f"run '{name}' has no {method} index (indexed: {', '.join(methods)})")
    return method


def open_source(db: str, run: str, method: str | None = None) -> RankSource:
    """The RankSource of ``run`` for ``method`` (an indexed label, ``exact`` for the index's
    exact components, None: the first indexed projection); GradLensError (one line) for an
    incomplete run or one without an index (``index_hint``)."""
    with read_store(db) as store:
        row = store.resolve(run)
        comps = store.frame("components", row["run_id"])
    if row["status"] != "complete":
        raise GradLensError(
            f"run '{row['name']}' is {row['status']}: rerun its compute command to finish it"
        )
    methods = index_methods(db, row["run_id"])
    if not methods:
        raise GradLensError(index_hint(row, db))
    index = open_index(db, row["run_id"], _choose_method(methods, method, row["name"]))
    ex = read_examples(db, row["run_id"])
    train = ex[ex["split"] == "train"].set_index("example_id")
    missing = [i for i in index.train_ids if i not in train.index]
    if missing:
        raise GradLensError(
            f"run '{row['name']}': training example {missing[0]!r} of the index has no text in "
            f"{db} (compute the index again)"
        )
    train = train.loc[list(index.train_ids), ["prompt", "response"]].reset_index()
    config = json.loads(row["config"]) if isinstance(row.get("config"), str) else {}
    texts = [_bm25_text(config, p, r) for p, r in zip(train["prompt"], train["response"])]
    queries = ex.loc[ex["split"] == "query", ["example_id", "prompt", "response"]]
    return RankSource(
        db=str(db),
        name=row["name"],
        config=config,
        index=index,
        names=dict(zip(comps["component_idx"].astype(int), comps["component"].astype(str))),
        train=train,
        queries=queries.reset_index(drop=True),
        bm25=BM25Okapi([t.split() for t in texts]),
    )


@dataclass(frozen=True)
class RankedExample:
    """One result: its ``rank`` (1 = closest), the training example (id, prompt, response),
    ``cosine`` over the subset, ``contributions`` {component: share of the cosine} (they sum to
    it), its ``bm25`` score for the query's text and ``bm25_rank`` among all N."""

    rank: int
    example_id: str
    prompt: str
    response: str
    cosine: float
    bm25: float
    bm25_rank: int
    contributions: dict[str, float]


@dataclass(frozen=True)
class Original:
    """The example a query comes from: its id, how it was found (``query``: a stored query's
    original; ``query prompt``/``training prompt``: a typed prompt equal to a stored query's
    or a training example's), its ``rank`` among all N by cosine, its cosine and its
    ``bm25_rank``."""

    example_id: str
    found: str
    rank: int
    cosine: float
    bm25_rank: int


@dataclass(frozen=True)
class Ranking:
    """What ``rank`` found for one query (``to_json`` is ``gradlens rank --json``)."""

    run: str
    method: str
    query_id: str | None
    prompt: str
    response: str
    generated: bool
    subset: tuple[str, ...]
    n_train: int
    results: tuple[RankedExample, ...]
    original: Original | None

    def to_json(self) -> dict:
        query = {"id": self.query_id, "prompt": self.prompt, "response": self.response}
        results = [
            {k: getattr(r, k) for k in ("rank", "example_id", "cosine", "bm25", "contributions")}
            | {"bm25_rank": r.bm25_rank}
            for r in self.results
        ]
        original = None if self.original is None else vars(self.original).copy()
        return {
            "run": self.run,
            "query": query | {"generated": self.generated},
            "method": self.method,
            "subset": list(self.subset),
            "n_train": self.n_train,
            "original": original,
            "results": results,
        }

    def text(self) -> str:
        """The CLI's table: one line per result, then the original's rank."""
        who = f"query {self.query_id}" if self.query_id else "typed query"
        lines = [
            f"{who} of run '{self.run}' against all {self.n_train} training examples "
            f"({self.method}, {len(self.subset)} components)"
        ]
        frame = pd.DataFrame(
            {
                "rank": [r.rank for r in self.results],
                "example_id": [r.example_id for r in self.results],
                "cosine": [f"{r.cosine:.4f}" for r in self.results],
                "bm25": [f"{r.bm25:.2f}" for r in self.results],
                "bm25 rank": [r.bm25_rank for r in self.results],
                "top component": [_top_component(r.contributions) for r in self.results],
                "prompt": [_short(r.prompt) for r in self.results],
            }
        )
        lines.append(frame.to_string(index=False))
        if self.original is not None:
            o = self.original
            lines.append(
                f"original {o.example_id} ({o.found}): rank {o.rank} of {self.n_train} by cosine "
                f"({o.cosine:.4f}), rank {o.bm25_rank} by BM25"
            )
        return "\n".join(lines)


def _short(text: str, width: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def _top_component(contributions: dict[str, float]) -> str:
    if not contributions:
        return ""
    name = max(contributions, key=lambda n: contributions[n])
    return f"{name} ({contributions[name]:+.3f})"


def _original(source: RankSource, query_id: str | None, prompt: str) -> tuple[str, str] | None:
    """(training example id, how it was found) of the query's original, or None."""
    ids = set(source.train["example_id"])
    if query_id is not None:
        return (query_id, "query") if query_id in ids else None
    same = source.queries.loc[source.queries["prompt"] == prompt, "example_id"]
    if len(same) and same.iloc[0] in ids:
        return str(same.iloc[0]), "query prompt"
    same = source.train.loc[source.train["prompt"] == prompt, "example_id"]
    return (str(same.iloc[0]), "training prompt") if len(same) else None


def rank_vectors(
    source: RankSource,
    vectors: Sequence[np.ndarray],
    subset: Sequence[int] | None,
    top: int,
    query: tuple[str | None, str, str, bool],
) -> Ranking:
    """Rank every training example for the query whose index vectors are ``vectors`` (one per
    component the index holds); ``query`` = (stored id or None, prompt, response, generated)."""
    query_id, prompt, response, generated = query
    scores = source.index.score(vectors, None if subset is None else list(subset))
    best = scores.top(top)
    bm25 = np.asarray(source.bm25.get_scores(source.bm25_text(prompt, response).split()))
    names = [source.names[c] for c in scores.subset]
    results = []
    for i, row in enumerate(best.rows):
        row = int(row)
        results.append(
            RankedExample(
                rank=i + 1,
                example_id=str(source.train["example_id"].iat[row]),
                prompt=str(source.train["prompt"].iat[row]),
                response=str(source.train["response"].iat[row]),
                cosine=float(best.cosines[i]),
                bm25=float(bm25[row]),
                bm25_rank=int(original_ranks(bm25[None], np.array([row]))[0]),
                contributions=dict(zip(names, map(float, best.contributions[i]))),
            )
        )
    original = None
    found = _original(source, query_id, prompt)
    if found is not None:
        row = int(np.flatnonzero(source.train["example_id"].to_numpy() == found[0])[0])
        original = Original(
            example_id=found[0],
            found=found[1],
            rank=int(original_ranks(scores.cosine[None], np.array([row]))[0]),
            cosine=float(scores.cosine[row]),
            bm25_rank=int(original_ranks(bm25[None], np.array([row]))[0]),
        )
    return Ranking(
        run=source.name,
        method=source.method,
        query_id=query_id,
        prompt=prompt,
        response=response,
        generated=generated,
        subset=tuple(names),
        n_train=len(scores.cosine),
        results=tuple(results),
        original=original,
    )


def rank_query(source: RankSource, query_id: str, subset: Sequence[int] | None, top: int):
    """``rank_vectors`` for a stored query of the run (its vectors read from the index)."""
    rows = np.flatnonzero(source.index.query_ids == query_id)
    if not len(rows):
        some = ", ".join(map(str, source.index.query_ids[:5]))
        raise GradLensError(
            f"run '{source.name}' has no query {query_id!r} in its index (queries: {some}"
            f"{', ...' if len(source.index.query_ids) > 5 else ''})"
        )
    text = source.queries.loc[source.queries["example_id"] == query_id]
    prompt = str(text["prompt"].iat[0]) if len(text) else ""
    response = str(text["response"].iat[0]) if len(text) else ""
    vectors = source.index.vectors("query", int(rows[0]))
    return rank_vectors(source, vectors, subset, top, (query_id, prompt, response, False))


def check_free_text(source: RankSource) -> None:
    """GradLensError for a run imported from bergson: its vectors are bergson's, which GradLens
    cannot compute for new text (it cannot reproduce bergson's projection)."""
    if source.config.get("source") == "bergson":
        raise GradLensError(
            f"run '{source.name}' was imported from bergson: GradLens cannot compute its "
            f"{source.method} vectors for free text; rank a stored query (--query-id)"
        )


def rank_text(
    source: RankSource,
    model,
    prompt: str,
    response: str,
    subset: Sequence[int] | None,
    top: int,
    generated: bool = False,
) -> Ranking:
    """``rank_vectors`` for free text: ``model`` = (net, tokenizer) of the run's model (one
    forward+backward); ``generated``: the model wrote ``response``."""
    from gradlens.engine.query_vectors import text_vectors

    check_free_text(source)
    net, tokenizer = model
    vectors = text_vectors(net, tokenizer, source.config, source.method, prompt, response)
    return rank_vectors(source, vectors, subset, top, (None, prompt, response, generated))


def rank(opts: RankOptions) -> Ranking:
    """``gradlens rank``: open the run's index, then rank a stored query or free text (the
    run's model loaded in the run's dtype on ``opts.device``; ``--generate`` lets it write the
    response first)."""
    source = open_source(opts.db, opts.run, opts.method)
    names = None if opts.subset is None else [n.strip() for n in opts.subset.split(",")]
    subset = source.subset(names)
    if opts.query_id is not None:
        return rank_query(source, opts.query_id, subset, opts.top)
    from gradlens.engine.query_vectors import complete, run_model

    check_free_text(source)
    model = run_model(source.config, opts.device, opts.trust_remote_code)
    response = opts.response
    if opts.generate:
        response = complete(*model, opts.prompt, source.config, opts.max_new_tokens)
    return rank_text(source, model, opts.prompt, response, subset, opts.top, opts.generate)


def json_line(ranking: Ranking) -> str:
    """``--json``'s output: one JSON object (NaN -> null)."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(ranking.to_json()), ensure_ascii=False)


def full_set_inputs(
    db: str, run_id: str, exact: RunArrays, method: str | None = None
) -> FullSetInputs | None:
    """What ``selection.fullset.full_set_headline`` reads for run ``run_id`` (``exact``: its
    BM25 benchmark arrays) from the run's index of ``method`` (None: ``open_source``'s default);
    None when the run has no index. The index's queries are taken in the arrays' order, each
    query's original is the training example with its id, and BM25 scores every training
    example for each query's text."""
    if not index_methods(db, run_id):
        return None
    src = open_source(db, run_id, method)
    ix = src.index
    train_row = {str(t): r for r, t in enumerate(ix.train_ids)}
    query_row = {str(q): r for r, q in enumerate(ix.query_ids)}
    missing = [q for q in exact.query_ids if q not in query_row or q not in train_row]
    if missing:
        raise GradLensError(
            f"run '{src.name}': query {missing[0]!r} is not in its {src.method} index with an "
            "original among the training examples"
        )
    rows = [query_row[q] for q in exact.query_ids]
    slots = np.vectorize(lambda c: train_row.get(c, -1) if c is not None else -1, otypes=[int])
    texts = src.queries.set_index("example_id")
    bm25 = np.stack(
        [
            src.bm25.get_scores(
                src.bm25_text(texts.at[q, "prompt"], texts.at[q, "response"]).split()
            )
            for q in exact.query_ids
        ]
    )
    fs = FullSet(
        dots=ix.all_dots(rows),
        query_sq=np.asarray(ix.sqnorms("query"))[rows],
        train_sq=np.asarray(ix.sqnorms("train")),
        original=np.array([train_row[q] for q in exact.query_ids], dtype=np.int64),
    )
    core = Core(*check_shapes(exact.dots, exact.query_sq, exact.cand_sq, exact.target, exact.valid))
    return FullSetInputs(
        core=core,
        fs=fs,
        held=tuple(ix.info.components),
        slot_rows=slots(exact.candidate_ids),
        names=exact.names,
        n_params=exact.known_n_params,
        bm25=bm25,
        method=src.method,
    )


def stored_full_set(db: str, run: str) -> tuple[str, pd.DataFrame] | None:
    """(index method, the full-set headline rows ``select`` stored under it) of a run, or None
    (no index, or ``select`` not run since it got one). The rows are ``stored_headline``'s
    columns; their ids are ``selection.fullset.full_set_row_id``'s."""
    for method in index_methods(db, run):
        table = stored_headline(db, run, method)
        if table is not None and len(table):
            return method, table
    return None


def full_set_curve(db: str, run: str) -> pd.DataFrame | None:
    """The stored curve of greedy by full-set recall@1 (``select --full-set-greedy``): the
    ``curves`` columns, objective ``FULL_SET_OBJECTIVE``, method the index's; None when not
    computed."""
    for method in index_methods(db, run):
        frame = curves(db, run, method)
        frame = frame[frame["objective"] == FULL_SET_OBJECTIVE]
        if len(frame):
            return frame.reset_index(drop=True)
    return None


#: The subsets of the two views, as (BM25 headline row id, full-set subset id, label); the
#: full-set greedy has no BM25 row.
BOTH_VIEWS = (
    ("full", "full", "full gradient"),
    ("best_single", "best_single", "best single component (in-sample)"),
    ("best_single_heldout", "best_single_heldout", "best single component (held out)"),
    ("greedy_peak", "greedy_peak", "greedy peak (in-sample)"),
    ("greedy_heldout", "greedy_heldout", "greedy (held out)"),
    ("bm25", "bm25", "BM25"),
    (None, "full_set_greedy_peak", "greedy by full-set recall@1 (in-sample)"),
    (None, "full_set_greedy_heldout", "greedy by full-set recall@1 (held out)"),
)


def both_views(head: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame:
    """One row per subset in both views, as strings: its BM25-b accuracy (the stored headline
    ``head``, exact method) beside its recall@1 over all N with that row's interval, and its
    MRR (the stored full-set ``rows``); ``–`` where a view has no such row."""
    from gradlens.runs.report import MISSING, format_accuracy, format_interval  # (a cycle)

    bm25 = {} if head is None else dict(zip(head["id"], head["accuracy"]))
    by_id = rows.set_index("id")
    out = []
    for bm25_id, sid, label in BOTH_VIEWS:
        recall = full_set_row_id(sid, "recall@1")
        if recall not in by_id.index:
            continue
        r = by_id.loc[recall]
        mrr = by_id.loc[full_set_row_id(sid, "MRR"), "accuracy"]
        out.append(
            {
                "subset": label,
                "BM25-b accuracy": format_accuracy(bm25.get(bm25_id)) if bm25_id else MISSING,
                "recall@1, all N": format_accuracy(r["accuracy"]),
                "95% CI": format_interval(r["ci_lo"], r["ci_hi"]),
                "MRR, all N": format_accuracy(mrr),
                "detail": r["detail"],
            }
        )
    return pd.DataFrame(out)


def full_set_lines(rows: pd.DataFrame) -> dict[str, float]:
    """The horizontal lines of the chart of greedy by full-set recall@1: the full gradient,
    BM25 and the whole procedure held out, each its recall@1 over all N."""
    by_id = dict(zip(rows["id"], rows["accuracy"]))
    names = {
        "full": "full gradient (all N)",
        "bm25": "BM25 (all N)",
        "full_set_greedy_heldout": "greedy, whole procedure held out (all N)",
    }
    return {
        label: float(by_id[full_set_row_id(sid, "recall@1")])
        for sid, label in names.items()
        if full_set_row_id(sid, "recall@1") in by_id
    }
