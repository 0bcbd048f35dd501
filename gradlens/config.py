"""Run configuration: a frozen dataclass whose stable hash is the run key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass

CONFIG_VERSION = 1  # bump when a change alters the numbers a run stores
#: Version of each projection method's definition, in the key of runs that use the method (so a
#: change to one sketch never re-keys exact-only runs). sjlt 2: the block-structured hash.
PROJECTION_VERSIONS = {"sjlt": 2}
#: How the data files were read: the columns mapped (``FIELD=COL,...``) and ``str(row index)``
#: when the training set had no ids. Stored when set, never in the key: the content hashes are.
DATA_READING = ("train_columns", "query_columns", "train_ids")


@dataclass(frozen=True)
class ComputeConfig:
    """Everything that determines a compute run's numbers.

    model: the ``--model`` spec; model_hash: hash of the weights (``model_fingerprint``);
    train_hash / queries_hash: ``data.content_hash`` of each dataset; projections: e.g.
    ``("sjlt:0.01",)``; system_prompt: ``default``, ``none`` or the system turn's text (in the
    key only when not ``default``); adapter: the ``--adapter`` folder (a path, not in the key),
    adapter_hash: ``adapter_fingerprint`` of it and adapter_merge (both in the key only with an
    adapter, so a run without one keeps its id; with one, model_hash is the fingerprint of the
    model as computed: the adapter's layers in it, or merged). Device, batch size and memory
    budget are not part of the key: they do not change the numbers beyond float round-off;
    nor are ``DATA_READING``'s fields (the columns read, ids from the row index).
    """

    model: str
    model_hash: str
    train_hash: str
    queries_hash: str
    train_path: str
    queries_path: str
    candidates: int = 5
    bm25_on: str = "prompt"
    loss_on: str = "response"
    reduction: str = "mean"
    max_length: int | None = None
    dtype: str = "float32"
    system_prompt: str = "default"
    projections: tuple[str, ...] = ()
    seed: int = 0
    adapter: str | None = None
    adapter_hash: str | None = None
    adapter_merge: bool = False
    train_columns: str | None = None
    query_columns: str | None = None
    train_ids: str | None = None

    def _stored(self) -> dict:
        """The fields as stored: the adapter's only when there is one (runs from before it)."""
        fields = asdict(self)
        if self.adapter is None:
            for name in ("adapter", "adapter_hash", "adapter_merge"):
                fields.pop(name)
        for name in DATA_READING:
            if fields[name] is None:
                fields.pop(name)
        return fields

    def key(self) -> str:
        """Stable 16-hex run id: hash of the fields that change the numbers (not paths)."""
        fields = self._stored()
        fields.pop("train_path")
        fields.pop("queries_path")
        fields.pop("adapter", None)
        for name in DATA_READING:
            fields.pop(name, None)
        fields["version"] = CONFIG_VERSION
        if self.system_prompt == "default":  # the key of runs from before the option
            fields.pop("system_prompt")
        methods = sorted({p.split(":")[0] for p in self.projections} & set(PROJECTION_VERSIONS))
        if methods:
            fields["projection_versions"] = {m: PROJECTION_VERSIONS[m] for m in methods}
        blob = json.dumps(fields, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_options(
        cls,
        options: object,
        model_hash: str,
        train_hash: str,
        queries_hash: str,
        projections: tuple[str, ...],
        adapter_hash: str | None = None,
    ) -> ComputeConfig:
        """The config of a compute run: every ``key=True`` field of ``ComputeOptions`` (``project``
        as its parsed labels ``projections``), the content hashes and the data paths."""
        key_fields = {
            f.name: getattr(options, f.name)
            for f in dataclasses.fields(options)
            if f.metadata.get("key") and f.name != "project"
        }
        return cls(
            **key_fields,
            model_hash=model_hash,
            train_hash=train_hash,
            queries_hash=queries_hash,
            train_path=str(options.train),
            queries_path=str(options.queries),
            projections=projections,
            adapter_hash=adapter_hash,
        )

    def to_json(self) -> str:
        return json.dumps(self._stored(), sort_keys=True)
