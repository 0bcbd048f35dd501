"""Tables over selection results for reports, pages and figures (pandas)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gradlens.models.naming import KINDS
from gradlens.selection.greedy import Step
from gradlens.selection.subsets import correct, cosines
from gradlens.store.arrays import RunArrays


def layer_kind_table(
    values: Sequence[float] | np.ndarray,
    layers: Sequence[int | None],
    kinds: Sequence[str],
    model_label: str = "model",
) -> pd.DataFrame:
    """Pivot per-component values [K] to a layer × kind table (paper's Table 1 / Fig. 2).

    Rows: layers in increasing order, then one row ``model_label`` for model-wide components
    (layer None/NaN, e.g. embed, lm_head); columns: kinds present, in ``KINDS`` order."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values) == len(layers) == len(kinds):
        raise ValueError("values, layers and kinds must have the same length")

    def _row(layer: int | None) -> object:
        if layer is None or (isinstance(layer, float) and np.isnan(layer)) or layer is pd.NA:
            return model_label
        return int(layer)

    df = pd.DataFrame({"layer": [_row(x) for x in layers], "kind": list(kinds), "value": values})
    if df.duplicated(["layer", "kind"]).any():
        raise ValueError("two components share the same (layer, kind)")
    table = df.pivot(index="layer", columns="kind", values="value")
    layer_rows = sorted(x for x in table.index if x != model_label)
    rows = layer_rows + ([model_label] if model_label in table.index else [])
    cols = [k for k in KINDS if k in table.columns] + sorted(
        k for k in table.columns if k not in KINDS
    )
    out = table.reindex(index=pd.Index(rows, dtype=object, name="layer"), columns=cols)
    out.columns.name = "kind"
    return out


def greedy_curve_table(steps: Sequence[Step], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Greedy curve (paper's Figs. 4/5): columns step (1-based), component_idx, [component],
    accuracy, fidelity, param_fraction."""
    df = pd.DataFrame(
        {
            "step": np.arange(1, len(steps) + 1, dtype=np.int64),
            "component_idx": np.asarray([s.component_idx for s in steps], dtype=np.int64),
            "accuracy": np.asarray([s.accuracy for s in steps], dtype=np.float64),
            "fidelity": np.asarray([s.fidelity for s in steps], dtype=np.float64),
            "param_fraction": np.asarray([s.param_fraction for s in steps], dtype=np.float64),
        }
    )
    if names is not None:
        df.insert(2, "component", [names[i] for i in df["component_idx"]])
    return df


def projection_table(exact: RunArrays, projected: Mapping[str, RunArrays]) -> pd.DataFrame:
    """One row per projection method (label ``METHOD:FRACTION``): method, fraction (dimensions
    per parameter), accuracy of its full gradient, and its fidelity: the cosine between its
    full-gradient cosines over all valid pairs and the exact full gradient's."""
    k = exact.shape[2]
    ref = cosines(exact.dots, exact.query_sq, exact.cand_sq, np.arange(k))[exact.valid]
    rows = []
    for method, a in projected.items():
        cos = cosines(a.dots, a.query_sq, a.cand_sq, np.arange(k))
        acc = correct(cos, a.target, a.valid).mean()
        vec = cos[a.valid]
        den = float(np.linalg.norm(vec) * np.linalg.norm(ref))
        _, _, frac = method.partition(":")
        rows.append(
            {
                "method": method,
                "fraction": float(frac) if frac else np.nan,
                "accuracy": float(acc),
                "fidelity": float(vec @ ref) / den if den > 0 else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=["method", "fraction", "accuracy", "fidelity"])
