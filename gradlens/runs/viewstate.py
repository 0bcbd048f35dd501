"""The dashboard's lasting view state as a plain value, and its URL form (query parameters are
strings), so a copied URL reopens the same run, method, subset and query. No Streamlit here."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

OBJECTIVES = ("accuracy", "fidelity")


@dataclass(frozen=True)
class ViewState:
    """run: run name; method: ``exact`` or a projection label; subset: component indices in the
    order they were added (a greedy prefix keeps greedy's order); query: the query opened on the
    failure page; objective: greedy objective; compare: a second run to show beside ``run``."""

    run: str | None = None
    method: str = "exact"
    subset: tuple[int, ...] = ()
    query: str | None = None
    objective: str = "accuracy"
    compare: str | None = None

    def to_params(self) -> dict[str, str]:
        """Query parameters (only the fields that differ from the defaults)."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            out[f.name] = ",".join(map(str, value)) if f.name == "subset" else str(value)
        return out

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ViewState:
        """Parse query parameters; malformed values fall back to the defaults."""
        subset: tuple[int, ...] = ()
        raw = params.get("subset", "")
        try:
            parsed = [int(x) for x in raw.split(",") if x.strip()]
            if all(x >= 0 for x in parsed) and len(set(parsed)) == len(parsed):
                subset = tuple(parsed)
        except ValueError:
            subset = ()
        objective = params.get("objective", "accuracy")
        return cls(
            run=params.get("run") or None,
            method=params.get("method") or "exact",
            subset=subset,
            query=params.get("query") or None,
            objective=objective if objective in OBJECTIVES else "accuracy",
            compare=params.get("compare") or None,
        )

    def with_subset(self, subset: tuple[int, ...] | list[int]) -> ViewState:
        return dataclasses.replace(self, subset=tuple(int(c) for c in subset))

    def replace(self, **changes: object) -> ViewState:
        return dataclasses.replace(self, **changes)
