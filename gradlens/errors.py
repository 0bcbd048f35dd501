"""User-facing errors: the CLI prints their message on one line and exits with code 2.

Every message is one line whatever it quotes: line breaks in it (a file's bytes, an id with a
newline) are escaped when the error is made (``one_line``)."""

from __future__ import annotations

#: Characters ``str.splitlines`` breaks at, with the escape that replaces each in a message.
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


def one_line(text: object) -> str:
    """``str(text)`` with every line break escaped (``\\n`` etc.), so it prints as one line."""
    return str(text).translate(_LINE_BREAKS)


def show(value: object, limit: int = 60) -> str:
    """A short one-line ``repr`` of a value quoted from user input (cut to ``limit`` chars)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class GradLensError(Exception):
    """Bad input (file, field, option or model spec). The message is one line, shown as is."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(message), *args)


class DataError(GradLensError):
    """A dataset file is malformed; the message names the file, the line and the field."""


class TableError(DataError, ValueError):
    """A long table for ``gradlens import`` (dots, norms, n_params) is malformed; the message
    names the file, the column and an offending row. Also a ValueError, as the importer's
    errors always were."""


class DatabaseError(GradLensError):
    """A database file that cannot be used: not DuckDB, another GradLens schema version, or a
    DuckDB database without GradLens tables. The file is left as it was."""


class DatabaseLockedError(GradLensError):
    """Another connection holds the database (readers and writers retry on this one)."""
