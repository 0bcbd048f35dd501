"""LoRA adapters (``peft``) on a loaded base model: a local folder checked before anything loads
(LoRA only, weights from safetensors only, like the models), hashed for the run key, and applied
either as layers of their own, whose matrices become the components (``L3.q.lora_A``; the base
matrices are left out: LESS attributes with exactly these gradients), or merged into the base
weights (``W + s·B A``: the model's own components, the model the lenses run on).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from gradlens.errors import GradLensError
from gradlens.models.naming import lora_part

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLED_ADAPTER = "adapter_model.bin"
#: LoRA settings whose matrices are not plain linear layers (or that train whole matrices
#: besides the adapter's): config key -> what it is.
_UNSUPPORTED = {
    "use_dora": "DoRA (weight-decomposed LoRA)",
    "modules_to_save": "whole modules saved beside the adapter (modules_to_save)",
    "trainable_token_indices": "trainable token embeddings (trainable_token_indices)",
    "target_parameters": "LoRA on bare parameters (target_parameters)",
}


def check_adapter(path: str, merge: bool = False) -> dict:
    """The adapter folder's ``adapter_config.json`` as a dict; GradLensError (one line naming the
    folder or file) for anything but a local LoRA adapter with safetensors weights. ``merge``:
    settings that only the unmerged adapter cannot use (whole saved modules, ...) are allowed."""
    folder = Path(path)
    if not folder.is_dir():
        raise GradLensError(f"--adapter {path}: no such folder (a PEFT adapter folder)")
    config_file = folder / ADAPTER_CONFIG
    if not config_file.is_file():
        raise GradLensError(
            f"--adapter {path}: no {ADAPTER_CONFIG} (a folder written by peft's save_pretrained)"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GradLensError(f"{config_file}: not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise GradLensError(f"{config_file}: expected a JSON object")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise GradLensError(
            f"{config_file}: a PEFT adapter of type {peft_type}; GradLens reads LoRA adapters only "
            "(peft_type LORA)"
        )
    for key, what in _UNSUPPORTED.items():
        if config.get(key) and not (merge and key != "use_dora"):
            raise GradLensError(f"{config_file}: {what} is not supported")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        if (folder / PICKLED_ADAPTER).is_file():
            raise GradLensError(
                f"adapter folder {path} has only pickled weights ({PICKLED_ADAPTER}), which can "
                "run code when loaded; GradLens reads safetensors only (save the adapter with "
                "save_pretrained(safe_serialization=True) in a trusted environment)"
            )
        raise GradLensError(f"adapter folder {path} has no {ADAPTER_WEIGHTS}")
    return config


def check_adapter_options(adapter: str | None, merge: bool) -> None:
    """``--adapter`` and ``--adapter-merge`` checked before the model loads (one line)."""
    if merge and not adapter:
        raise GradLensError("--adapter-merge needs --adapter DIR")
    if adapter:
        check_adapter(adapter, merge)


def adapter_fingerprint(path: str) -> str:
    """Stable hash of the adapter's config and weights files (the adapter part of a run key:
    the weights, and the rank, alpha and targets that scale and place them)."""
    h = hashlib.blake2b(digest_size=16)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        h.update(name.encode())
        with open(Path(path) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def has_lora(model: nn.Module) -> bool:
    """True when ``model`` carries an unmerged LoRA adapter (``apply_adapter`` without merge)."""
    return any(lora_part(name) is not None for name, _ in model.named_modules())


def _check_linear(model: nn.Module, path: str) -> None:
    """GradLensError unless every adapter parameter belongs to a ``lora_A`` / ``lora_B`` linear
    layer (LoRA on embeddings or convolutions keeps its matrices elsewhere)."""
    owners = {id(p): (n, m) for n, m in model.named_modules() for p in m.parameters(False)}
    for pname, param in model.named_parameters():
        if "lora_" not in pname:
            continue
        mname, module = owners[id(param)]
        if lora_part(mname) is None or not isinstance(module, nn.Linear):
            raise GradLensError(
                f"adapter {path}: {pname} is not a LoRA matrix of a linear layer (LoRA on "
                "embeddings or convolutions is supported only with --adapter-merge)"
            )


def apply_adapter(model: nn.Module, path: str, merge: bool = False) -> nn.Module:
    """``model`` with the LoRA adapter in folder ``path`` (checked by ``check_adapter``): merged
    into its weights (``merge``; a plain model again), or as ``peft``'s LoRA layers inside it,
    the model itself returned (its modules ``...q_proj.base_layer`` and
    ``...q_proj.lora_A.default``). In eval mode, on the model's device."""
    from peft import PeftModel

    check_adapter(path, merge)
    device = next(model.parameters()).device
    try:
        wrapped = PeftModel.from_pretrained(
            model, path, is_trainable=False, torch_device=str(device)
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GradLensError(f"cannot load adapter {path}: {msg}") from None
    net = wrapped.merge_and_unload() if merge else wrapped.get_base_model()
    if not merge:
        _check_linear(net, path)
    return net.eval()
