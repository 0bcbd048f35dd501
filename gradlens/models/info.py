"""What the dashboard's Model page shows about a loaded model, as plain data (no Streamlit): its
architecture, its components as a table, and one example tokenised with its loss mask."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gradlens.data.examples import IGNORE_INDEX, Example, tokenize_example
from gradlens.errors import GradLensError
from gradlens.figures.layers import layer_kind_grid
from gradlens.figures.style import note_below
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
#: Columns of ``components_frame``.
COMPONENT_COLUMNS = ("component", "layer", "kind", "shape", "n_params", "parameter")
#: Columns of ``token_preview``.
PREVIEW_COLUMNS = ("position", "token", "token_id", "loss")


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


def components_frame(components: Sequence[Component]) -> pd.DataFrame:
    """One row per component, in discovery order: ``component``, ``layer`` (nullable int; empty
    for model-wide ones), ``kind``, ``shape`` (``"576 × 1536"``), ``n_params`` and ``parameter``
    (the weight's parameter name)."""
    frame = pd.DataFrame(
        {
            "component": [c.name for c in components],
            "layer": pd.array([c.layer for c in components], dtype="Int64"),
            "kind": [c.kind for c in components],
            "shape": [" × ".join(str(d) for d in c.shape) for c in components],
            "n_params": np.array([c.n_params for c in components], dtype=np.int64),
            "parameter": [", ".join(c.params) for c in components],
        },
        columns=list(COMPONENT_COLUMNS),
    )
    return frame


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds, such that ``"".join(pieces)`` equals ``decode(ids)`` (special
    tokens kept, spaces not cleaned up) for byte-level and SentencePiece tokenizers.

    Decoded incrementally, as text generation servers stream tokens: a token that ends inside a
    multi-byte character adds "" (its bytes show with the token that completes the character);
    each step decodes a window that starts one token back, so leading-space rules stay right."""
    ids = [int(i) for i in ids]
    pieces = _incremental(tokenizer, ids, window=True)
    if "".join(pieces) != decode(tokenizer, ids):  # decode not local: whole prefixes (slower)
        pieces = _incremental(tokenizer, ids, window=False)
    return pieces


def _incremental(tokenizer, ids: list[int], window: bool) -> list[str]:
    pieces: list[str] = []
    prefix, read = 0, 0
    for i in range(len(ids)):
        before = decode(tokenizer, ids[prefix:read])
        text = decode(tokenizer, ids[prefix : i + 1])
        last = i == len(ids) - 1
        if text.startswith(before) and (last or not text.endswith("\ufffd")):
            pieces.append(text[len(before) :])
            prefix, read = (read if window else 0), i + 1
        else:
            pieces.append("")
    return pieces


def decode(tokenizer, ids: Sequence[int]) -> str:
    """``tokenizer.decode`` keeping special tokens and spaces exactly (what the preview shows)."""
    return tokenizer.decode(
        [int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


def token_preview(
    tokenizer, example: Example, loss_on: str = "response", max_length: int | None = None
) -> pd.DataFrame:
    """``example`` as the model sees it (``gradlens.data.examples.tokenize_example``): one
    row per token with ``position``, ``token`` (the decoded text it adds; see ``token_pieces``),
    ``token_id`` and ``loss`` (its label is not -100, i.e. the loss is taken on predicting it)."""
    input_ids, labels = tokenize_example(tokenizer, example, loss_on=loss_on, max_length=max_length)
    ids = input_ids.tolist()
    return pd.DataFrame(
        {
            "position": np.arange(len(ids), dtype=np.int64),
            "token": token_pieces(tokenizer, ids),
            "token_id": np.array(ids, dtype=np.int64),
            "loss": (labels != IGNORE_INDEX).numpy().astype(bool),
        },
        columns=list(PREVIEW_COLUMNS),
    )


_VISIBLE = str.maketrans({" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"})


def visible(piece: str) -> str:
    """A token's text with whitespace made visible (``␣`` space, ``⏎`` newline, ``⇥`` tab);
    ``(partial)`` for a token that only starts a multi-byte character."""
    return piece.translate(_VISIBLE) if piece else "(partial)"


def human_count(n: float) -> str:
    """``28.3M``, ``884.7k``, ``512`` (short parameter counts for axis ticks)."""
    n = float(n)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def params_grid(frame: pd.DataFrame, title: str = "Parameters per component") -> go.Figure:
    """``components_frame`` as the layer × kind grid of ``gradlens.figures.layer_kind_grid``,
    coloured by log10 of each component's parameter count (colour bar labelled in counts)."""
    n = frame["n_params"].to_numpy(dtype=np.float64)
    layers = [None if pd.isna(x) else int(x) for x in frame["layer"]]
    fig = layer_kind_grid(
        np.log10(np.maximum(n, 1.0)),
        layers,
        list(frame["kind"]),
        list(frame["component"]),
        n,
        chance=math.nan,
        full=math.nan,
        title=title,
    )
    marker = fig.data[0].marker
    lo, hi = float(marker.cmin), float(marker.cmax)
    ticks = np.linspace(lo, hi, 5) if hi - lo > 0.02 else np.array([(lo + hi) / 2])
    hover = [
        f"<b>{html.escape(str(r.component))}</b><br>{html.escape(str(r.kind))}, "
        f"{html.escape(str(r.shape))}<br>{int(r.n_params):,} parameters"
        for r in frame.itertuples(index=False)
    ]
    fig.update_traces(
        hovertext=hover,
        marker_colorbar={
            "title": {"text": "parameters (log scale)", "side": "right"},
            "tickvals": [float(t) for t in ticks],
            "ticktext": [human_count(10**t) for t in ticks],
        },
    )
    total = int(n.sum())
    fig.layout.annotations = ()
    note_below(fig, f"{len(frame)} components, {total:,} parameters · colour: log10 of the count")
    return fig
