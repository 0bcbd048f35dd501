"""Widgets of the Attribute page: the run's index (opened once per server), the query and subset
pickers, the ranking (a stored query from the index; typed text through the run's own model,
loaded on first use and held with ``holding``), and the results: the original's rank, one row per
training example with its contribution bars, texts and the way into the Pair inspector. Texts
are user text: shown in dataframes, text elements and plotly figures only. Also the full-set
rows ``select`` stores, where other pages show them: the Overview's both views, the greedy
page's curve of greedy by full-set recall@1."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import common, state, widgets
from dashboard.models import holding, loaded_model
from gradlens.errors import GradLensError
from gradlens.figures import greedy_curve
from gradlens.figures.style import finish
from gradlens.runs.rank import (
    Ranking,
    RankSource,
    both_views,
    full_set_curve,
    full_set_lines,
    index_hint,
    open_source,
    rank_query,
    rank_text,
    stored_full_set,
)
from gradlens.selection.fullset import FULL_SET_OBJECTIVE
from gradlens.store.connect import read_store
from gradlens.store.index import index_methods

#: Components drawn by name in the contribution bars (the rest summed as one bar segment).
SHOWN_COMPONENTS = 8
INPUTS = "attr_inputs"


@st.cache_resource(show_spinner="Opening the run's index…", max_entries=8)
def source(db: str, run: str, method: str, ver: tuple) -> RankSource:
    """Shared by every session (read-only memory maps and the BM25 index)."""
    return open_source(db, run, method)


@st.cache_data(show_spinner=False)
def methods(db: str, run: str, ver: tuple) -> list[str]:
    return index_methods(db, run)


def hint(ctx: common.Context) -> str:
    with read_store(ctx.db) as store:
        return index_hint(store.resolve(ctx.info.run_id), ctx.db)


@dataclass(frozen=True)
class Query:
    """What to rank: a stored query (``query_id``) or typed text (``response`` None: the model
    writes it); ``subset`` component_idx (None: every component the index holds); ``top``."""

    query_id: str | None
    prompt: str
    response: str | None
    subset: tuple[int, ...] | None
    top: int


def pick_subset(ctx: common.Context, src: RankSource) -> tuple[int, ...] | None:
    """The subset radio: the full gradient (None: every component the index holds), the
    session's current subset, a greedy prefix (its length set below; default the BM25
    benchmark's in-sample peak) or the best single component on the BM25 benchmark."""
    k = len(src.index.info.components)
    single = common.single_accuracy(ctx.db, ctx.info.name, "exact", ctx.ver)
    best = int(single.argmax())
    labels = {"full": f"full gradient ({k} components of the index)"}
    if ctx.view.subset:
        labels["current"] = f"current subset ({len(ctx.view.subset)} components)"
    labels["greedy"] = "greedy prefix (chosen on the BM25 benchmark)"
    labels["single"] = f"best single component ({src.names.get(best, best)}, BM25 benchmark)"
    kind = st.radio(
        "Components", list(labels), format_func=labels.get, key="attr_subset", horizontal=True
    )
    if kind == "full":
        return None
    if kind == "current":
        return tuple(ctx.view.subset)
    if kind == "single":
        return (best,)
    curve = common.greedy_curve(ctx.db, ctx.info.name, "exact", "accuracy", ctx.ver)
    order = [int(c) for c in curve["component_idx"]]
    peak = int(curve["accuracy"].to_numpy().argmax()) + 1
    steps = st.number_input(
        "prefix length", 1, len(order), peak, key="attr_prefix", help=f"in-sample peak: {peak}"
    )
    return tuple(order[: int(steps)])


def held(src: RankSource, subset: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """``subset`` without the components the index does not hold (said in a warning)."""
    if subset is None:
        return None
    have = set(src.index.info.components)
    kept = tuple(c for c in subset if c in have)
    if len(kept) < len(subset):
        gone = ", ".join(src.names[c] for c in subset if c not in have)
        st.warning(f"The {src.method} index does not hold {gone}: ranked without them.")
    if not kept:
        st.stop()
    return kept


@st.cache_data(show_spinner="Ranking every training example…", max_entries=64)
def stored_ranking(db: str, run: str, method: str, ver: tuple, q: Query) -> Ranking:
    return rank_query(source(db, run, method, ver), q.query_id, q.subset, q.top)


def typed_ranking(ctx: common.Context, src: RankSource, q: Query) -> Ranking:
    """Typed text through the run's model: loaded once per server (a status box), then the
    response (when the model writes it) and one forward+backward, holding the model."""
    from gradlens.engine.query_vectors import complete

    current = state.chosen_model()
    spec = src.config.get("model", "smollm2")
    trust = bool(current and current.spec == spec and current.trust_remote_code)
    adapter, merge = src.config.get("adapter"), bool(src.config.get("adapter_merge"))
    lm = loaded_model(state.ModelChoice(spec, trust, adapter, merge))
    with holding(lm):
        response = q.response
        if response is None:
            with st.spinner("The model writes a response (greedy decoding)…"):
                response = complete(lm.model, lm.tokenizer, q.prompt, src.config)
        with st.spinner("Computing the query's gradient (one forward and backward pass)…"):
            model = (lm.model, lm.tokenizer)
            return rank_text(src, model, q.prompt, response, q.subset, q.top, q.response is None)


def ranking(ctx: common.Context, src: RankSource, q: Query) -> Ranking:
    """The ranking of ``q`` (typed ones kept per session, so a rerun does not recompute them);
    a GradLensError is shown as one line."""
    try:
        if q.query_id is not None:
            return stored_ranking(ctx.db, ctx.info.name, src.method, ctx.ver, q)
        done = st.session_state.get("attr_done")
        if done is None or done[0] != (ctx.db, ctx.info.run_id, src.method, q):
            done = ((ctx.db, ctx.info.run_id, src.method, q), typed_ranking(ctx, src, q))
            st.session_state["attr_done"] = done
        return done[1]
    except GradLensError as exc:
        st.error(str(exc))
        st.stop()


def contribution_figure(r: Ranking) -> go.Figure:
    """One stacked horizontal bar per result: each component's share of its cosine (the
    ``SHOWN_COMPONENTS`` largest over the results by name, the others summed)."""
    frame = pd.DataFrame([x.contributions for x in r.results])
    shown = frame.abs().sum().sort_values(ascending=False).index[:SHOWN_COMPONENTS]
    labels = [f"#{x.rank} {x.example_id}" for x in r.results]
    fig = go.Figure()
    for name in shown:
        fig.add_bar(y=labels, x=frame[name], name=str(name), orientation="h")
    rest = frame.drop(columns=list(shown)).sum(axis=1)
    if len(frame.columns) > len(shown):
        others = len(frame.columns) - len(shown)
        fig.add_bar(y=labels, x=rest, name=f"{others} others", orientation="h", marker_color="#ccc")
    fig.update_layout(barmode="relative", yaxis={"autorange": "reversed"})
    fig.update_xaxes(title="contribution to the cosine (the segments of a bar sum to it)")
    return finish(fig, "Per-component contributions", height=120 + 28 * len(labels))


def original_line(r: Ranking) -> None:
    o = r.original
    if o is None:
        st.caption("No original: the typed prompt is not one of the run's queries or examples.")
        return
    cols = st.columns(3)
    cols[0].metric("original's rank (cosine)", f"{o.rank} of {r.n_train}", help=o.example_id)
    cols[1].metric("original's rank (BM25)", f"{o.bm25_rank} of {r.n_train}")
    cols[2].metric("original's cosine", f"{o.cosine:.4f}")
    st.caption(f"original: {o.example_id} ({o.found}); ties count against it.")


def results(ctx: common.Context, r: Ranking) -> None:
    """The table of the top k, the contribution bars and each example's texts."""
    table = pd.DataFrame(
        {
            "rank": [x.rank for x in r.results],
            "example_id": [x.example_id for x in r.results],
            "cosine": [x.cosine for x in r.results],
            "BM25": [x.bm25 for x in r.results],
            "BM25 rank": [x.bm25_rank for x in r.results],
            "prompt": [x.prompt for x in r.results],
            "response": [x.response for x in r.results],
        }
    )
    four = st.column_config.NumberColumn(format="%.4f")
    widgets.table(table, f"attribute-{r.run}", column_config={"cosine": four, "BM25": four})
    st.plotly_chart(contribution_figure(r), key="attr_bars", config={"displaylogo": False})
    for x in r.results:
        with st.expander(f"#{x.rank} {x.example_id}: cosine {x.cosine:.4f}"):
            st.text(x.prompt)
            st.caption("response")
            st.text(x.response)
            if st.button("Open the pair in the Pair inspector", key=f"attr_pair_{x.rank}"):
                send(ctx, r, x.example_id, x.prompt, x.response)


def send(ctx: common.Context, r: Ranking, example_id: str, prompt: str, response: str) -> None:
    label = f"query {r.query_id}" if r.query_id else "typed query"
    a = state.PairText(label, r.prompt, r.response)
    b = state.PairText(f"training {example_id}", prompt, response)
    options = {k: ctx.info.config.get(k) for k in ("loss_on", "reduction", "model")}
    state.send_pair(state.SentPair(a, b, **options))
    st.switch_page("views/pairs.py")


# -- the full-set rows on the Overview and the greedy page ---------------------------------------
@st.cache_data(show_spinner=False)
def full_set(db: str, run: str, ver: tuple) -> tuple[str, pd.DataFrame] | None:
    """(index method, full-set rows) ``select`` stored for the run; None without them."""
    return stored_full_set(db, run)


@st.cache_data(show_spinner=False)
def full_set_greedy_curve(db: str, run: str, ver: tuple) -> pd.DataFrame | None:
    return full_set_curve(db, run)


def full_set_objectives(ctx: common.Context) -> tuple[str, ...]:
    """(``FULL_SET_OBJECTIVE``,) when ``select --full-set-greedy`` stored its curve, else ()."""
    curve = full_set_greedy_curve(ctx.db, ctx.info.name, ctx.ver)
    return () if curve is None else (FULL_SET_OBJECTIVE,)


def both_views_table(ctx: common.Context, run: str, head: pd.DataFrame | None) -> None:
    """The BM25 benchmark's figures beside the same subsets' retrieval over all N (when
    ``select`` stored full-set rows for the run)."""
    stored = full_set(ctx.db, run, ctx.ver)
    if stored is None:
        return
    method, rows = stored
    n = ctx.info.n_candidates if run == ctx.info.name else "b"
    st.markdown(f"**Both views**: among the {n} BM25 candidates and among all N (index {method})")
    widgets.table(both_views(head, rows), f"both-views-{run}")


def full_set_greedy(ctx: common.Context) -> None:
    """The greedy page's full-set objective: the stored curve of greedy by full-set recall@1
    with its baselines, and a button that makes its peak prefix the session's subset."""
    curve = full_set_greedy_curve(ctx.db, ctx.info.name, ctx.ver)
    stored = full_set(ctx.db, ctx.info.name, ctx.ver)
    if curve is None or stored is None:
        st.info(f"Run `gradlens select --full-set-greedy` on `{ctx.info.name}` for this curve.")
        return
    st.caption(
        f"Greedy by recall@1 over all N training examples (index {stored[0]}, stored by "
        "`gradlens select --full-set-greedy`): in-sample; the line *whole procedure held out* "
        "is the honest figure, and the Overview's table its interval and null."
    )
    lines = full_set_lines(stored[1])
    fig = greedy_curve(curve, "accuracy", lines, title="recall@1 over all N (in-sample)")
    st.plotly_chart(fig, width="stretch", key="greedy_full_set_chart")
    peak = int(curve["accuracy"].to_numpy().argmax()) + 1
    if st.button(f"Use its peak prefix ({peak} components) as the subset", key="greedy_fs_peak"):
        prefix = [int(c) for c in curve["component_idx"].iloc[:peak]]
        state.set_view(state.view().with_subset(prefix))
    widgets.download(curve, f"greedy-{ctx.info.name}-all-n")
