"""Widgets the pages share: a table with its CSV download, a stored headline with its flags,
figures side by side, the second run drawn beside the current one, and the components a chart
click or a routed pick selects."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Integral

import pandas as pd
import streamlit as st

from dashboard import common, state
from gradlens.runs.read import RunInfo
from gradlens.runs.report import cost_strings, format_accuracy, format_interval, headline_strings
from gradlens.selection import (
    HELD_OUT,
    NOT_SELECTED,
    SELECTED_IN_SAMPLE,
    HeadlineRow,
    headline_row,
    headline_rows,
    indistinguishable,
)

NONE = "(none)"
#: The last click applied per chart key: a chart keeps its selection across reruns, and a click
#: is applied once.
_APPLIED = "gl_clicks_applied"


def download(frame: pd.DataFrame, name: str, label: str = "Download CSV") -> None:
    st.download_button(
        label, frame.to_csv(index=False).encode(), f"{name}.csv", "text/csv", key=f"dl_{name}"
    )


def table(frame: pd.DataFrame, download_as: str | None = None, **dataframe_args: object):
    """``frame`` at full width without its index (``dataframe_args`` go to ``st.dataframe``), and
    its CSV download named ``download_as`` when given. Returns the dataframe's event."""
    event = st.dataframe(frame, hide_index=True, width="stretch", **dataframe_args)
    if download_as is not None:
        download(frame, download_as)
    return event


# -- the headline ---------------------------------------------------------------------------------
#: Row types in words (the headline's ``type`` column).
TYPES = {
    NOT_SELECTED: "not selected",
    SELECTED_IN_SAMPLE: "selected in-sample",
    HELD_OUT: "held out",
}
#: The headline table's columns as the pages show them.
HEADLINE_SHOWN = ["metric", "type", "accuracy", "95% CI", "reading", "null 95%", "Δ full 95%"]
HEADLINE_SHOWN += ["CI method", "k", "params", "detail"]


def headline_table(head: pd.DataFrame, download_as: str) -> None:
    """A stored headline as a table: ``report.headline_strings`` with each row's type and the
    method of its interval (none for a row selected on these queries)."""
    methods = [m if isinstance(m, str) else "none (in-sample)" for m in head["ci_method"]]
    shown = headline_strings(head)
    shown["type"] = head["type"].map(TYPES).to_numpy()
    shown["CI method"] = methods
    widths = {c: st.column_config.TextColumn(width="small") for c in ("accuracy", "k", "params")}
    widths["reading"] = st.column_config.TextColumn(width="large")
    table(shown[HEADLINE_SHOWN], download_as, column_config=widths)


def cost_table(costs: pd.DataFrame, download_as: str) -> None:
    """A run's cost rows (``runs.costs``) as ``report.cost_strings`` shows them, in a static
    table whose long *includes* texts wrap, and its CSV download (seconds as numbers)."""
    st.table(cost_strings(costs).set_index("step"))
    download(costs, download_as)


def _flag(row: HeadlineRow, held: HeadlineRow | None) -> str:
    """One in-sample row against its null, and its held-out counterpart."""
    verdict = "at or below" if indistinguishable(row) else "above"
    text = f"**{row.metric}** {format_accuracy(row.accuracy)} is {verdict} its null's "
    text += f"95th percentile, {format_accuracy(row.null_hi)}."
    if held is not None:
        text += (
            f" Held out: **{held.metric}** {format_accuracy(held.accuracy)} "
            f"{format_interval(held.ci_lo, held.ci_hi)}."
        )
    return text


def selection_flags(head: pd.DataFrame) -> None:
    """For the rows selected on the run's own queries: "not distinguishable from selection on
    noise" where a row is at or below its permutation null's ``null_hi`` (a warning), a note
    where it is above; each with its held-out row."""
    rows = [r for r in headline_rows(head) if r.in_sample and not math.isnan(r.null_hi)]
    draws = int(head["null_draws"].iloc[0]) if "null_draws" in head else None
    null = (
        "the same selection rerun with each query's original replaced by a random other "
        f"candidate ({draws} draws)"
    )
    low = [r for r in rows if indistinguishable(r)]
    for group, box, lead in (
        (low, st.warning, "**Not distinguishable from selection on noise**"),
        ([r for r in rows if r not in low], st.info, "**Above selection on noise**"),
    ):
        if group:
            lines = [_flag(r, headline_row(head, r.heldout_id or "")) for r in group]
            box(f"{lead}: compared with {null}.\n\n" + "\n\n".join(lines))


def side_by_side(items: Sequence, figure: Callable, key: str) -> None:
    """One figure per item (``figure(item)``), in columns when there are several."""
    cols = st.columns(len(items)) if len(items) > 1 else [st.container()]
    for i, (item, col) in enumerate(zip(items, cols, strict=True)):
        col.plotly_chart(figure(item), width="stretch", key=f"{key}_{i}")


def chart_row(figures: dict[str, object], widths: Sequence[int] | None = None) -> None:
    """Plotly figures side by side ({chart key: figure}), in columns of relative ``widths``."""
    cols = st.columns(list(widths) if widths else len(figures))
    for col, (key, figure) in zip(cols, figures.items(), strict=True):
        col.plotly_chart(figure, width="stretch", key=key)


# -- the run drawn beside the current one -------------------------------------------------------
def _store_compare(key: str) -> None:
    value = st.session_state.get(key)
    state.set_view(state.view().replace(compare=None if value in (None, NONE) else value))


def partner_run(ctx: common.Context, key: str) -> RunInfo | None:
    """The run to draw beside the current one (the view's ``compare``): a run of the same model
    and data (another query setting) when the database holds one, chosen under "Other setting"
    when it holds several; else any other complete run picked under "Compare with", none by
    default."""
    same, others = common.partner_runs(ctx)
    v = state.view()
    if same:
        names = [o.name for o in same]
        if len(same) > 1:
            st.session_state[key] = v.compare if v.compare in names else names[0]
            st.selectbox("Other setting", names, key=key, on_change=_store_compare, args=(key,))
            v = state.view()
        st.caption(
            f"The database holds {len(same) + 1} runs of the same model and data (query "
            "settings): shown side by side."
        )
        return same[names.index(v.compare)] if v.compare in names else same[0]
    if not others:
        return None
    st.session_state[key] = v.compare if v.compare in others else NONE
    st.selectbox(
        "Compare with",
        [NONE, *others],
        key=key,
        on_change=_store_compare,
        args=(key,),
        help="another run of this database, drawn beside this one",
    )
    v = state.view()
    return common.run_info(ctx.db, v.compare, ctx.ver) if v.compare in others else None


# -- picking one component: chart clicks, a selectbox, a routed value --------------------------
def _pick(idx: int) -> None:
    state.set_view(state.view().with_subset((idx,)))


def _on_picker(key: str) -> None:
    value = st.session_state.get(key)
    if value is not None:
        _pick(value)


def component_index(value: object, k: int) -> int | None:
    """``value`` as a component index below ``k``, or None (not an integer, a bool, or out of
    range)."""
    if isinstance(value, Integral) and not isinstance(value, bool) and 0 <= value < k:
        return int(value)
    return None


def component_picker(
    names: Sequence[str], describe: Callable[[int], str], key: str, routed_key: str
) -> None:
    """A selectbox that makes one component the subset: the accessible way to pick what a chart
    click picks (``describe(index)`` labels the options). A value a script routes through
    ``st.session_state[routed_key]`` (AppTest cannot click a chart) is applied once."""
    routed = st.session_state.pop(routed_key, None)
    if (idx := component_index(routed, len(names))) is not None:
        _pick(idx)
        st.rerun()
    subset = state.view().subset
    st.session_state[key] = subset[0] if len(subset) == 1 else None
    st.selectbox(
        "Pick a component",
        list(range(len(names))),
        index=None,
        key=key,
        format_func=describe,
        placeholder="choose a component to make it the subset",
        on_change=_on_picker,
        args=(key,),
    )


def clicked_indices(event: object, k: int) -> tuple[int, ...]:
    """The indices (customdata, else the point's index) of the points selected in a chart's
    event, in click order, each once; what is not an index below ``k`` is left out."""
    try:
        points = event.selection.points  # type: ignore[union-attr]
    except (AttributeError, KeyError):
        return ()
    out: list[int] = []
    for p in points or []:
        c = p.get("customdata", p.get("point_index"))
        if isinstance(c, list | tuple):
            c = c[0] if c else None
        try:
            i = int(c)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if 0 <= i < k and i not in out:
            out.append(i)
    return tuple(out)


def select_clicked(chart_key: str, event: object, chart_names: list[str], names: list[str]) -> None:
    """Make the components clicked on a chart (points' customdata: indices into
    ``chart_names``) the subset, matched by name among ``names`` (the current run's), once per
    click: a chart keeps its selection across reruns."""
    picked = clicked_indices(event, len(chart_names))
    applied = st.session_state.setdefault(_APPLIED, {})
    if applied.get(chart_key, ()) == picked:
        return
    applied[chart_key] = picked
    index = {n: i for i, n in enumerate(names)}
    subset = tuple(index[n] for n in (chart_names[c] for c in picked) if n in index)
    if subset and subset != state.view().subset:
        state.set_view(state.view().with_subset(subset))
        st.rerun()
