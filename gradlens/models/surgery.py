"""Architecture access: the final norm, the unembedding, the model's device, and the
frozen-parameters context every gradient computation runs in."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from gradlens.errors import GradLensError

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
