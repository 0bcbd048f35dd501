"""Text about runs, shared by the CLI and every dashboard page: accuracies and intervals, the
headline as a table of strings, a run's description, the cost table and ``select``'s output."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gradlens.runs.read import RunInfo
from gradlens.runs.services import SelectResult

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


def headline_strings(table: pd.DataFrame) -> pd.DataFrame:
    """A ``selection.headline`` table as displayed: id, metric, detail, accuracy, 95% CI, k,
    params (parameter share), all strings; id is the row's stable key, not meant for display."""
    return pd.DataFrame(
        {
            "id": table["id"],
            "metric": table["metric"],
            "detail": table["detail"],
            "accuracy": table["accuracy"].map(format_accuracy),
            "95% CI": [format_interval(lo, hi) for lo, hi in zip(table["ci_lo"], table["ci_hi"])],
            "k": table["k"].map(lambda v: "" if pd.isna(v) else f"{v:g}"),
            "params": table["param_fraction"].map(lambda v: "" if pd.isna(v) else f"{v:.2%}"),
        }
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


def cost_rows(stats: dict, timings: dict) -> list[tuple[str, str]]:
    """(what, measured cost) rows: the compute job or import, projections, greedy selection."""
    rows = []
    if "seconds" in stats:
        label = "import" if stats.get("imported") else "dot-product precomputation (compute job)"
        rows.append((label, f"{stats['seconds']:.1f} s"))
    for method, seconds in sorted(stats.get("projection_seconds", {}).items()):
        rows.append((f"projection {method} (inside the compute job)", f"{seconds:.1f} s"))
    for objective, seconds in timings.items():
        rows.append((f"greedy selection ({objective}), all steps", f"{seconds:.3f} s"))
    return rows


def format_costs(stats: dict, timings: dict) -> str:
    rows = cost_rows(stats, timings)
    width = max((len(r[0]) for r in rows), default=0)
    return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows)


def select_text(result: SelectResult) -> str:
    """What ``gradlens select`` prints."""
    n, b, k = result.shape
    row = result.row
    return "\n".join(
        [
            f"run '{row['name']}' ({row['run_id']}): {n} queries, {b} candidates, {k} components",
            "",
            format_headline(result.table),
            "",
            "cost (measured)",
            format_costs(result.stats, result.timings),
        ]
    )
