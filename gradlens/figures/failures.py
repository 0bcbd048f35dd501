"""Figures of one retrieval failure: which components vote for which candidate."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from gradlens.figures.style import COLORS, finish


def share_bars(contrib: pd.DataFrame, margin: float, top: int = 30) -> go.Figure:
    """Horizontal bars of each component's contribution to the margin cos(original) -
    cos(retrieved) (``contrib``: component, contribution; the contributions sum to ``margin``).
    The ``top`` largest by magnitude are drawn; the rest are summed into one bar."""
    df = contrib.reindex(contrib["contribution"].abs().sort_values(ascending=False).index)
    if len(df) > top:
        rest = df.iloc[top:]
        df = pd.concat(
            [
                df.iloc[:top],
                pd.DataFrame(
                    {
                        "component": [f"{len(rest)} others"],
                        "contribution": [rest["contribution"].sum()],
                    }
                ),
            ]
        )
    df = df.iloc[::-1]
    colors = [COLORS["original"] if v > 0 else COLORS["wrong"] for v in df["contribution"]]
    fig = go.Figure(
        go.Bar(
            x=df["contribution"],
            y=df["component"],
            orientation="h",
            marker_color=colors,
            hovertemplate="%{y}: %{x:+.5f}<extra></extra>",
        )
    )
    fig.update_xaxes(
        title="contribution to the margin (green: prefers the original; red: the retrieved one)"
    )
    fig.update_yaxes(type="category")
    height = 160 + 18 * len(df)
    return finish(fig, f"Which components vote for which candidate (margin {margin:+.4f})", height)


def candidate_bars(cands: pd.DataFrame) -> go.Figure:
    """Cosine of each candidate (``cands``: candidate_id, cosine, role in {original,
    retrieved, other}); BM25 score in the hover when present."""
    colors = {"original": COLORS["original"], "retrieved": COLORS["wrong"], "other": "#aaaaaa"}
    bm25 = cands["bm25"] if "bm25" in cands else [float("nan")] * len(cands)
    fig = go.Figure(
        go.Bar(
            x=cands["candidate_id"].astype(str),
            y=cands["cosine"],
            marker_color=[colors.get(r, "#aaaaaa") for r in cands["role"]],
            customdata=list(zip(cands["role"], bm25, strict=True)),
            hovertemplate="%{x} (%{customdata[0]})<br>cosine %{y:.4f}<br>"
            "BM25 %{customdata[1]:.2f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="candidate", type="category")
    fig.update_yaxes(title="cosine of the subset")
    return finish(fig, "Candidates of this query", 320)
