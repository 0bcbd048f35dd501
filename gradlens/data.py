"""Dataset loading (JSONL / CSV / Parquet), chat formatting and loss masking."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gradlens.errors import DataError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
LOSS_ON = ("response", "all")


@dataclass(frozen=True)
class Example:
    """One single-turn example: ``id`` (unique string), user ``prompt``, assistant ``response``."""

    id: str
    prompt: str
    response: str


def _from_record(record: object, where: str) -> Example:
    """Validate one parsed record; ``where`` is ``file:line`` for the error message."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record and "prompt" not in record:
        prompt, response = _from_messages(record["messages"], where)
    else:
        for field in ("prompt", "response"):
            if field not in record:
                raise DataError(f"{where}: missing field '{field}'")
        prompt, response = record["prompt"], record["response"]
    if "id" not in record:
        raise DataError(f"{where}: missing field 'id'")
    ex_id = record["id"]
    if not isinstance(ex_id, str) or not ex_id.strip():
        raise DataError(f"{where}: field 'id' must be a non-empty string, got {ex_id!r}")
    for field, value in (("prompt", prompt), ("response", response)):
        if not isinstance(value, str):
            raise DataError(
                f"{where}: field '{field}' must be a string, got {type(value).__name__}"
            )
        if not value.strip():
            raise DataError(f"{where}: field '{field}' is empty")
    return Example(id=ex_id, prompt=prompt, response=response)


def _from_messages(messages: object, where: str) -> tuple[object, object]:
    if not isinstance(messages, list):
        raise DataError(f"{where}: field 'messages' must be a list")
    turns = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
    roles = [m.get("role") if isinstance(m, dict) else None for m in turns]
    if roles != ["user", "assistant"]:
        raise DataError(
            f"{where}: field 'messages' must hold one user then one assistant turn, got {roles}"
        )
    for m in turns:
        if "content" not in m:
            raise DataError(f"{where}: field 'messages' has a turn without 'content'")
    return turns[0]["content"], turns[1]["content"]


def _read_jsonl(path: Path) -> list[Example]:
    examples = []
    raw = path.read_bytes()
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{lineno}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}: invalid UTF-8 (byte {exc.start})") from None
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: broken JSON ({exc.msg} at column {exc.colno})") from None
        examples.append(_from_record(record, where))
    return examples


def _read_table(path: Path) -> list[Example]:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            path.read_bytes().decode("utf-8")
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            first_line = 2  # header is line 1
        else:
            frame = pd.read_parquet(path)
            first_line = None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 (byte {exc.start})") from None
    except Exception as exc:  # noqa: BLE001 - parser errors are user errors here
        raise DataError(f"{path}: cannot parse ({str(exc).splitlines()[0]})") from None
    has_messages = "messages" in frame.columns
    for field in ("id",) + (() if has_messages else ("prompt", "response")):
        if field not in frame.columns:
            raise DataError(f"{path}: missing column '{field}'")
    examples = []
    for i, record in enumerate(frame.to_dict(orient="records")):
        where = f"{path}:{i + first_line}" if first_line else f"{path}: row {i}"
        if has_messages and not isinstance(record.get("messages"), str | type(None)):
            record["messages"] = [dict(m) for m in record["messages"]]
        examples.append(_from_record(record, where))
    return examples


def load_examples(path: str | Path) -> list[Example]:
    """Read a dataset file (``.jsonl``/``.json``, ``.csv``, ``.parquet``) into Examples.

    Raises DataError naming the file, the line and the field for any malformed input.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a .jsonl, .csv or .parquet file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        examples = _read_jsonl(path)
    elif suffix in (".csv", ".parquet"):
        examples = _read_table(path)
    else:
        raise DataError(f"{path}: unknown file type '{suffix}' (expected .jsonl, .csv, .parquet)")
    if not examples:
        raise DataError(f"{path}: no examples (empty file)")
    seen: dict[str, int] = {}
    for i, ex in enumerate(examples):
        if ex.id in seen:
            raise DataError(
                f"{path}: duplicate id '{ex.id}' (examples {seen[ex.id] + 1} and {i + 1})"
            )
        seen[ex.id] = i
    return examples


def check_queries(train: Sequence[Example], queries: Sequence[Example], queries_path: str) -> None:
    """Every query id must name its original in the training set."""
    train_ids = {ex.id for ex in train}
    for i, q in enumerate(queries):
        if q.id not in train_ids:
            raise DataError(
                f"{queries_path}: example {i + 1}: query id '{q.id}' has no original in the "
                "training set"
            )


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


def chat_prefix(tokenizer, prompt: str) -> str:
    """The formatted prompt up to where the assistant's answer starts (generation prompt)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt + "\n"


def tokenize_example(
    tokenizer, example: Example, loss_on: str = "response", max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-format ``example`` and mask its labels.

    Returns ``(input_ids: LongTensor[n], labels: LongTensor[n])``; labels follow the HF
    convention (aligned with input_ids, shifted inside the loss) and are -100 on the prompt
    when ``loss_on="response"``. The assistant turn ends with the end-of-turn token, which is
    labelled; trailing whitespace after it is dropped. ``max_length`` cuts from the right.
    """
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    prefix = chat_prefix(tokenizer, example.prompt)
    eos = tokenizer.eos_token or ""
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(
            [
                {"role": "user", "content": example.prompt},
                {"role": "assistant", "content": example.response},
            ],
            tokenize=False,
        )
        if not full.startswith(prefix):
            raise DataError(f"example '{example.id}': chat template does not extend the prompt")
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


def tokenize_all(
    tokenizer, examples: Sequence[Example], loss_on: str = "response", max_length: int | None = None
) -> list[Tokenized]:
    """Tokenize every example; warn naming the ones ``max_length`` cut; error if one has no
    labelled token left (its loss would be undefined)."""
    out, cut = [], []
    for ex in examples:
        ids, labels = tokenize_example(tokenizer, ex, loss_on=loss_on)
        if max_length is not None and ids.numel() > max_length:
            cut.append(ex.id)
            ids, labels = ids[:max_length], labels[:max_length]
        if int((labels[1:] != IGNORE_INDEX).sum()) == 0:
            raise DataError(
                f"example '{ex.id}': no labelled token left within --max-length {max_length}"
            )
        out.append(Tokenized(ex, ids, labels))
    if cut:
        shown = ", ".join(cut[:10]) + (f" and {len(cut) - 10} more" if len(cut) > 10 else "")
        log.warning("--max-length %d cut %d example(s): %s", max_length, len(cut), shown)
    return out


def example_losses(logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-example loss [bsz] from logits [bsz, n, V] and HF-style labels [bsz, n]: the token
    cross-entropy of position t predicting label t + 1 over labels != -100, summed, divided by
    the number of such tokens (at least 1) when ``reduction == "mean"``."""
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
