"""Short-lived connections to a GradLens database, retried while another process holds it.

DuckDB allows one read-write process or many readers per file, never both, so a reader can meet
a writer's lock and a writer can meet readers'. Both open through one loop that retries every
``RETRY_PAUSE_SECONDS`` until their patience (``READ_RETRY_SECONDS``, ``WRITE_RETRY_SECONDS``)
runs out, and close the connection when their block ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from gradlens.errors import DatabaseLockedError, GradLensError
from gradlens.store.database import Store

#: How long a reader waits for a writer's lock before reporting it.
READ_RETRY_SECONDS = 10.0
#: How long a writer waits for readers (or another short writer) to let go of the database.
WRITE_RETRY_SECONDS = 60.0
#: The pause between two attempts to open a held database.
RETRY_PAUSE_SECONDS = 0.2

__all__ = ["READ_RETRY_SECONDS", "WRITE_RETRY_SECONDS", "read_store", "write_store"]


def open_retried(db: str | Path, read_only: bool, retry_seconds: float) -> Store:
    """A Store on ``db``, retried while another process holds it; the last
    DatabaseLockedError once ``retry_seconds`` have passed (any other refusal at once)."""
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            return Store(db, read_only=read_only)
        except DatabaseLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(RETRY_PAUSE_SECONDS)


@contextmanager
def read_store(db: str | Path, retry_seconds: float = READ_RETRY_SECONDS) -> Iterator[Store]:
    """A read-only Store on ``db``, retried while another process holds the write lock."""
    with closing(open_retried(db, True, retry_seconds)) as store:
        yield store


@contextmanager
def write_store(db: str | Path, retry_seconds: float = WRITE_RETRY_SECONDS) -> Iterator[Store]:
    """A read-write Store on ``db`` for a short write, retried while another process holds it."""
    try:
        store = open_retried(db, False, retry_seconds)
    except DatabaseLockedError as exc:  # any other refusal is the store's own message
        raise GradLensError(
            f"cannot write {db}: another process keeps it open ({exc}); "
            "try again when it has finished"
        ) from None
    with closing(store):
        yield store
