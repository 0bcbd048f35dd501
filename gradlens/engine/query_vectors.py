"""Index vectors of free text: a query typed by a user, turned into the per-component vectors a
run's index holds, so that it can be ranked against every training example.

Everything comes from the run's stored config: its model (checked by weight fingerprint),
dtype, chat template and system prompt, loss tokens, reduction and max length; one
forward+backward with the ``GradientEngine``; the index method's projections built with the
run's seed (``projection.build_index_sets``) and its vectors taken by the compute job's own
``IndexExtractor``. A stored query's text thus gives that query's stored vectors (up to float
round-off). ``complete`` lets the model write the response first, as ``gradlens generate`` does
(greedy decoding).
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from gradlens.data.examples import Example, chat_prefix, tokenize_all
from gradlens.engine.capture import GradientEngine
from gradlens.engine.indexing import IndexExtractor
from gradlens.engine.projection import build_index_sets, parse_index_spec
from gradlens.errors import GradLensError
from gradlens.models.loading import discover_components, load_model, model_fingerprint

__all__ = ["check_model", "complete", "run_model", "text_vectors"]

#: The id a typed query gets inside the engine (never stored).
TYPED_ID = "typed query"
#: Weight fingerprints of the models checked so far (a model is hashed once per process).
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: Per model: {(index method, seed): (components, projection sets)} built so far.
_PROJECTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def run_model(config: dict, device: str = "cpu", trust_remote_code: bool = False):
    """(net, tokenizer) of the run whose stored config is ``config``, in the run's dtype, with
    the run's adapter (merged or not) where it had one."""
    return load_model(
        config["model"],
        device=device,
        trust_remote_code=trust_remote_code,
        dtype=config.get("dtype", "float32"),
        adapter=config.get("adapter"),
        adapter_merge=bool(config.get("adapter_merge", False)),
    )


def check_model(net, config: dict) -> None:
    """GradLensError unless ``net`` is the run's model (same weights, same dtype)."""
    want = config.get("dtype", "float32")
    have = next(net.parameters()).dtype
    if have != _DTYPES.get(want, have):
        raise GradLensError(f"the run computed its gradients in {want}; this model is {have}")
    if net not in _FINGERPRINTS:
        _FINGERPRINTS[net] = model_fingerprint(net)
    if config.get("model_hash") and _FINGERPRINTS[net] != config["model_hash"]:
        raise GradLensError(
            f"the loaded model is not the run's: its weights differ from those of "
            f"'{config.get('model')}' when the run was computed"
        )


def _projections(net, spec, seed: int):
    """(components, index projection sets) of ``net`` for ``spec`` and ``seed``, kept per model
    so that later queries reuse the projectors' drawn tables."""
    held = _PROJECTIONS.setdefault(net, {})
    if (spec.label, seed) not in held:
        components = discover_components(net)
        held[(spec.label, seed)] = components, build_index_sets([spec], components, seed, net)
    return held[(spec.label, seed)]


def _system(config: dict) -> str:
    return config.get("system_prompt", "default")


def complete(net, tokenizer, prompt: str, config: dict, max_new_tokens: int = 200) -> str:
    """The model's greedy answer to ``prompt`` under the run's chat template and system
    prompt ("(no answer)" when it writes nothing)."""
    dev = next(net.parameters()).device
    text = chat_prefix(tokenizer, prompt, _system(config))
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(dev)
    with torch.no_grad():
        out = net.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    return answer or "(no answer)"


def text_vectors(
    net, tokenizer, config: dict, method: str, prompt: str, response: str
) -> list[np.ndarray]:
    """The index vectors (float32, one per component ``method`` holds) of the example
    (``prompt``, ``response``) under the run's settings (module docstring). GradLensError when
    ``net`` is not the run's model or the text has no loss-bearing token."""
    if not prompt.strip() or not response.strip():
        raise GradLensError("a query needs a prompt and a response")
    check_model(net, config)
    (spec,) = parse_index_spec(method)
    tok = tokenize_all(
        tokenizer,
        [Example(TYPED_ID, prompt, response)],
        config.get("loss_on", "response"),
        config.get("max_length"),
        _system(config),
    )[0]
    components, sets = _projections(net, spec, int(config.get("seed", 0)))
    with GradientEngine(
        net, components, reduction=config.get("reduction", "mean"), index_projections=sets
    ) as engine:
        grads = engine.compute([tok])[0]
        extractor = IndexExtractor(engine, [spec], components, {"query": {TYPED_ID}})
        return extractor.vectors(grads)[spec.label]
