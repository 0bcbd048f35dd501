"""Dataset loading (JSONL / CSV / Parquet, and the ``datasets`` sources of ``sources``), chat
formatting and loss masking."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gradlens.data.sources import HF_PREFIX, Columns, is_dataset, read_dataset
from gradlens.errors import DataError, one_line, show
from gradlens.options import LOSS_ON

if TYPE_CHECKING:  # torch is imported where a function needs it: reading data needs none
    import pyarrow as pa
    import torch

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
#: The fields an example needs (besides a chat column, which may replace prompt and response).
FIELDS = ("id", "prompt", "response")
#: ShareGPT's speakers (``conversations`` turns with ``from``/``value``) as chat roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
#: Every field in the column of its own name.
OWN_NAMES = Columns()


@dataclass(frozen=True)
class Example:
    """One single-turn example: ``id`` (unique string), user ``prompt``, assistant ``response``.

    ``where`` (``file:line`` or ``file: row N``, set by ``load_examples``; not compared) lets a
    later error name where the example came from; ``id_from_row`` (not compared): the id is
    ``str(row index)``, the file having no id column."""

    id: str
    prompt: str
    response: str
    where: str = field(default="", compare=False, repr=False)
    id_from_row: bool = field(default=False, compare=False, repr=False)


def _type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _from_record(
    record: object, where: str, cols: Columns = OWN_NAMES, str_ids: bool = False
) -> Example:
    """Validate one parsed record; ``where`` is ``file:line`` for the error message, ``cols``
    the columns of the fields (errors name them); ``str_ids``: an id of another type goes
    through ``str()``. Fields other than id, prompt, response and a chat column are ignored,
    whatever their type."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {_type(record)}")
    chat = next((c for c in cols.chat() if c in record), None)
    if chat is not None and cols.prompt not in record:
        prompt, response = _from_messages(record[chat], where, chat)
        names = (f"{chat}[user].content", f"{chat}[assistant].content")
    else:
        names = (cols.prompt, cols.response)
        for name in names:
            if name not in record:
                raise DataError(f"{where}: missing field '{name}'")
        prompt, response = record[cols.prompt], record[cols.response]
    if cols.id not in record:
        raise DataError(f"{where}: missing field '{cols.id}'")
    ex_id = record[cols.id]
    if str_ids and not isinstance(ex_id, str):
        ex_id = str(ex_id)
    if not isinstance(ex_id, str):
        raise DataError(
            f"{where}: field '{cols.id}' must be a string, got {_type(ex_id)} {show(ex_id)}"
        )
    if not ex_id.strip():
        raise DataError(f"{where}: field '{cols.id}' is empty")
    for name, value in zip(names, (prompt, response), strict=True):
        if not isinstance(value, str):
            raise DataError(f"{where}: field '{name}' must be a string, got {_type(value)}")
        if not value.strip():
            raise DataError(f"{where}: field '{name}' is empty")
    return Example(id=ex_id, prompt=prompt, response=response, where=where)


def _turn(message: dict) -> tuple[object, str]:
    """(role, the key holding the text) of a role/content turn or a ShareGPT from/value turn."""
    if message.get("role") is None and message.get("from") is not None:
        return SHAREGPT_ROLES.get(message["from"], message["from"]), "value"
    return message.get("role"), "content"


def _from_messages(messages: object, where: str, name: str) -> tuple[object, object]:
    """The prompt and response of a chat column ``name`` (role/content or ShareGPT turns)."""
    if not isinstance(messages, list):
        raise DataError(f"{where}: field '{name}' must be a list, got {_type(messages)}")
    if not all(isinstance(m, dict) for m in messages):
        raise DataError(
            f"{where}: field '{name}' must hold objects with 'role' and 'content' (or ShareGPT's "
            "'from' and 'value')"
        )
    turns = [(m, *_turn(m)) for m in messages if _turn(m)[0] != "system"]
    roles = [role for _, role, _ in turns]
    if roles != ["user", "assistant"]:
        raise DataError(
            f"{where}: field '{name}' must hold one user then one assistant turn, "
            f"got roles {show(roles)}"
        )
    for m, role, key in turns:
        if key not in m:
            raise DataError(f"{where}: field '{name}' has a {role} turn without '{key}'")
    return tuple(m[key] for m, _, key in turns)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_text(path: Path, raw: bytes) -> None:
    """A NUL byte means a binary file (a Parquet file named .jsonl, say), not text."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}:{line}: not a text file (NUL byte at byte {nul})")


def _read_jsonl(path: Path, cols: Columns) -> list[Example]:
    examples = []
    raw = _read_bytes(path)
    _check_text(path, raw)
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{lineno}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{where}: invalid UTF-8 (byte {exc.start} of the line): not a UTF-8 text file"
            ) from None
        if lineno == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: broken JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise DataError(f"{where}: broken JSON (nested too deeply)") from None
        except ValueError as exc:  # e.g. an integer with more digits than Python converts
            raise DataError(f"{where}: broken JSON ({str(exc).splitlines()[0]})") from None
        examples.append(_from_record(record, where, cols))
    return examples


def _string_column(kind) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_null(kind)
    )


def _read_csv(path: Path, cols: Columns) -> list[tuple[str, dict]]:
    """(``file:line``, record) of every row; every row must have the header's fields."""
    raw = _read_bytes(path)
    _check_text(path, raw)
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{line}: invalid UTF-8 (byte {exc.start}): not a UTF-8 text file"
        ) from None
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long responses are fine
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, header, line = [], None, 1
    try:
        for row in reader:
            where, line = f"{path}:{line}", reader.line_num + 1  # a row may span lines
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if header is None:
                header = row
                _require_columns(path, header, cols)
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{where}: {len(row)} fields, the header has {len(header)} (quote fields "
                    'that hold a comma: "a, b")'
                )
            rows.append((where, dict(zip(header, row, strict=True))))
    except csv.Error as exc:
        raise DataError(f"{path}:{line}: cannot parse as CSV ({exc})") from None
    return rows


def _read_parquet(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file is a user error here
        raise DataError(f"{path}: cannot read as Parquet ({str(exc).splitlines()[0]})") from None


def _from_table(
    label: object, table: pa.Table, cols: Columns, dataset: bool = False, row_ids: bool = False
) -> list[Example]:
    """The examples of a Parquet file's or a ``datasets`` source's rows (``label: row N``).
    ``dataset``: ids of any type go through ``str()``; with ``row_ids`` too, a table without
    the id column gets ``str(row index)`` ids (a training set)."""
    names = table.column_names
    from_rows = dataset and row_ids and cols.id not in names
    _require_columns(label, names, cols, need_id=not from_rows)
    typed = (cols.prompt, cols.response) if dataset else (cols.id, cols.prompt, cols.response)
    for name in typed:
        if name in names and not _string_column(table.schema.field(name).type):
            kind = table.schema.field(name).type
            raise DataError(f"{label}: column '{name}' has type {kind}, expected string")
    try:
        records = table.to_pylist()
    except Exception as exc:  # noqa: BLE001
        what = "a datasets source" if dataset else "Parquet"
        raise DataError(f"{label}: cannot read as {what} ({str(exc).splitlines()[0]})") from None
    examples = []
    for i, r in enumerate(records):
        record = {k: v for k, v in r.items() if v is not None}  # a null is a missing field
        if from_rows:
            record[cols.id] = str(i)
        ex = _from_record(record, f"{label}: row {i + 1}", cols, str_ids=dataset)
        examples.append(dataclasses.replace(ex, id_from_row=True) if from_rows else ex)
    return examples


def _require_columns(path: object, columns, cols: Columns, need_id: bool = True) -> None:
    columns = [str(c) for c in columns]
    chat = any(c in columns for c in cols.chat())
    needed = [f for f in FIELDS if (need_id if f == "id" else not chat)]
    for field_name in needed:
        name = getattr(cols, field_name)
        if name not in columns:
            have = show(", ".join(columns), 80)
            hint = f"from {cols.flag} {field_name}={name}"
            if name == field_name:
                hint = f"name another with {cols.flag} {field_name}=COLUMN"
            raise DataError(f"{path}: missing column '{name}' (columns: {have}); {hint}")
    for name in (cols.id, cols.prompt, cols.response, *cols.chat()):
        if columns.count(name) > 1:
            raise DataError(f"{path}: column '{name}' appears {columns.count(name)} times")


def _read_file(path: Path, cols: Columns, row_ids: bool) -> list[Example]:
    """The examples of a file or folder that exists, by its kind."""
    if is_dataset(path):
        return _from_table(path, read_dataset(path), cols, dataset=True, row_ids=row_ids)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path, cols)
    if suffix == ".csv":
        return [_from_record(r, where, cols) for where, r in _read_csv(path, cols)]
    if suffix == ".parquet":
        return _from_table(path, _read_parquet(path), cols)
    raise DataError(
        f"{path}: unknown file type {show(suffix)} (expected .jsonl, .csv, .parquet, .arrow, a "
        "folder written by Dataset.save_to_disk or hf:NAME)"
    )


def load_examples(
    path: str | Path, columns: Columns | None = None, row_ids: bool = False
) -> list[Example]:
    """Read a dataset file (``.jsonl``/``.json``, ``.csv``, ``.parquet``) or a ``datasets``
    source (a ``save_to_disk`` folder, an ``.arrow`` file, ``hf:NAME[:CONFIG[:SPLIT]]``) into
    Examples; ``columns``: the columns of the fields (default: their own names). A ``datasets``
    source's ids of any type go through ``str()``; with ``row_ids`` (a training set), one
    without an id column gets ``str(row index)`` ids.

    Raises DataError (one line) naming the file, the line (CSV, JSONL) or row (Parquet,
    ``datasets``) and the field for any malformed input."""
    cols = columns or OWN_NAMES
    if str(path).startswith(HF_PREFIX):
        label = str(path)
        examples = _from_table(label, read_dataset(label), cols, dataset=True, row_ids=row_ids)
    else:
        path = label = Path(path)
        try:
            exists = path.exists()
        except (OSError, ValueError) as exc:
            raise DataError(f"{show(str(path))}: cannot open ({exc})") from None
        if not exists:
            raise DataError(f"{path}: file not found")
        examples = _read_file(path, cols, row_ids)
    if not examples:
        raise DataError(f"{label}: no examples (empty file)")
    seen: dict[str, Example] = {}
    for ex in examples:
        if ex.id in seen:
            raise DataError(
                f"{ex.where}: duplicate id {show(ex.id)} (first at {seen[ex.id].where})"
            )
        seen[ex.id] = ex
    return examples


def check_queries(train: Sequence[Example], queries: Sequence[Example], queries_path: str) -> None:
    """Every query id must name its original in the training set."""
    train_ids = {ex.id for ex in train}
    for i, q in enumerate(queries):
        if q.id not in train_ids:
            raise DataError(
                f"{q.where or queries_path}: example {i + 1}: query id {show(q.id)} has no "
                "original in the training set"
            )


def _origin(example: Example) -> str:
    """``file:line: example 'id'`` (or just the id when the example was not read from a file)."""
    name = f"example {show(example.id)}"
    return f"{example.where}: {name}" if example.where else name


def content_hash(examples: Sequence[Example]) -> str:
    """Stable hash of the examples' ids and texts (independent of the file format)."""
    h = hashlib.blake2b(digest_size=16)
    for ex in examples:
        for part in (ex.id, ex.prompt, ex.response):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
    return h.hexdigest()


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


#: Stands in for the system turn's text while ``render_chat`` cuts the turn out (``none``).
_SYSTEM_MARK = "<<gradlens: system turn to leave out>>"


def render_chat(tokenizer, messages: list[dict], system: str = "default", generation=False) -> str:
    """``messages`` through the tokenizer's chat template as text. ``system``: ``default``
    (whatever the template inserts when no system turn is given: SmolLM2's names itself
    "a helpful AI assistant named SmolLM, trained by Hugging Face"), ``none`` (no system turn:
    the conversation rendered with a marked system turn, that turn cut out; what the template
    renders for no message at all, e.g. a BOS token, is kept) or the system turn's text."""

    def render(msgs: list[dict], gen: bool = generation) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    if system == "default":
        return render(messages)
    turn = [{"role": "system", "content": system if system != "none" else _SYSTEM_MARK}]
    try:
        full, alone = render(turn + messages), render(turn, False)
    except Exception as exc:  # jinja's TemplateError: the template takes no system turn
        if system == "none":
            return render(messages)
        raise DataError(
            f"--system-prompt: the chat template takes no system turn ({exc})"
        ) from None
    if system != "none":
        return full
    try:
        lead = render([], False)
    except Exception:  # a template that reads messages[0]
        lead = ""
    if (
        not (alone.startswith(lead) and full.startswith(alone))
        or _SYSTEM_MARK in full[len(alone) :]
    ):
        raise DataError("--system-prompt none: the chat template's system turn cannot be cut out")
    return lead + full[len(alone) :]


def chat_prefix(tokenizer, prompt: str, system: str = "default") -> str:
    """The formatted prompt up to where the assistant's answer starts (generation prompt);
    ``system`` as in ``render_chat``. Without a chat template: the prompt and a newline (after
    the system text and a newline when one is given)."""
    if getattr(tokenizer, "chat_template", None):
        return render_chat(tokenizer, [{"role": "user", "content": prompt}], system, True)
    lead = "" if system in ("default", "none") else system + "\n"
    return lead + prompt + "\n"


def tokenize_example(
    tokenizer,
    example: Example,
    loss_on: str = "response",
    max_length: int | None = None,
    system: str = "default",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-format ``example`` (``system`` as in ``render_chat``) and mask its labels.

    Returns ``(input_ids: LongTensor[n], labels: LongTensor[n])``; labels follow the HF
    convention (aligned with input_ids, shifted inside the loss) and are -100 on the prompt
    when ``loss_on="response"``. The assistant turn ends with the end-of-turn token, which is
    labelled; trailing whitespace after it is dropped. ``max_length`` cuts from the right.
    """
    import torch

    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    prefix = chat_prefix(tokenizer, example.prompt, system)
    eos = tokenizer.eos_token or ""
    if getattr(tokenizer, "chat_template", None):
        turns = [
            {"role": "user", "content": example.prompt},
            {"role": "assistant", "content": example.response},
        ]
        full = render_chat(tokenizer, turns, system)
        if not full.startswith(prefix):
            raise DataError(f"{_origin(example)}: chat template does not extend the prompt")
        rest = full[len(prefix) :].rstrip()
    else:
        rest = example.response
    if eos and not rest.endswith(eos):
        rest = rest + eos
    prefix_ids = _encode(tokenizer, prefix)
    rest_ids = _encode(tokenizer, rest)
    input_ids = torch.tensor(prefix_ids + rest_ids, dtype=torch.long)
    labels = input_ids.clone()
    if loss_on == "response":
        labels[: len(prefix_ids)] = IGNORE_INDEX
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return input_ids, labels


@dataclass(frozen=True)
class Tokenized:
    """A tokenized example: ids[n], labels[n]; ``n_tokens`` = n."""

    example: Example
    input_ids: torch.Tensor
    labels: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.numel())


def _loss_tokens(labels: torch.Tensor) -> int:
    """Tokens whose prediction enters the loss (label t is predicted at t - 1: not position 0)."""
    return int((labels[1:] != IGNORE_INDEX).sum())


def tokenize_all(
    tokenizer,
    examples: Sequence[Example],
    loss_on: str = "response",
    max_length: int | None = None,
    system: str = "default",
) -> list[Tokenized]:
    """Tokenize every example (``system`` as in ``render_chat``); warn naming the ones
    ``max_length`` cut. DataError naming the
    example's file and line when one has no loss-bearing token (its loss would be undefined):
    its text gives none, or ``max_length`` cut all of them away."""
    out, cut = [], []
    what = "response" if loss_on == "response" else "example"
    for ex in examples:
        ids, labels = tokenize_example(tokenizer, ex, loss_on=loss_on, system=system)
        if _loss_tokens(labels) == 0:
            raise DataError(
                f"{_origin(ex)}: no loss-bearing token: the {what} gives no token after "
                "tokenisation"
            )
        if max_length is not None and ids.numel() > max_length:
            cut.append(ex.id)
            n = int(ids.numel())
            first = int((labels[1:] != IGNORE_INDEX).nonzero()[0, 0]) + 2  # 1-based
            ids, labels = ids[:max_length], labels[:max_length]
            if _loss_tokens(labels) == 0:
                raise DataError(
                    f"{_origin(ex)}: no loss-bearing token left: --max-length {max_length} cuts "
                    f"the {what} away (its first loss-bearing token is token {first} of {n}; "
                    f"use --max-length {first} or more)"
                )
        out.append(Tokenized(ex, ids, labels))
    if cut:
        shown = ", ".join(cut[:10]) + (f" and {len(cut) - 10} more" if len(cut) > 10 else "")
        log.warning("--max-length %d cut %d example(s): %s", max_length, len(cut), one_line(shown))
    return out


def example_losses(logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-example loss [bsz] from logits [bsz, n, V] and HF-style labels [bsz, n]: the token
    cross-entropy of position t predicting label t + 1 over labels != -100, summed, divided by
    the number of such tokens (at least 1) when ``reduction == "mean"``."""
    import torch

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    token_loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    per_example = token_loss.sum(1)
    if reduction == "mean":
        per_example = per_example / (shift_labels != IGNORE_INDEX).sum(1).clamp(min=1)
    return per_example
