"""JSONL files that commands build one record at a time (``generate``, ``paraphrase``): the
``<out>.partial`` a stopped run resumes from, and the final file written beside and renamed into
place, so the final name never holds a part of the set."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from gradlens.errors import GradLensError


def read_partial(partial: Path) -> dict[str, dict]:
    """The records a stopped run left in ``partial``, by ``id``. A last line cut short (no
    newline: the process died while writing it) is dropped from the file, to be made again;
    any other unreadable line is a GradLensError naming it."""
    if not partial.exists():
        return {}
    data = partial.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        with partial.open("r+b") as f:
            f.truncate(len(complete))
    done = {}
    for n, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            done[rec["id"]] = rec
        except (ValueError, TypeError, KeyError):
            raise GradLensError(
                f"{partial}:{n}: not a line this command wrote; delete {partial} to start over"
            ) from None
    return done


def write_atomically(
    path: Path, records: Iterable[dict], before_rename: Callable[[], None] | None = None
) -> None:
    """Write ``records`` as JSONL to a hidden file beside ``path`` (a rerun after a kill
    overwrites it), call ``before_rename`` (a fault point), then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    if before_rename is not None:
        before_rename()
    os.replace(tmp, path)
