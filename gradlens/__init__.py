"""GradLens: which parts of a language model's loss gradient identify a training example.

``gradlens.open_run(db, name)`` opens a stored run for a notebook (``gradlens.runs.run.Run``);
the command line is ``gradlens`` (``gradlens.cli``), the dashboard ``streamlit run app.py``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradlens.runs.run import Run

__version__ = "0.1.0"
__all__ = ["open_run"]


def open_run(db: str | Path, name: str) -> Run:
    """The complete run named (or with id) ``name`` in the GradLens database ``db``: ``run.info``,
    ``run.arrays`` (exact ``RunArrays``), ``run.greedy()``, ``run.headline()``,
    ``run.failures(subset)``. Imports the read side on first call, so ``import gradlens`` stays
    light."""
    from gradlens.runs.run import open_run as open_stored_run

    return open_stored_run(db, name)
