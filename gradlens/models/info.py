"""What the dashboard's Model page shows about a loaded model, as plain data (no Streamlit): where
it comes from (a ``load_model`` spec), its architecture, and its weight matrices as a table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.errors import GradLensError
from gradlens.models.loading import BUNDLED_MODEL, Component

#: Where a model comes from, as the Model page offers it.
SOURCES = ("bundled SmolLM2", "local folder", "hub id in the local cache")

#: Config attributes tried in order for each architecture field (families name them differently;
#: transformers' attribute maps cover most, the rest are listed here).
_CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    "hidden size": ("hidden_size", "n_embd", "d_model"),
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "attention heads": ("num_attention_heads", "n_head", "num_heads"),
    "key/value heads": ("num_key_value_heads",),
    "MLP size": ("intermediate_size", "n_inner", "d_ff"),
    "vocab size": ("vocab_size",),
    "max positions": ("max_position_embeddings", "n_positions"),
}
#: Columns of ``weight_table``.
WEIGHT_TABLE_COLUMNS = ("component", "layer", "kind", "shape", "n_params", "parameter")


def spec_for(source: str, text: str) -> str:
    """The ``load_model`` spec for a source of ``SOURCES`` and the folder or hub id typed for it
    (a folder is made absolute, so that every page names it the same way). Raises GradLensError
    (one line) for an empty entry or a folder that does not exist."""
    text = (text or "").strip()
    if source == SOURCES[0]:
        return BUNDLED_MODEL
    if source == SOURCES[1]:
        if not text:
            raise GradLensError("enter the path of a model folder (with config.json)")
        path = Path(text).expanduser()
        if not path.is_dir():
            raise GradLensError(f"no folder at {text}")
        return str(path.resolve())
    if source == SOURCES[2]:
        if not text:
            raise GradLensError("enter a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct")
        return text
    raise GradLensError(f"unknown model source {source!r} (expected one of {', '.join(SOURCES)})")


def source_of(spec: str | None) -> tuple[str, str]:
    """``(source, text)`` that ``spec_for`` maps back to ``spec`` (the bundled model when None)."""
    if spec is None or spec == BUNDLED_MODEL:
        return SOURCES[0], ""
    return (SOURCES[1] if Path(spec).is_dir() else SOURCES[2]), spec


def _config_value(config: object, names: Sequence[str]) -> object | None:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return str(value)


def architecture_summary(model) -> dict[str, str]:
    """Model class, ``model_type``, sizes (hidden, layers, heads, MLP, vocab, positions), dtype,
    parameter count and whether input and output embeddings are tied, as display strings (a
    field the config does not define is left out)."""
    config = getattr(model, "config", None)
    out = {"model class": type(model).__name__}
    model_type = getattr(config, "model_type", None)
    if model_type:
        out["model_type"] = str(model_type)
    for label, names in _CONFIG_FIELDS.items():
        value = _config_value(config, names)
        if value is not None:
            out[label] = _fmt(value)
    params = list(model.parameters())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
    out["dtype"] = ", ".join(dtypes) or "–"
    out["parameters"] = _fmt(sum(p.numel() for p in params))
    out["tied embeddings"] = _fmt(_tied(model))
    return out


def _tied(model) -> bool:
    inp = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    get_out = getattr(model, "get_output_embeddings", None)
    outp = get_out() if get_out is not None else None
    return bool(inp is not None and outp is not None and inp.weight is outp.weight)


def weight_table(components: Sequence[Component]) -> pd.DataFrame:
    """The model's weight matrices, one row per component in discovery order: ``component``,
    ``layer`` (nullable int; empty for model-wide ones), ``kind``, ``shape`` (``"576 × 1536"``),
    ``n_params`` and ``parameter`` (the weight's parameter name)."""
    return pd.DataFrame(
        {
            "component": [c.name for c in components],
            "layer": pd.array([c.layer for c in components], dtype="Int64"),
            "kind": [c.kind for c in components],
            "shape": [" × ".join(str(d) for d in c.shape) for c in components],
            "n_params": np.array([c.n_params for c in components], dtype=np.int64),
            "parameter": [", ".join(c.params) for c in components],
        },
        columns=list(WEIGHT_TABLE_COLUMNS),
    )
