"""The read side at the address the README's notebook examples use: ``gradlens.runs.read`` is its
home, ``gradlens.store.connect`` that of ``read_store``."""

from gradlens.runs.read import list_runs, load_arrays, run_info
from gradlens.store.connect import read_store

__all__ = ["list_runs", "load_arrays", "read_store", "run_info"]
