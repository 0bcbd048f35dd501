"""Data sources of the ``datasets`` library and the column names of a data file.

A data file may be a folder written by ``Dataset.save_to_disk``, a ``datasets`` Arrow file
(``data-00000-of-00001.arrow``) or ``hf:NAME[:CONFIG[:SPLIT]]``, a dataset in the local
``datasets`` cache (split ``train`` by default; ``hf:NAME::SPLIT`` for the default config), read
with the network off. ``read_dataset`` gives its rows as one Arrow table; ``examples`` validates
them as it does a Parquet file's. ``Columns`` says which column holds each field
(``--columns prompt=COL,response=COL,id=COL``, ``--train-columns``, ``--query-columns``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from gradlens.errors import DataError, GradLensError, show

HF_PREFIX = "hf:"
#: The fields ``--columns`` maps; ``messages`` names a chat column (either shape).
MAPPED = ("id", "prompt", "response", "messages")
#: The chat columns recognised without ``--columns messages=COL``: role/content turns, ShareGPT.
CHAT_COLUMNS = ("messages", "conversations")
#: The column names of the JSONL files GradLens writes (``generate``, ``paraphrase``).
STANDARD_COLUMNS = "id=id,prompt=prompt,response=response"


@dataclass(frozen=True)
class Columns:
    """The column holding each field of an example; ``messages`` None: a column named in
    ``CHAT_COLUMNS``. ``flag``: the option(s) that named them, for error messages."""

    id: str = "id"
    prompt: str = "prompt"
    response: str = "response"
    messages: str | None = None
    flag: str = "--columns"

    def chat(self) -> tuple[str, ...]:
        """The column names a chat column may have."""
        return CHAT_COLUMNS if self.messages is None else (self.messages,)

    def mapped(self) -> str | None:
        """``FIELD=COL,...`` of the fields whose column is not the field's own name (None: none)."""
        pairs = [
            f"{name}={getattr(self, name)}"
            for name in MAPPED
            if getattr(self, name) not in (None, name)
        ]
        return ",".join(pairs) or None


def parse_columns(text: str | None, flag: str, base: Columns | None = None) -> Columns:
    """``base`` (default: the fields' own names) with the fields ``text`` (``FIELD=COL,...``)
    maps; GradLensError naming ``flag`` for a malformed entry."""
    base = base or Columns()
    if not text or not text.strip():
        return base
    given: dict[str, str] = {}
    for item in text.split(","):
        name, sep, column = (part.strip() for part in item.partition("="))
        if not sep or not column:
            raise GradLensError(f"{flag}: expected FIELD=COLUMN, got {show(item.strip())}")
        if name not in MAPPED:
            raise GradLensError(
                f"{flag}: unknown field {show(name)} (expected {', '.join(MAPPED)})"
            )
        if name in given:
            raise GradLensError(f"{flag}: field '{name}' given twice")
        given[name] = column
    label = flag if base.flag == flag or base == Columns() else f"{base.flag} and {flag}"
    return replace(base, **given, flag=label)


def file_columns(options: object, role: str) -> Columns:
    """The columns of the ``train`` or ``queries`` file of ``options``: its ``--columns``, then
    ``--train-columns`` / ``--query-columns`` field by field (where the options have them)."""
    columns = parse_columns(getattr(options, "columns", None), "--columns")
    name = "train_columns" if role == "train" else "query_columns"
    return parse_columns(getattr(options, name, None), "--" + name.replace("_", "-"), columns)


def is_dataset(spec: str | Path) -> bool:
    """True for ``hf:...``, a ``.arrow`` file and a folder (read as a ``save_to_disk`` folder)."""
    text = str(spec)
    return text.startswith(HF_PREFIX) or text.lower().endswith(".arrow") or Path(text).is_dir()


def parse_hf(spec: str) -> tuple[str, str | None, str]:
    """``hf:NAME[:CONFIG[:SPLIT]]`` -> (name, config or None, split); DataError when malformed."""
    parts = spec[len(HF_PREFIX) :].split(":")
    if len(parts) > 3 or not parts[0].strip():
        raise DataError(f"{spec}: expected hf:NAME[:CONFIG[:SPLIT]] (e.g. hf:tatsu-lab/alpaca)")
    name, config, split = (parts + ["", ""])[:3]
    return name, config or None, split or "train"


@contextmanager
def _offline() -> Iterator[object]:
    """The ``datasets`` module with the Hub unreachable (``HF_DATASETS_OFFLINE``) and quiet."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    was = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True  # also when the module was imported online
    try:
        yield datasets
    finally:
        datasets.config.HF_HUB_OFFLINE = was


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _from_disk(datasets, path: Path):
    if not any((path / f).exists() for f in ("state.json", "dataset_dict.json")):
        raise DataError(
            f"{path}: is a folder but not one written by Dataset.save_to_disk (expected a "
            ".jsonl, .csv, .parquet or .arrow file)"
        )
    try:
        data = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged folder is a user error here
        raise DataError(f"{path}: cannot read as a datasets folder ({_first_line(exc)})") from None
    if isinstance(data, datasets.DatasetDict):
        if len(data) != 1:
            raise DataError(
                f"{path}: holds the splits {', '.join(data)}; pass one split's folder, e.g. "
                f"{path / next(iter(data))}"
            )
        data = next(iter(data.values()))
    return data


def _from_cache(datasets, spec: str):
    name, config, split = parse_hf(spec)
    cache = os.environ.get("HF_DATASETS_CACHE") or str(datasets.config.HF_DATASETS_CACHE)
    try:
        return datasets.load_dataset(name, config, split=split, cache_dir=cache)
    except ValueError as exc:  # an unknown split or config
        raise DataError(f"{spec}: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - not cached, or a damaged cache
        raise DataError(
            f"{spec}: not read from the local datasets cache {cache} with the network off "
            f"({_first_line(exc)}); load it once online: datasets.load_dataset({name!r})"
        ) from None


def read_dataset(spec: str | Path):
    """The rows of a ``datasets`` source (see the module docstring) as a ``pyarrow.Table``, in
    the dataset's row order; DataError (one line, naming the source) when it cannot be read."""
    text = str(spec)
    with _offline() as datasets:
        if text.startswith(HF_PREFIX):
            data = _from_cache(datasets, text)
        elif Path(text).is_dir():
            data = _from_disk(datasets, Path(text))
        else:
            if not Path(text).is_file():
                raise DataError(f"{text}: file not found")
            try:
                data = datasets.Dataset.from_file(text)
            except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
                raise DataError(
                    f"{text}: cannot read as a datasets Arrow file ({_first_line(exc)})"
                ) from None
        return data.with_format("arrow")[:]
