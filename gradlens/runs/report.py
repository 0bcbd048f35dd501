"""Text about runs, shared by the CLI and every dashboard page: accuracies and intervals, the
headline as a table of strings (with what each row may be read as), a run's description, the
cost table and ``select``'s output (text and JSON)."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.runs.costs import COST_COLUMNS
from gradlens.runs.read import RunInfo
from gradlens.runs.services import SelectResult
from gradlens.selection.headline import (
    HEADLINE_COLUMNS,
    HeadlineRow,
    headline_rows,
    indistinguishable,
    versus_full,
)

#: Shown for a value that does not exist (no queries, an unknown parameter count).
MISSING = "–"


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float | int) and math.isnan(x))


def format_accuracy(x: float | None) -> str:
    """An accuracy with 4 decimals (``MISSING`` for None or NaN)."""
    return MISSING if _missing(x) else f"{x:.4f}"


def format_interval(lo: float | None, hi: float | None) -> str:
    """A confidence interval ``[lo, hi]`` with 3 decimals (``MISSING`` when a bound is)."""
    return MISSING if _missing(lo) or _missing(hi) else f"[{lo:.3f}, {hi:.3f}]"


def _reading(row: HeadlineRow) -> str:
    """What a reader may conclude from a row: in-sample rows against their null, the others
    against the full gradient (only where the paired interval excludes 0)."""
    if row.in_sample:
        if np.isnan(row.null_hi):
            return "selected in-sample: see its held-out row"
        if indistinguishable(row):
            return "not distinguishable from selection on noise"
        return "above its null; see its held-out row"
    verdict = versus_full(row)
    return f"{verdict} than the full gradient" if verdict else ""


def headline_strings(table: pd.DataFrame) -> pd.DataFrame:
    """A ``selection.headline`` table as displayed: id, metric, detail, accuracy, 95% CI (by
    the row's method; none for in-sample rows), null 95%, Δ full 95% (the paired interval of row
    − full gradient), k, params (parameter share), reading (``_reading``), all strings; id is
    the row's stable key, not meant for display."""
    rows = headline_rows(table)
    return pd.DataFrame(
        {
            "id": [r.id for r in rows],
            "metric": [r.metric for r in rows],
            "detail": [r.detail for r in rows],
            "accuracy": [format_accuracy(r.accuracy) for r in rows],
            "95% CI": [format_interval(r.ci_lo, r.ci_hi) for r in rows],
            "null 95%": [format_accuracy(r.null_hi) if r.in_sample else "" for r in rows],
            "Δ full 95%": [format_interval(r.diff_lo, r.diff_hi) for r in rows],
            "k": ["" if np.isnan(r.k) else f"{r.k:g}" for r in rows],
            "params": [
                "" if np.isnan(r.param_fraction) else f"{r.param_fraction:.2%}" for r in rows
            ],
            "reading": [_reading(r) for r in rows],
        }
    )


#: What ``select`` prints under the headline: how each column was computed.
HEADLINE_NOTES = (
    "95% CI: exact Clopper–Pearson for rows not selected on the data; for held-out rows the "
    "hull of a bootstrap over queries and Clopper–Pearson; none for in-sample rows, which were "
    "selected on these very queries (read their held-out rows).",
    "null 95%: the 95th percentile of the same selection rerun on {draws} draws with each "
    "query's original replaced by a random other candidate; at or below it a row is not "
    "distinguishable from selection on noise.",
    "Δ full 95%: paired bootstrap over queries of (row − full gradient); a row is better or "
    "worse than the full gradient only where it excludes 0 (never said of in-sample rows).",
)


def format_headline(table: pd.DataFrame) -> str:
    """The headline as the CLI prints it (``headline_strings`` without the id)."""
    return headline_strings(table).drop(columns="id").to_string(index=False)


def _name(path: object) -> str:
    return Path(str(path)).name if path else "?"


@dataclass(frozen=True)
class RunDescription:
    """A run in words: model (``NAME (dtype)``; ``computed elsewhere`` for an import), data (file
    names; an import's filter as ``col=value``), loss (``response tokens, mean``), shape
    (``N × b × K``), methods (exact first), projections (``none`` without), candidates (b as
    configured, else the largest stored; None when unknown), run_id."""

    model: str
    data: str
    loss: str
    shape: str
    methods: str
    projections: str
    candidates: int | None
    run_id: str

    def table_rows(self) -> list[tuple[str, str]]:
        """(label, value) rows for a two-column details table."""
        return [
            ("model", self.model),
            ("data", self.data),
            ("queries × candidates × components", self.shape),
            ("methods", self.methods),
            ("loss", self.loss),
            ("run id", self.run_id),
        ]


def run_description(info: RunInfo) -> RunDescription:
    """The ``RunDescription`` of a run, from its config and shape."""
    c = info.config
    if c.get("source") == "import":
        filters = c.get("filters") or {}
        where = ", ".join(f"{k}={v}" for k, v in filters.items())
        model = "computed elsewhere"
        data = f"imported from {_name(c.get('dots'))}" + (f" ({where})" if where else "")
        projections = [m for m in info.methods if m != "exact"]
    else:
        model = f"{c.get('model', '?')} ({c.get('dtype', 'float32')})"
        data = f"train {_name(c.get('train_path'))}, queries {_name(c.get('queries_path'))}"
        projections = list(c.get("projections") or [])
    loss = "as computed elsewhere"
    if "loss_on" in c:
        loss = f"{c['loss_on']} tokens, {c.get('reduction', '?')}"
    return RunDescription(
        model=model,
        data=data,
        loss=loss,
        shape=f"{info.n_queries} × {info.n_candidates} × {info.n_components}",
        methods=", ".join(info.methods),
        projections=", ".join(projections) or "none",
        candidates=int(c.get("candidates") or info.n_candidates or 0) or None,
        run_id=info.run_id,
    )


def format_seconds(x: float | None) -> str:
    """Seconds as the cost table shows them (``not measured`` for NaN; hours past 2 h)."""
    if _missing(x):
        return "not measured"
    return f"{x / 3600:.2f} h" if x >= 7200 else f"{x:.1f} s" if x >= 10 else f"{x:.3f} s"


def cost_strings(costs: pd.DataFrame) -> pd.DataFrame:
    """A ``runs.costs.cost_table`` as displayed: step, time (``extrapolated`` marked), includes."""
    return pd.DataFrame(
        {
            "step": costs["step"],
            "time": [
                format_seconds(s) + (" (extrapolated)" if e and not _missing(s) else "")
                for s, e in zip(costs["seconds"], costs["extrapolated"])
            ],
            "includes": costs["includes"],
        }
    )


def format_costs(costs: pd.DataFrame) -> str:
    rows = cost_strings(costs)
    step_w = max((len(s) for s in rows["step"]), default=0)
    time_w = max((len(s) for s in rows["time"]), default=0)
    return "\n".join(
        f"  {r.step.ljust(step_w)}  {r.time.rjust(time_w)}  {r.includes}"
        for r in rows.itertuples(index=False)
    )


def select_text(result: SelectResult) -> str:
    """What ``gradlens select`` prints."""
    n, b, k = result.shape
    row = result.row
    draws = result.options.null_draws
    notes = [note.format(draws=draws) for note in HEADLINE_NOTES]
    return "\n".join(
        [
            f"run '{row['name']}' ({row['run_id']}): {n} queries, {b} candidates, {k} components",
            "",
            format_headline(result.table),
            "",
            *(textwrap.fill(note, 100) for note in notes),
            "",
            "cost (measured with the run; the paper's Table 2 rows)",
            format_costs(result.costs),
        ]
    )


def _plain(value: object) -> object:
    """A JSON value: NaN and None -> None, numpy scalars -> Python."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def select_json(result: SelectResult) -> str:
    """What ``gradlens select --json`` prints: one JSON object with the run, the headline rows
    (``HEADLINE_COLUMNS``) and the cost rows (``COST_COLUMNS``); NaN written as null."""
    head = [
        {c: _plain(v) for c, v in r.items()}
        for r in result.table[list(HEADLINE_COLUMNS)].to_dict("records")
    ]
    costs = [
        {c: _plain(v) for c, v in r.items()}
        for r in result.costs[list(COST_COLUMNS)].to_dict("records")
    ]
    for r in costs:
        r["extrapolated"] = bool(r["extrapolated"])
    run = {"name": result.row["name"], "run_id": result.row["run_id"]}
    return json.dumps({"run": run, "headline": head, "costs": costs}, allow_nan=False)
