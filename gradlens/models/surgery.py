"""Architecture access: the final norm, the unembedding and the logit lens, the MLP matrices per
layer, the model's device, and the frozen-parameters context every gradient computation runs in.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from gradlens.errors import GradLensError
from gradlens.models.loading import discover_components
from gradlens.models.naming import FIRST_MLP_KINDS

#: Kinds of the MLP's last matrix (the output whose gradient the backward lens reads).
LAST_MLP_KINDS: tuple[str, ...] = ("down", "fc_out")
#: Where known families keep their final norm (the first match wins).
FINAL_NORM_PATHS: tuple[str, ...] = (
    "model.norm",  # Llama / Mistral / Qwen / OLMo
    "transformer.ln_f",  # GPT-2
    "gpt_neox.final_layer_norm",  # GPT-NeoX / Pythia
    "model.decoder.final_layer_norm",  # OPT
    "model.final_layernorm",  # Phi
)


@contextmanager
def frozen(
    model: nn.Module, keep: Iterable[torch.Tensor] = (), eval_mode: bool = True
) -> Iterator[None]:
    """Every parameter of ``model`` frozen for the block, but the tensors in ``keep``.

    On entry each parameter's ``requires_grad`` is saved and set to False, then True for the
    tensors in ``keep``; with ``eval_mode`` the model is also put in eval mode. On exit (also on
    an exception) every flag, and with ``eval_mode`` the training mode, are restored. An object that
    holds the model frozen for its lifetime enters it through a ``contextlib.ExitStack``.
    """
    training = model.training
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if eval_mode:
            model.eval()
        for p, _ in saved:
            p.requires_grad_(False)
        for w in keep:
            w.requires_grad_(True)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
        if eval_mode:
            model.train(training)


def final_norm(model: nn.Module) -> nn.Module:
    """The model's final norm (``model.norm``, ``transformer.ln_f``,
    ``gpt_neox.final_layer_norm``, …); GradLensError for a model that has none of them."""
    for path in FINAL_NORM_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.Module):
            return obj
    raise GradLensError(
        f"cannot find the final norm of {type(model).__name__} (looked for "
        f"{', '.join(FINAL_NORM_PATHS)}): the logit lens supports Llama, GPT-2 and GPT-NeoX "
        "families"
    )


def unembedding(model: nn.Module) -> nn.Module:
    """The output embedding (hidden state -> logits); GradLensError for a model without one."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is None:
        raise GradLensError(f"{type(model).__name__} has no output embedding (unembedding)")
    return out


def logit_lens(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Logits ``unembed(final_norm(h'))`` for vectors ``h`` [..., d], each scaled to unit RMS
    first (``h' = h / rms(h)``; a zero vector stays zero). Float32, no gradient."""
    with torch.no_grad():
        h = h.float()
        rms = h.pow(2).mean(-1, keepdim=True).sqrt()
        h = h / torch.where(rms > 0, rms, torch.ones_like(rms))
        norm = final_norm(model)
        dtype = next(norm.parameters(), h).dtype
        return unembedding(model)(norm(h.to(dtype))).float()


def mlp_modules(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """Per layer, the MLP's first matrix (``up``/``fc_in``) and last (``down``/``fc_out``)."""
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise GradLensError("the backward lens supports decoder-only models only")
    modules = dict(model.named_modules())
    first: dict[int, nn.Module] = {}
    last: dict[int, nn.Module] = {}
    for comp in discover_components(model):
        if comp.layer is None:
            continue
        if comp.kind in FIRST_MLP_KINDS:
            first[comp.layer] = modules[comp.module]
        elif comp.kind in LAST_MLP_KINDS:
            last[comp.layer] = modules[comp.module]
    layers = sorted(first)
    if not layers or layers != sorted(last) or layers != list(range(len(layers))):
        raise GradLensError(
            f"cannot find one first ({'/'.join(FIRST_MLP_KINDS)}) and one last "
            f"({'/'.join(LAST_MLP_KINDS)}) MLP matrix in every layer of {type(model).__name__}"
        )
    return [first[i] for i in layers], [last[i] for i in layers]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def last_logits_kwargs(model: nn.Module) -> dict:
    """``{"logits_to_keep": 1}`` when the model's forward takes it (the unembedding then runs on
    the last position only), else ``{}``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}
