"""The read side's former address, kept for the README's notebook examples: ``gradlens.runs.read``
is its home."""

from gradlens.runs.read import list_runs, load_arrays, read_store, run_info

__all__ = ["list_runs", "load_arrays", "read_store", "run_info"]
