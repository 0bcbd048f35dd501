"""One stored run as an object for notebooks and pages (in the style of kronfluence's
``Analyzer``): ``open_run(db, name)`` reads the run's identity at once; its arrays load on first
use and are kept, one ``RunArrays`` per similarity method."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gradlens.errors import GradLensError
from gradlens.runs.read import RunInfo, costs, load_arrays, null_band, run_info, stored_headline
from gradlens.runs.services import run_headline
from gradlens.selection import Objective, Step, Subset, failures, greedy_select
from gradlens.selection.headline import HEADLINE_COLUMNS
from gradlens.store.arrays import RunArrays

__all__ = ["Run", "open_run"]


class Run:
    """A complete run of a GradLens database: ``info`` (``RunInfo``), ``arrays`` (exact
    ``RunArrays``), ``arrays_of(method)``, ``greedy``, ``headline``, ``null_band``, ``costs``
    and ``failures``."""

    def __init__(self, db: str | Path, info: RunInfo) -> None:
        self.db = str(db)
        self.info = info
        self._arrays: dict[str, RunArrays] = {}
        self._headlines: dict[tuple[int, int], pd.DataFrame] = {}

    def __repr__(self) -> str:
        n, b, k = self.info.n_queries, self.info.n_candidates, self.info.n_components
        return f"Run({self.name!r}, {n} queries × {b} candidates × {k} components, db={self.db!r})"

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def arrays(self) -> RunArrays:
        """The exact method's arrays (read on first use)."""
        return self.arrays_of("exact")

    def arrays_of(self, method: str) -> RunArrays:
        """The arrays of one stored similarity method (``exact`` or a projection label)."""
        if method not in self.info.methods:
            stored = ", ".join(self.info.methods)
            raise GradLensError(f"run '{self.name}' stores no method {method!r} (it has {stored})")
        if method not in self._arrays:
            self._arrays[method] = load_arrays(self.db, self.info.run_id, method)
        return self._arrays[method]

    def greedy(
        self,
        objective: Objective = "accuracy",
        method: str = "exact",
        max_steps: int | None = None,
    ) -> list[Step]:
        """Greedy forward selection on ``method``'s arrays: one ``Step`` per component added
        (its subset, accuracy, fidelity and parameter share)."""
        a = self.arrays_of(method)
        sizes = a.known_n_params
        return greedy_select(
            *a.core, objective=objective, n_params=sizes, valid=a.valid, max_steps=max_steps
        )

    def headline(self, folds: int = 5, seed: int = 0) -> pd.DataFrame:
        """The headline rows over every stored method (``selection.headline``'s columns, as
        ``gradlens select`` prints them): the rows ``select`` stored when it ran with these
        ``folds`` and ``seed``, else computed (with the default null draws); kept once per
        (folds, seed), a copy each call."""
        key = (folds, seed)
        if key not in self._headlines:
            stored = stored_headline(self.db, self.info.run_id)
            if stored is not None and (stored["folds"].iloc[0], stored["seed"].iloc[0]) == key:
                table = stored[list(HEADLINE_COLUMNS)]
            else:
                projected = {m: self.arrays_of(m) for m in self.info.methods if m != "exact"}
                table = run_headline(self.arrays, projected, folds, seed)
            self._headlines[key] = table
        return self._headlines[key].copy()

    def null_band(self, procedure: str = "greedy_peak") -> pd.DataFrame | None:
        """The permutation null band ``select`` stored (``runs.read.null_band``)."""
        return null_band(self.db, self.info.run_id, procedure=procedure)

    def costs(self) -> pd.DataFrame:
        """The cost table (``runs.read.costs``: the paper's Table 2 rows)."""
        return costs(self.db, self.info.run_id)

    def failures(self, subset: Subset, method: str = "exact") -> pd.DataFrame:
        """The queries ``subset`` (component indices or a bool mask [K]) does not retrieve,
        worst margin first (``selection.failures``)."""
        return failures(self.arrays_of(method), subset)


def open_run(db: str | Path, name: str) -> Run:
    """The complete run named (or with id) ``name`` in database ``db``."""
    info = run_info(db, name)
    if not info.complete:
        raise GradLensError(
            f"run '{info.name}' is {info.status}: rerun its compute command to finish it"
        )
    return Run(db, info)
