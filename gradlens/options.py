"""One options dataclass per CLI command. Each field's metadata (help, choices, minimum) generates
the argparse option and validates the Python API's calls, so an option is spelled once.

``ComputeOptions`` fields marked ``key=True`` change the numbers a run stores: they go into the
run's ``ComputeConfig`` (whose hash is the run id); the others (device, memory, batch size,
progress) do not change the numbers beyond float round-off.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gradlens.errors import GradLensError

T = TypeVar("T")
_REQUIRED = dataclasses.MISSING

#: Which tokens carry the loss: the response's, or every token of the example.
LOSS_ON = ("response", "all")
#: How an example's token losses make its loss: their mean or their sum.
REDUCTIONS = ("mean", "sum")
#: The text BM25 ranks the training examples by, for each query.
BM25_ON = ("prompt", "prompt+response")
#: What ``gradlens paraphrase`` rewrites (with "prompt", the response is the original's).
PARAPHRASE_FIELDS = ("prompt", "prompt+response")


def option(
    default: Any = _REQUIRED,
    *,
    help: str,
    choices: tuple[str, ...] | None = None,
    minimum: int | None = None,
    key: bool = False,
    metavar: str | None = None,
    repeat: bool = False,
    flag: str | None = None,
) -> Any:
    """A dataclass field carrying its CLI metadata. ``repeat``: the flag may be given several
    times (a tuple of strings). ``flag``: the option's spelling where it is not ``--<name>``
    (e.g. ``--from``, which cannot be a field name)."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "key": key}
    meta |= {"metavar": metavar, "repeat": repeat, "flag": flag}
    if repeat:
        return field(default_factory=tuple, metadata=meta)
    return field(default=default, metadata=meta)


def system_prompt_option(key: bool) -> Any:
    """``--system-prompt`` of ``compute`` (in the run key) and ``generate``."""
    return option(
        "default",
        help="system turn: default (what the chat template inserts), none (no system turn) or "
        "TEXT (a dataset's own system turns are ignored)",
        metavar="default|none|TEXT",
        key=key,
    )


#: The data files every command reads (``--train``, ``--queries``).
DATA_FILES = (
    ".jsonl/.csv/.parquet, a datasets folder (save_to_disk) or .arrow file, or "
    "hf:NAME[:CONFIG[:SPLIT]] from the local datasets cache"
)


def columns_option(which: str = "both data files") -> Any:
    """``--columns`` (and ``--train-columns`` / ``--query-columns``): the columns holding the
    fields of ``which``. Never in the run key: the examples' content is."""
    return option(
        None,
        help=f"columns of {which}: prompt=COL,response=COL,id=COL (messages=COL: a chat column)",
        metavar="FIELD=COL,...",
    )


def batch_size_option() -> Any:
    """``--batch-size`` of the commands that run gradient passes."""
    return option(None, help="examples per pass (default: cpu 1, cuda 8)", minimum=1)


def adapter_option() -> Any:
    """``--adapter`` of the commands that compute a run (its content hash in the run key, its
    path in the run's config only)."""
    return option(
        None,
        help="a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) put on "
        "--model: the components are its matrices (L3.q.lora_A, L3.q.lora_B), the base's left out",
        metavar="DIR",
        key=True,
    )


def adapter_merge_option() -> Any:
    """``--adapter-merge`` of the commands that compute a run (in the run key)."""
    return option(
        False,
        help="merge --adapter into the base weights: the components are the merged model's",
        key=True,
    )


def _flag(f: dataclasses.Field) -> str:
    """The field's CLI flag: its ``flag`` metadata, else ``--<name>`` with dashes."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _base_type(f: dataclasses.Field) -> str:
    """'int', 'str' or 'bool' from the field's annotation (a string under postponed eval)."""
    text = str(f.type)
    for name in ("bool", "int", "float"):
        if text.startswith(name):
            return name
    return "str"


def validate(options: object) -> None:
    """Check every field against its metadata; GradLensError naming the flag otherwise."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if value is None or f.metadata.get("repeat"):
            continue
        kind = _base_type(f)
        flag = _flag(f)
        if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            raise GradLensError(f"{flag}: expected an integer, got {value!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise GradLensError(f"{flag}: expected one of {', '.join(choices)}, got {value!r}")
        minimum = f.metadata.get("minimum")
        if minimum is not None and value < minimum:
            raise GradLensError(f"{flag} must be at least {minimum}, got {value}")


def _int_type(minimum: int | None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one argparse option per field of the options dataclass ``cls``."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        kind = _base_type(f)
        if kind == "bool":
            kwargs["action"] = "store_true"
        elif meta["repeat"]:
            kwargs |= {"action": "append", "default": [], "metavar": meta["metavar"]}
        else:
            if f.default is _REQUIRED:
                kwargs["required"] = True
            else:
                kwargs["default"] = f.default
            if kind == "int":
                kwargs["type"] = _int_type(meta["minimum"])
            if meta["choices"]:
                kwargs["choices"] = list(meta["choices"])
            if meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
        parser.add_argument(_flag(f), **kwargs)


def to_argv(options: object) -> list[str]:
    """The command-line arguments that give ``options`` (the inverse of ``from_namespace``):
    every field that differs from its default, as ``add_options`` spells it."""
    argv: list[str] = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        default = () if f.metadata.get("repeat") else f.default
        if value == default or value is None:
            continue
        flag = _flag(f)
        if _base_type(f) == "bool":
            argv.append(flag)
        elif f.metadata.get("repeat"):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def from_namespace(cls: type[T], ns: argparse.Namespace) -> T:
    """The options dataclass ``cls`` from parsed arguments (repeat fields become tuples)."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(ns, f.name)
        values[f.name] = tuple(value) if f.metadata.get("repeat") else value
    return cls(**values)


class _Validated:
    def __post_init__(self) -> None:
        validate(self)


#: What ``--index`` takes (``compute`` and ``index``).
INDEX_HELP = (
    "keep per-component vectors of every training example and query for full-set retrieval: "
    "METHOD:FRACTION (as --project), METHOD:dN (d_c = min(N, P_c)) or exact:NAME+NAME (the "
    "named components' gradients), each optionally :float16; e.g. sjlt:d64"
)


@dataclass(frozen=True)
class ComputeOptions(_Validated):
    """``gradlens compute``: per-component gradient dot products into DuckDB (resumable)."""

    train: str = option(help=f"training set: {DATA_FILES}")
    queries: str = option(help="query set (as --train); ids name their originals")
    db: str = option(help="DuckDB file (created if missing)")
    columns: str | None = columns_option()
    train_columns: str | None = columns_option("the training set (over --columns)")
    query_columns: str | None = columns_option("the query set (over --columns)")
    model: str = option("smollm2", help="smollm2 | local HF folder | cached hub id", key=True)
    adapter: str | None = adapter_option()
    adapter_merge: bool = adapter_merge_option()
    run: str | None = option(None, help="run name (default: <queries file>-<key>)")
    candidates: int = option(5, help="BM25 candidates b per query", minimum=1, key=True)
    bm25_on: str = option("prompt", help="text BM25 ranks", choices=BM25_ON, key=True)
    loss_on: str = option("response", help="tokens in the loss", choices=LOSS_ON, key=True)
    reduction: str = option(
        "mean",
        help="loss over tokens (sum scales every dot product but changes no cosine)",
        choices=REDUCTIONS,
        key=True,
    )
    max_length: int | None = option(
        None, help="cut examples to N tokens (warns; at least 2)", minimum=2, key=True
    )
    device: str = option("cpu", help="cpu | cuda | auto")
    dtype: str = option("float32", help="model dtype", choices=("float32", "bf16"), key=True)
    system_prompt: str = system_prompt_option(key=True)
    project: str | None = option(
        None,
        help="projections METHOD:FRACTION,... with METHOD gaussian, sjlt, kron (Kronecker "
        "CountSketch of the factors) or trak; e.g. sjlt:0.01,gaussian:0.001",
        key=True,
    )
    seed: int = option(0, help="projection seed", key=True)
    index: str | None = option(None, help=INDEX_HELP + " (not in the run key)")
    max_memory: str | None = option(
        None, help="gradient cache budget, e.g. 8G (default: 70%% of free memory - 1G)"
    )
    batch_size: int | None = batch_size_option()
    trust_remote_code: bool = option(False, help="allow model code from disk")
    no_progress: bool = option(False, help="no progress bar")


@dataclass(frozen=True)
class IndexOptions(_Validated):
    """``gradlens index``: index a training set on its own (no queries) for full-set retrieval."""

    train: str = option(help=f"training set: {DATA_FILES}")
    db: str = option(help="DuckDB file (created if missing)")
    index: str = option(help=INDEX_HELP)
    columns: str | None = columns_option("the training set")
    model: str = option("smollm2", help="smollm2 | local HF folder | cached hub id", key=True)
    adapter: str | None = adapter_option()
    adapter_merge: bool = adapter_merge_option()
    run: str | None = option(None, help="run name (default: <training file>-<key>)")
    loss_on: str = option("response", help="tokens in the loss", choices=LOSS_ON, key=True)
    reduction: str = option("mean", help="loss over tokens", choices=REDUCTIONS, key=True)
    max_length: int | None = option(
        None, help="cut examples to N tokens (warns; at least 2)", minimum=2, key=True
    )
    device: str = option("cpu", help="cpu | cuda | auto")
    dtype: str = option("float32", help="model dtype", choices=("float32", "bf16"), key=True)
    system_prompt: str = system_prompt_option(key=True)
    seed: int = option(0, help="projection seed", key=True)
    trust_remote_code: bool = option(False, help="allow model code from disk")
    batch_size: int | None = batch_size_option()
    no_progress: bool = option(False, help="no progress bar")


@dataclass(frozen=True)
class GenerateOptions(_Validated):
    """``gradlens generate``: the model-generated query set (greedy completions)."""

    queries: str = option(help="paraphrased queries (their prompts are used; as compute --train)")
    out: str = option(help="output JSONL")
    model: str = option("smollm2", help="smollm2 | local HF folder | cached hub id")
    max_new_tokens: int = option(200, help="tokens per completion", minimum=1)
    system_prompt: str = system_prompt_option(key=False)
    device: str = option("cpu", help="cpu | cuda | auto")
    columns: str | None = columns_option("the query set")
    no_progress: bool = option(False, help="no progress bar")
    adapter: str | None = option(
        None,
        help="a PEFT LoRA adapter folder merged into --model: the completions are the adapted "
        "model's (the set for a run computed with compute --adapter)",
        metavar="DIR",
    )


@dataclass(frozen=True)
class ParaphraseOptions(_Validated):
    """``gradlens paraphrase``: the paraphrased query set from an OpenAI-compatible endpoint."""

    train: str = option(help="training set whose examples get twins (as compute --train)")
    out: str = option(help="output JSONL: the query set, with the training set's ids")
    endpoint: str = option(
        help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (a local server) or "
        "https://api.openai.com/v1",
        metavar="URL",
    )
    model: str = option(help="model name as the endpoint knows it", metavar="NAME")
    api_key_env: str | None = option(
        None,
        help="name of the environment variable holding the API key (the key itself is never "
        "an argument; default: no key, for local servers)",
        metavar="VAR",
    )
    field: str = option(
        "prompt+response",
        help="what is paraphrased; with 'prompt' the response is the original's",
        choices=PARAPHRASE_FIELDS,
    )
    concurrency: int = option(
        4, help="requests in flight (1 for a local server on a few CPU cores)", minimum=1
    )
    temperature: float = option(0.7, help="sampling temperature, 0 to 2", metavar="T")
    seed: int | None = option(None, help="sampling seed sent to the endpoint, where it uses one")
    max_tokens: int = option(
        0, help="token limit per answer (0: 1.5 times the original's length, plus 16)", minimum=0
    )
    retries: int = option(
        6, help="retries per request on 429/5xx, timeouts and lost connections", minimum=0
    )
    timeout: int = option(
        600, help="seconds to wait for one answer (a local CPU server can take minutes)", minimum=1
    )
    columns: str | None = columns_option("the training set")
    no_progress: bool = option(False, help="no progress bar")

    def __post_init__(self) -> None:
        # argparse hands the temperature over as text (add_options types ints only)
        try:
            temperature = float(self.temperature)
        except (TypeError, ValueError):
            raise GradLensError(
                f"--temperature: expected a number, got {self.temperature!r}"
            ) from None
        if not 0.0 <= temperature <= 2.0:
            raise GradLensError(f"--temperature must be between 0 and 2, got {temperature:g}")
        object.__setattr__(self, "temperature", temperature)
        super().__post_init__()
        if self.api_key_env is not None and not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env
        ):
            # never echo it: it may be the key itself, pasted where its variable's name belongs
            raise GradLensError(
                "--api-key-env takes the NAME of an environment variable holding the key "
                "(e.g. OPENAI_API_KEY), not the key"
            )
        if not re.match(r"https?://[^/\s]+", self.endpoint.strip()):
            raise GradLensError(
                "--endpoint: expected an http(s) URL such as http://127.0.0.1:8000/v1"
            )


@dataclass(frozen=True)
class RunsOptions(_Validated):
    """``gradlens runs``: list the runs in a database."""

    db: str = option(help="DuckDB file")


@dataclass(frozen=True)
class ExportOptions(_Validated):
    """``gradlens export``: write every table of a run as Parquet files."""

    db: str = option(help="DuckDB file")
    run: str = option(help="run name or id")
    out: str | None = option(None, help="output folder (every table)")
    modules: bool = option(
        False,
        help="print the modules of --subset or --greedy as bergson names them, for its --modules",
    )
    subset: str | None = option(
        None, help="with --modules: components NAME,NAME...", metavar="NAME,NAME..."
    )
    greedy: int | None = option(
        None, help="with --modules: the first K components of the greedy curve", minimum=1
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.modules:
            if self.subset is not None or self.greedy is not None:
                raise GradLensError("--subset and --greedy go with --modules")
            if self.out is None:
                raise GradLensError("export needs --out DIR (or --modules)")
            return
        if self.out is not None:
            raise GradLensError("--modules prints a module list: drop --out")
        if (self.subset is None) == (self.greedy is None):
            raise GradLensError("--modules needs either --subset NAMES or --greedy K")


@dataclass(frozen=True)
class ImportOptions(_Validated):
    """``gradlens import``: restore an exported run, or import long tables of dot products."""

    db: str = option(help="DuckDB file (created if missing)")
    folder: str | None = option(
        None,
        help="folder written by `gradlens export`: restore that run as it is (a no-op when "
        "already restored from the same files)",
        flag="--from",
        metavar="DIR",
    )
    run: str | None = option(None, help="name of the new run (long tables)")
    dots: str | None = option(None, help="Parquet/CSV: query_id, candidate_id, component, dot")
    norms: str | None = option(None, help="Parquet/CSV: split, example_id, component, sqnorm")
    n_params: str | None = option(None, help="JSON {parameter name: count}, in component order")
    filter: tuple[str, ...] = option(
        help="keep rows whose column COL equals VALUE", metavar="COL=VALUE", repeat=True
    )
    bergson_train: str | None = option(
        None,
        help="a bergson gradient store of the training set (info.json, gradients.bin and data.hf "
        "with its id and text columns: bergson build --drop_columns False)",
        metavar="DIR",
    )
    bergson_queries: str | None = option(
        None,
        help="the bergson gradient store of the queries (ids name their originals)",
        metavar="DIR",
    )
    candidates: int | None = option(
        None, help="BM25 candidates b per query of a bergson import (default 5)", minimum=1
    )
    all_pairs: bool = option(
        False, help="bergson import: every (query, training example) pair instead of BM25's"
    )
    columns: str | None = columns_option("both bergson stores' datasets")

    def __post_init__(self) -> None:
        super().__post_init__()
        flags = {f.name: _flag(f) for f in dataclasses.fields(self)}
        if self._bergson(flags):
            return
        long_tables = ("run", "dots", "norms", "n_params", "filter")
        if self.folder is not None:
            given = [flags[n] for n in long_tables if getattr(self, n)]
            if given:
                raise GradLensError(
                    f"{flags['folder']} restores an exported run as it is: drop "
                    f"{', '.join(given)} (or drop {flags['folder']} to import long tables)"
                )
        else:
            missing = [flags[n] for n in ("run", "dots", "norms") if getattr(self, n) is None]
            if missing:
                raise GradLensError(
                    f"import needs {flags['folder']} DIR or --run NAME --dots F --norms F "
                    f"(missing: {', '.join(missing)})"
                )

    def _bergson(self, flags: dict[str, str]) -> bool:
        """True for an import of two bergson stores (checked); False for the other imports."""
        own = ("bergson_train", "bergson_queries", "candidates", "all_pairs", "columns")
        if self.bergson_train is None and self.bergson_queries is None:
            given = [flags[n] for n in own if getattr(self, n)]
            if given:
                raise GradLensError(
                    f"{', '.join(given)} go with --bergson-train DIR --bergson-queries DIR"
                )
            return False
        tables = ("folder", "dots", "norms", "n_params", "filter")
        given = [flags[n] for n in tables if getattr(self, n)]
        if given:
            raise GradLensError(f"a bergson import takes no {', '.join(given)}")
        need = ("run", "bergson_train", "bergson_queries")
        missing = [flags[n] for n in need if getattr(self, n) is None]
        if missing:
            raise GradLensError(
                "a bergson import needs --run NAME --bergson-train DIR --bergson-queries DIR "
                f"(missing: {', '.join(missing)})"
            )
        if self.candidates is not None and self.all_pairs:
            raise GradLensError("--candidates and --all-pairs exclude each other")
        return True


@dataclass(frozen=True)
class SelectOptions(_Validated):
    """``gradlens select``: headline table and greedy selection curves (stored in the DB)."""

    db: str = option(help="DuckDB file")
    run: str = option(help="run name or id")
    folds: int = option(5, help="k for held-out evaluation", minimum=1)
    seed: int = option(0, help="seed of the folds, the bootstrap and the null draws")
    null_draws: int = option(
        20,
        help="draws of the permutation null of the in-sample selected rows (0: none)",
        minimum=0,
    )
    json: bool = option(False, help="print one JSON object (headline rows and costs)")
    full_set_greedy: bool = option(
        False,
        help="also select greedily by full-set recall@1 (in-sample and held out; needs an "
        "index: compute --index)",
    )


@dataclass(frozen=True)
class RankOptions(_Validated):
    """``gradlens rank``: the training examples whose gradients are closest to one query's."""

    db: str = option(help="DuckDB file")
    run: str = option(help="run name or id (with an index: compute --index)")
    query_id: str | None = option(None, help="a query of the run")
    prompt: str | None = option(None, help="a query's prompt (free text)")
    response: str | None = option(None, help="the response to --prompt")
    generate: bool = option(False, help="let the run's model write the response to --prompt")
    subset: str | None = option(
        None,
        help="components NAME,NAME... (default: every component the index holds)",
        metavar="NAME,NAME...",
    )
    method: str | None = option(None, help="an indexed method (default: the first indexed)")
    top: int = option(10, help="training examples shown", minimum=1)
    json: bool = option(False, help="print one JSON object")
    max_new_tokens: int = option(200, help="tokens --generate writes at most", minimum=1)
    device: str = option("cpu", help="cpu | cuda | auto (free text only)")
    trust_remote_code: bool = option(False, help="allow model code from disk")

    def __post_init__(self) -> None:
        super().__post_init__()
        text = self.prompt is not None
        if (self.query_id is not None) == text:
            raise GradLensError("rank needs either --query-id ID or --prompt TEXT")
        if text and (self.response is not None) == self.generate:
            raise GradLensError("--prompt needs either --response TEXT or --generate")
        if not text and (self.response is not None or self.generate):
            raise GradLensError("--response and --generate go with --prompt, not --query-id")


@dataclass(frozen=True)
class LensRanksOptions(_Validated):
    """``gradlens lens-ranks``: the backward lens over many prompts (the Backward Lens paper's
    Fig. 4: how often rank(grad FF1) equals the prompt length, by layer; and the shift)."""

    prompts: str = option(
        help='JSONL, one {"prompt": ..., "target": ...} a line (optional "id"): raw text, no '
        "chat template; the target's first token (with its leading space) is scored"
    )
    model: str = option("smollm2", help="smollm2 | local HF folder | cached hub id")
    out: str | None = option(None, help="CSV: one row per (prompt, layer)")
    device: str = option("cpu", help="cpu | cuda | auto")
    trust_remote_code: bool = option(False, help="allow model code from disk")
    no_progress: bool = option(False, help="no progress bar")
    adapter: str | None = option(
        None,
        help="a PEFT LoRA adapter folder, merged into --model (as on the lens pages)",
        metavar="DIR",
    )


#: Command name -> its options dataclass (the CLI's subcommands, in help order).
COMMANDS: dict[str, type] = {
    "compute": ComputeOptions,
    "index": IndexOptions,
    "generate": GenerateOptions,
    "paraphrase": ParaphraseOptions,
    "runs": RunsOptions,
    "export": ExportOptions,
    "import": ImportOptions,
    "select": SelectOptions,
    "lens-ranks": LensRanksOptions,
    "rank": RankOptions,
}
