"""Component naming: the one table that maps a weight matrix's module/parameter name to the
user-facing ``(component, layer, kind)``. Used by model discovery, by ``gradlens import`` and by
every table and figure (``KINDS`` is the one column order).

Names: ``L3.gate`` for a decoder-only block; ``embed`` / ``pos_embed`` / ``lm_head`` for
model-wide matrices (layer None; BERT adds ``type_embed`` and ``head_dense``, the transform of
its masked-LM head). Encoder-decoder models (T5 family) prefix the stack and keep
cross-attention apart: ``enc.L2.q``, ``dec.L2.q`` (decoder self-attention), ``dec.L2.xq``
(cross-attention query); T5's relative-position table (block 0 of each stack) is ``rel_bias``.
A LoRA adapter's matrices (``peft``: ``q_proj.lora_A.default``) are kinds of their own, placed
after their base kind: ``L3.q.lora_A``, ``L3.q.lora_B``.
So that ``(layer, kind)`` stays unique within a model, ``layer`` is the depth index: encoder
blocks ``0..E-1``, then decoder blocks ``E..E+D-1`` (``dec.L2`` of a 6-block encoder has layer
8); see docs/design.md. BERT-style encoders keep the ``enc.`` prefix of their ``encoder`` stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The matrices of a LoRA adapter on a base matrix (``x -> B A x``), as ``peft`` names them.
LORA_PARTS: tuple[str, ...] = ("lora_A", "lora_B")

#: The kinds of a model's own matrices, in the column order of tables and figures.
BASE_KINDS: tuple[str, ...] = (
    "embed",
    "pos_embed",
    "type_embed",
    "q",
    "k",
    "v",
    "qkv",
    "o",
    "rel_bias",
    "xq",
    "xk",
    "xv",
    "xo",
    "gate",
    "up",
    "fc_in",
    "down",
    "fc_out",
    "head_dense",
    "lm_head",
)


def lora_kinds(kind: str) -> tuple[str, ...]:
    """The kinds of a LoRA adapter's matrices on a base ``kind``: ``q`` -> ``q.lora_A``, ..."""
    return tuple(f"{kind}.{part}" for part in LORA_PARTS)


#: Every component kind, in the column order of tables and figures (LoRA kinds after their base).
KINDS: tuple[str, ...] = tuple(k for base in BASE_KINDS for k in (base, *lora_kinds(base)))
_BASE_MODEL_WIDE = ("embed", "pos_embed", "type_embed", "head_dense", "lm_head")
#: Kinds that belong to the whole model rather than to one block.
MODEL_WIDE: tuple[str, ...] = tuple(
    k for base in _BASE_MODEL_WIDE for k in (base, *lora_kinds(base))
)
#: Kinds of the first MLP matrix (the backward lens's "imprint" input), by family.
FIRST_MLP_KINDS: tuple[str, ...] = ("up", "fc_in")
#: Kinds of the MLP's last matrix (the output whose gradient the backward lens reads).
LAST_MLP_KINDS: tuple[str, ...] = ("down", "fc_out")

# Last dotted parts of a module name -> kind; the longest matching suffix wins.
KIND_BY_SUFFIX: dict[str, str] = {
    # Llama / OLMo / Qwen / Mistral
    "self_attn.q_proj": "q",
    "self_attn.k_proj": "k",
    "self_attn.v_proj": "v",
    "self_attn.o_proj": "o",
    "self_attn.qkv_proj": "qkv",
    "mlp.gate_proj": "gate",
    "mlp.up_proj": "up",
    "mlp.down_proj": "down",
    # GPT-2
    "attn.c_attn": "qkv",
    "attn.c_proj": "o",
    "mlp.c_fc": "fc_in",
    "mlp.c_proj": "fc_out",
    # GPT-NeoX
    "attention.query_key_value": "qkv",
    "attention.dense": "o",
    "mlp.dense_h_to_4h": "fc_in",
    "mlp.dense_4h_to_h": "fc_out",
    # OPT / Phi style
    "self_attn.out_proj": "o",
    "fc1": "fc_in",
    "fc2": "fc_out",
    # T5 (the block's sub-layer decides self- vs cross-attention)
    "SelfAttention.q": "q",
    "SelfAttention.k": "k",
    "SelfAttention.v": "v",
    "SelfAttention.o": "o",
    "EncDecAttention.q": "xq",
    "EncDecAttention.k": "xk",
    "EncDecAttention.v": "xv",
    "EncDecAttention.o": "xo",
    "DenseReluDense.wi": "fc_in",
    "DenseReluDense.wo": "fc_out",
    "DenseReluDense.wi_0": "gate",
    "DenseReluDense.wi_1": "up",
    # T5's learned relative-position buckets (block 0 of each stack): [buckets, heads]
    "SelfAttention.relative_attention_bias": "rel_bias",
    # BERT-style encoders (the masked-LM head's transform is model-wide)
    "attention.self.query": "q",
    "attention.self.key": "k",
    "attention.self.value": "v",
    "attention.output.dense": "o",
    "intermediate.dense": "fc_in",
    "output.dense": "fc_out",
    "predictions.transform.dense": "head_dense",
    "predictions.decoder": "lm_head",  # untied masked-LM output projection
}
_SUFFIXES = sorted(KIND_BY_SUFFIX, key=len, reverse=True)

# Module names of model-wide matrices (last dotted part).
_MODEL_WIDE_BY_NAME: dict[str, str] = {
    "embed_tokens": "embed",
    "wte": "embed",
    "embed_in": "embed",
    "word_embeddings": "embed",
    "shared": "embed",
    "wpe": "pos_embed",
    "embed_positions": "pos_embed",
    "position_embeddings": "pos_embed",
    "token_type_embeddings": "type_embed",
    "lm_head": "lm_head",
    "embed_out": "lm_head",
}

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_STACK_RE = re.compile(r"(?:^|\.)(encoder|decoder)\.")
_USER_RE = re.compile(r"^(?:(enc|dec)\.)?L(\d+)\.([a-z_]+(?:\.lora_[AB])?)$")
# A LoRA matrix's module: the base module, the part, the adapter's name (``peft``'s layout).
_LORA_RE = re.compile(r"^(.+)\.(lora_A|lora_B)\.[^.]+$")


@dataclass(frozen=True)
class ComponentName:
    """A component's user-facing identity.

    component: display name (``L3.gate``, ``dec.L1.xq``, ``embed``); layer: depth index or None
    for model-wide kinds; kind: one of ``KINDS``; stack: ``enc``/``dec`` or None; block: the
    block index within its stack (None for model-wide kinds)."""

    component: str
    layer: int | None
    kind: str
    stack: str | None = None
    block: int | None = None


def lora_part(module_name: str) -> tuple[str, str] | None:
    """``(base module, part)`` of a LoRA matrix's module (``...q_proj.lora_A.default`` ->
    ``("...q_proj", "lora_A")``), else None."""
    match = _LORA_RE.match(module_name)
    return (match.group(1), match.group(2)) if match else None


def kind_of_module(module_name: str) -> str | None:
    """Kind of the weight owned by ``module_name`` (``model.layers.3.mlp.up_proj`` -> ``up``,
    ``...q_proj.lora_A.default`` -> ``q.lora_A``), or None if no known suffix or model-wide
    name matches."""
    lora = lora_part(module_name)
    if lora is not None:
        base = kind_of_module(lora[0])
        return f"{base}.{lora[1]}" if base is not None else None
    last = module_name.rsplit(".", 1)[-1]
    if last in _MODEL_WIDE_BY_NAME:
        return _MODEL_WIDE_BY_NAME[last]
    for suffix in _SUFFIXES:
        if module_name == suffix or module_name.endswith("." + suffix):
            return KIND_BY_SUFFIX[suffix]
    return None


def block_of(module_name: str) -> tuple[str | None, int | None]:
    """``(stack, block index)`` of a module inside a numbered block, else ``(None, None)``."""
    layer = _LAYER_RE.search("." + module_name + ".")
    if layer is None:
        return None, None
    stack = _STACK_RE.search(module_name)
    return (stack.group(1)[:3] if stack else None), int(layer.group(1))


def make_name(
    kind: str, stack: str | None = None, block: int | None = None, encoder_blocks: int = 0
) -> ComponentName:
    """The ComponentName of a kind in a block. ``encoder_blocks`` (E) offsets decoder blocks of
    an encoder-decoder model so that depth = E + block; with E = 0 a ``dec`` stack is a
    decoder-only model and gets no prefix."""
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r} (known: {', '.join(KINDS)})")
    if kind in MODEL_WIDE:
        return ComponentName(kind, None, kind)
    if block is None:
        raise ValueError(f"component kind {kind!r} needs a block index")
    if stack == "dec" and encoder_blocks == 0:
        stack = None  # a decoder-only model that calls its blocks "decoder" (OPT)
    prefix = f"{stack}." if stack else ""
    depth = block + (encoder_blocks if stack == "dec" else 0)
    return ComponentName(f"{prefix}L{block}.{kind}", depth, kind, stack, block)


def parse_component_name(name: str, encoder_blocks: int = 0) -> tuple[str, int | None, str]:
    """Map a parameter name (or an already user-facing name) to ``(component, layer, kind)``.

    ``model.layers.9.mlp.down_proj.weight`` -> ``("L9.down", 9, "down")``,
    ``transformer.wte.weight`` -> ``("embed", None, "embed")``, ``transformer.wpe.weight`` ->
    ``("pos_embed", None, "pos_embed")``, ``L3.gate`` -> ``("L3.gate", 3, "gate")``. Raises
    ValueError naming an unknown name."""
    n = parse_name(name, encoder_blocks)
    return n.component, n.layer, n.kind


def encoder_blocks_in(names: list[str]) -> int:
    """Number of encoder blocks that parameter names mention (0 for decoder-only models)."""
    blocks = [block_of(n.removesuffix(".weight")) for n in names]
    return max((b + 1 for stack, b in blocks if stack == "enc"), default=0)


def parse_name(name: str, encoder_blocks: int = 0) -> ComponentName:
    """``parse_component_name`` returning the full ComponentName."""
    if name in MODEL_WIDE:
        return make_name(name)
    user = _USER_RE.match(name)
    if user and user.group(3) in KINDS and user.group(3) not in MODEL_WIDE:
        return make_name(user.group(3), user.group(1), int(user.group(2)), encoder_blocks)
    base = name.removesuffix(".weight")
    kind = kind_of_module(base)
    if kind in MODEL_WIDE:
        return make_name(kind)
    stack, block = block_of(base)
    if kind is not None and block is not None:
        return make_name(kind, stack, block, encoder_blocks)
    raise ValueError(
        f"cannot map parameter {name!r} to a component (expected e.g. model.layers.N.mlp.down_proj"
        ".weight, transformer.h.N.attn.c_attn.weight or gpt_neox.layers.N.attention.dense.weight)"
    )
