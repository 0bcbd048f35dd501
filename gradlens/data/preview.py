"""One example as the model reads it: its tokens, their ids and the loss mask, one row each."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlens.data.examples import IGNORE_INDEX, Example, tokenize_example
from gradlens.models.tokens import token_pieces

#: Columns of ``token_preview``.
PREVIEW_COLUMNS = ("position", "token", "token_id", "loss")


def token_preview(
    tokenizer, example: Example, loss_on: str = "response", max_length: int | None = None
) -> pd.DataFrame:
    """``example`` as the model sees it (``gradlens.data.examples.tokenize_example``): one
    row per token with ``position``, ``token`` (the decoded text it adds; see
    ``gradlens.models.tokens.token_pieces``), ``token_id`` and ``loss`` (its label is not -100,
    i.e. the loss is taken on predicting it)."""
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
