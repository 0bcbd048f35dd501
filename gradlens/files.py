"""Files every stage writes: the one atomic write, the JSONL files that resumable commands build
one record at a time, progress files, and the digest that identifies a file's bytes.

- ``write_atomically``: text written beside its destination and renamed into place, so a reader
  sees the old file or the new one, never a half.
- ``open_partial`` / ``append_record`` / ``write_jsonl``: the ``<out>.partial`` that ``generate``
  and ``paraphrase`` append each finished record to and resume from, and their final JSONL file.
- ``Progress``: a job's progress as ``compute``, ``generate`` and ``paraphrase`` report it.
- ``replace_folder``: a finished folder (a run's index) moved into place whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from gradlens.errors import GradLensError

__all__ = [
    "Progress",
    "ProgressReporter",
    "append_record",
    "file_digest",
    "finish_jsonl",
    "jsonl_line",
    "open_partial",
    "partial_path",
    "progress_path",
    "read_partial",
    "read_progress",
    "replace_folder",
    "write_atomically",
    "write_jsonl",
    "write_progress",
]


def file_digest(path: str | Path | None) -> str:
    """blake2b-128 of a file's bytes ("" for None)."""
    if path is None:
        return ""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomically(
    path: Path,
    chunks: Iterable[str],
    before_rename: Callable[[], None] | None = None,
    scratch: Path | None = None,
) -> None:
    """Write the text ``chunks`` (UTF-8) to ``scratch``, call ``before_rename`` (a fault point),
    then rename it to ``path``. ``scratch`` defaults to a hidden file beside ``path`` named for
    this process, so that two processes replacing the same file never write into one scratch
    file."""
    if scratch is None:
        scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with scratch.open("w", encoding="utf-8") as f:
        f.writelines(chunks)
    if before_rename is not None:
        before_rename()
    os.replace(scratch, path)


def replace_folder(src: Path, dest: Path) -> None:
    """Move the folder ``src`` to ``dest`` (same file system), replacing any folder there: the
    old one is renamed aside first and removed after, so ``dest`` is never a mix of the two. A
    kill between the renames leaves ``src`` in place (moving it again finishes the job) and the
    old folder under a hidden name, removed by the next move."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    aside = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    if dest.exists():
        os.replace(dest, aside)
    os.replace(src, dest)
    shutil.rmtree(aside, ignore_errors=True)


def partial_path(out: Path) -> Path:
    """``<out>.partial``: the records a resumable command has finished so far."""
    return out.with_name(out.name + ".partial")


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


def open_partial(out: Path) -> tuple[dict[str, dict], IO[str]]:
    """The records finished so far in ``<out>.partial`` (``read_partial``) and that file opened
    for appending; GradLensError when it cannot be written."""
    partial = partial_path(out)
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        done = read_partial(partial)
        return done, partial.open("a", encoding="utf-8")
    except OSError as exc:
        raise GradLensError(f"cannot write {partial}: {exc.strerror}") from None


def append_record(handle: IO[str], record: dict) -> None:
    """Append one finished record to an open partial file and flush it (a kill loses at most
    the line being written, which ``read_partial`` drops)."""
    handle.write(jsonl_line(record))
    handle.flush()


def jsonl_line(record: dict) -> str:
    """One JSONL line (non-ASCII characters kept as they are)."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_jsonl(
    path: Path, records: Iterable[dict], before_rename: Callable[[], None] | None = None
) -> None:
    """``records`` as the JSONL file ``path``, written atomically through ``.<name>.tmp`` (one
    scratch name whatever the process, so a rerun after a kill overwrites the one it left)."""
    scratch = path.with_name(f".{path.name}.tmp")
    write_atomically(path, map(jsonl_line, records), before_rename, scratch)


def finish_jsonl(
    out: Path, records: Iterable[dict], before_rename: Callable[[], None] | None = None
) -> None:
    """Write the finished set ``out`` (``write_jsonl``), then remove the partial and progress
    files that were building it."""
    write_jsonl(out, records, before_rename)
    partial_path(out).unlink()
    progress_path(out).unlink(missing_ok=True)


@dataclass(frozen=True)
class Progress:
    """A job's progress, as its progress file holds it: ``done`` of ``total`` units (queries,
    examples), forward+backward ``passes`` so far, ``elapsed`` and ``eta`` (None until the
    first unit of this session is done) in seconds, ``updated`` as a Unix time. ``run_id`` and
    ``db`` are "" for a job that writes no run."""

    run_id: str
    name: str
    db: str
    pid: int
    state: str  # running | complete | interrupted | failed
    done: int
    total: int
    passes: int
    elapsed: float
    eta: float | None
    updated: float

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def alive(self) -> bool:
        """The job's process still exists (a ``running`` state from a killed job is stale)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def progress_path(out: str | Path) -> Path:
    """``OUT.progress.json``: where a command writing ``out`` reports its progress."""
    return Path(str(out) + ".progress.json")


def write_progress(progress: Progress, path: Path) -> None:
    """Replace the progress file ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, [json.dumps(asdict(progress))])


def read_progress(path: str | Path) -> Progress | None:
    """The progress in ``path``; None when it is missing or unreadable."""
    try:
        return Progress(**json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


class ProgressReporter:
    """Rewrites a job's progress file after every unit done (``done`` of ``total``, passes,
    elapsed, an ETA from this session's pace); ``reporting()`` records how the job ended if it
    stops early (interrupted, failed)."""

    def __init__(
        self, path: Path, name: str, done: int, total: int, run_id: str = "", db: str = ""
    ) -> None:
        self.path, self.name, self.run_id, self.db = path, name, run_id, db
        self.start_done, self.done, self.total = done, done, total
        self.t0 = time.time()
        self.passes = 0
        self.write("running")

    def advance(self, passes: int = 0) -> None:
        """One more unit done (``passes``: forward+backward passes so far)."""
        self.done += 1
        self.passes = passes
        self.write("running")

    def write(self, state: str) -> None:
        elapsed = time.time() - self.t0
        pace = elapsed / max(1, self.done - self.start_done)
        eta = pace * (self.total - self.done) if self.done > self.start_done else None
        write_progress(
            Progress(
                self.run_id, self.name, self.db, os.getpid(), state, self.done, self.total,
                self.passes, elapsed, eta, time.time(),
            ),
            self.path,
        )  # fmt: skip

    @contextmanager
    def reporting(
        self, interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,)
    ) -> Iterator[ProgressReporter]:
        """Write ``interrupted`` (on one of ``interrupts``) or ``failed`` (on any other
        exception) before the exception goes on."""
        try:
            yield self
        except interrupts:
            self.write("interrupted")
            raise
        except BaseException:
            self.write("failed")
            raise
