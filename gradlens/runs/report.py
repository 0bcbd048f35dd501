"""Printable text for the CLI: the ``select`` headline and cost tables."""

from __future__ import annotations

import pandas as pd

from gradlens.runs.services import SelectResult


def format_headline(table: pd.DataFrame) -> str:
    """The headline table with 4-decimal accuracies, CIs and parameter shares."""
    out = pd.DataFrame(
        {
            "metric": table["metric"],
            "detail": table["detail"],
            "accuracy": table["accuracy"].map(lambda v: f"{v:.4f}"),
            "95% CI": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(table["ci_lo"], table["ci_hi"])],
            "k": table["k"].map(lambda v: "" if pd.isna(v) else f"{v:g}"),
            "params": table["param_fraction"].map(lambda v: "" if pd.isna(v) else f"{v:.2%}"),
        }
    )
    return out.to_string(index=False)


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
