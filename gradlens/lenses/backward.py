"""Backward lens: a language model's MLP gradients projected into the vocabulary.

After Katz, Belinkov, Geva and Wolf (2024), "Backward Lens: Projecting Language Model Gradients
into the Vocabulary Space". For one prompt and a target, one backward pass gives, per layer ℓ and
prompt position t:

- ``x_t``: the input of the layer's first MLP matrix FF1 (``up`` / ``c_fc`` / ``fc_in``),
  captured by a forward hook; its logit lens is the *imprint* of the position on FF1's gradient;
- ``δ_t = ∂L/∂y_t``: the gradient of the loss w.r.t. the output ``y_t`` of the MLP's last matrix
  FF2 (``down`` / ``c_proj`` / ``fc_out``), captured by a tensor hook. A gradient step moves the
  output along ``−δ_t``. Two readings of it: its logit lens names the tokens the update promotes
  and demotes; its raw cosine with the target's row of the output embedding is the paper's
  *shift* (the step writes the target's embedding into the residual stream).

By the lemma of the paper FF1's gradient is ``Σ_t δ'_t x_tᵀ`` (``δ'_t`` the gradient at FF1's
output), so its rank is at most the number of positions ``n``. ``ff1_rank`` is the numeric rank
``torch.linalg.matrix_rank`` gives that float32 gradient (singular values above
``σ_max · max(shape) · eps(float32)``), computed from the two ``n``-row factors (the singular
values of ``R_δ' R_xᵀ``, both from QR) instead of an SVD of the whole matrix.

The logit lens here is the model's final norm followed by the unembedding, applied to a vector
first scaled to unit RMS: the lens reads a direction, and a gradient is many orders of magnitude
smaller than a hidden state, so without the scaling the norm's ε (and a LayerNorm's bias) would
swamp it. For an RMSNorm model the ranking is the same with or without the scaling, and the
least probable tokens of ``δ`` are exactly the top of ``−δ`` (the lens is odd); a LayerNorm's
bias is added to both ``δ`` and ``−δ``, so for GPT-2 the paper's reading (the least probable
tokens of ``δ``) and the top of ``−δ`` can differ.

Encoder-decoder models (T5 family) read the prompt in the encoder (its end token appended, as the
pair inspector does) and predict the target from the decoder's start token; the lens reads the
decoder's blocks (FF1 ``wi`` or gated ``wi_1``, FF2 ``wo``) at the decoder's positions: the start
token, with ``whole_target`` followed by the target but its last. So the lemma bounds FF1's
gradient's rank by 1 for the first target token. T5's logit lens is the decoder's final norm, the
output scaling by ``d_model**-0.5`` where the config says the model applies it, and the
unembedding. Other encoder-decoder families are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gradlens.errors import GradLensError
from gradlens.models.loading import discover_components
from gradlens.models.naming import FIRST_MLP_KINDS, LAST_MLP_KINDS
from gradlens.models.surgery import (
    final_norm,
    frozen,
    last_logits_kwargs,
    model_device,
    unembedding,
)
from gradlens.models.tokens import decode_each

TokenGrid = tuple[tuple[tuple[str, ...], ...], ...]
#: Rows the logit lens reads per call (a 256 × 49,152 block of logits is 50 MB in float32).
LENS_ROWS = 256


@dataclass(frozen=True)
class BackwardLens:
    """The backward lens of one prompt and target.

    tokens: the n positions the loss reaches, decoded one by one (the prompt's tokens as the
    tokenizer gives them; with ``whole_target`` followed by the target's tokens but its last;
    an encoder-decoder model: the decoder's start token, then likewise the target's);
    target_tokens: the target's tokens (the first is the one ranked); loss: its value;
    vjp_norm [layers, n]: ‖δ_t‖ at each layer's MLP output; vjp_top / vjp_bottom [layers][n][k]:
    tokens the logit lens of −δ_t promotes / demotes (empty where δ_t = 0); delta_bottom
    [layers][n][k]: the least probable tokens of δ_t under the logit lens (the paper's reading;
    equal to vjp_top without a norm bias); imprint_top [layers][n][k]: logit lens of x_t, FF1's
    input; target_rank [layers, n]: rank (1 = top) of the target's first token in the −δ_t
    projection, 0 where δ_t = 0; target_cosine [layers, n]: cosine of the raw −δ_t with the
    target's row of the output embedding (0 where δ_t = 0); target_cosine_rank [layers, n]: the
    target's rank (1 = top) among all vocabulary rows by that cosine, 0 where δ_t = 0;
    ff1_rank [layers]: numeric rank of FF1's gradient (≤ n); ff1_shape: that gradient's shape;
    vocab_size: the tokens the ranks run over.
    """

    prompt: str
    target: str
    whole_target: bool
    tokens: tuple[str, ...]
    target_tokens: tuple[str, ...]
    loss: float
    vjp_norm: np.ndarray
    vjp_top: TokenGrid
    vjp_bottom: TokenGrid
    delta_bottom: TokenGrid
    imprint_top: TokenGrid
    target_rank: np.ndarray
    target_cosine: np.ndarray
    target_cosine_rank: np.ndarray
    ff1_rank: np.ndarray
    ff1_shape: tuple[int, int]
    vocab_size: int

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_layers(self) -> int:
        return int(self.vjp_norm.shape[0])

    @property
    def answer_position(self) -> int:
        """The prompt's last position: the one that predicts the target's first token."""
        return self.n_tokens - 1 - (len(self.target_tokens) - 1 if self.whole_target else 0)

    @property
    def bottom_differs(self) -> np.ndarray:
        """[layers, n] bool: the least probable tokens of δ_t are not the top of −δ_t."""
        return np.array(
            [[b != t for b, t in zip(bs, ts)] for bs, ts in zip(self.delta_bottom, self.vjp_top)],
            dtype=bool,
        ).reshape(self.vjp_norm.shape)

    def frame(self) -> pd.DataFrame:
        """One row per (layer, position): norm, the target's ranks and cosine, the token lists
        (``least_probable``: the least probable tokens of δ where they differ from the
        promoted ones, else empty)."""
        differs = self.bottom_differs
        rows = []
        for layer in range(self.n_layers):
            for pos, token in enumerate(self.tokens):
                rows.append(
                    {
                        "layer": layer,
                        "position": pos,
                        "token": token,
                        "vjp_norm": float(self.vjp_norm[layer, pos]),
                        "target_rank": int(self.target_rank[layer, pos]),
                        "target_cosine": float(self.target_cosine[layer, pos]),
                        "cosine_rank": int(self.target_cosine_rank[layer, pos]),
                        "promoted": list(self.vjp_top[layer][pos]),
                        "demoted": list(self.vjp_bottom[layer][pos]),
                        "least_probable": list(self.delta_bottom[layer][pos])
                        if differs[layer, pos]
                        else [],
                        "imprint": list(self.imprint_top[layer][pos]),
                    }
                )
        return pd.DataFrame(rows)

    def shift_frame(self) -> pd.DataFrame:
        """Per layer, at ``answer_position``: the shift (cosine of −δ with the target's output
        embedding) and the target's rank by that cosine and by the logit lens."""
        t = self.answer_position
        return pd.DataFrame(
            {
                "layer": np.arange(self.n_layers),
                "target_cosine": self.target_cosine[:, t],
                "cosine_rank": self.target_cosine_rank[:, t].astype(int),
                "logit_lens_rank": self.target_rank[:, t].astype(int),
            }
        )

    def shift_summary(self) -> str:
        """The shift at ``answer_position`` in words: its strongest layer (cosine, rank by
        cosine, rank in the logit lens) and the layers where each reading ranks the target
        first."""
        shift = self.shift_frame()
        best = shift.loc[shift["target_cosine"].idxmax()]
        target = repr(self.target_tokens[0])
        by_cosine = _layer_ranges(shift.loc[shift["cosine_rank"] == 1, "layer"])
        by_lens = _layer_ranges(shift.loc[shift["logit_lens_rank"] == 1, "layer"])
        return (
            f"At the last prompt position the step moves layer {int(best.layer)}'s MLP output "
            f"most towards the output embedding of {target}: cosine {best.target_cosine:.3f}, rank "
            f"{int(best.cosine_rank):,} of {self.vocab_size:,} tokens by cosine, "
            f"{int(best.logit_lens_rank):,} in the logit lens. {target} is the top token by "
            f"cosine in {by_cosine}; in the logit lens in {by_lens}."
        )

    def rank_frame(self) -> pd.DataFrame:
        """ff1_rank per layer beside n."""
        return pd.DataFrame(
            {
                "layer": np.arange(self.n_layers),
                "ff1_rank": self.ff1_rank.astype(int),
                "n_tokens": self.n_tokens,
                "rank_equals_n": self.ff1_rank == self.n_tokens,
            }
        )


@dataclass(frozen=True)
class MlpPass:
    """One forward and one backward pass, read at every layer's MLP over all S positions of the
    sequence (float32): x [L, S, d], FF1's input; d1 [L, S, f], ∂L/∂(FF1's output); delta
    [L, S, d], ∂L/∂(FF2's output) (zero where the loss does not reach it); loss (a scalar)."""

    x: torch.Tensor
    d1: torch.Tensor
    delta: torch.Tensor
    loss: torch.Tensor

    def ff1_ranks(self) -> list[int]:
        """The numeric rank of each layer's FF1 gradient ``Σ_t d1_t x_tᵀ``."""
        return [factored_rank(d, x) for d, x in zip(self.d1, self.x)]


def _layer_ranges(layers) -> str:
    """``layers 18–29``, ``layers 3, 5–7``, ``layer 4`` or ``no layer``."""
    values = sorted(int(v) for v in layers)
    if not values:
        return "no layer"
    runs: list[list[int]] = [[values[0], values[0]]]
    for v in values[1:]:
        if v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    text = ", ".join(f"{a}–{b}" if b > a else f"{a}" for a, b in runs)
    return f"layer {text}" if len(values) == 1 else f"layers {text}"


def _decode_grid(tokenizer, ids: torch.Tensor, empty: torch.Tensor) -> TokenGrid:
    """ids [L, n, k] -> nested tuples of decoded tokens; cells where ``empty`` [L, n] get ()."""
    flat = decode_each(tokenizer, ids.reshape(-1).tolist())
    L, n, k = ids.shape
    return tuple(
        tuple(
            () if bool(empty[a, b]) else tuple(flat[(a * n + b) * k : (a * n + b + 1) * k])
            for b in range(n)
        )
        for a in range(L)
    )


# -- the lens ------------------------------------------------------------------------------------
def backward_lens(
    model: nn.Module,
    tokenizer,
    prompt: str,
    target: str,
    top_k: int = 5,
    whole_target: bool = False,
) -> BackwardLens:
    """The backward lens of ``prompt`` → ``target`` in one forward and one backward pass.

    Loss: cross-entropy of the target's first token at the prompt's last position; with
    ``whole_target`` the target is teacher-forced after the prompt and the loss is the mean
    cross-entropy over its tokens. The prompt is tokenized as is (no chat template; special
    tokens only where the tokenizer always adds them), the target without special tokens. An
    encoder-decoder model reads the prompt in its encoder and the target in its decoder
    (``lens_sequence``). The model is used in eval mode; its ``requires_grad`` flags and
    training mode are restored.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    prompt_ids, target_ids = token_ids(tokenizer, prompt, target, is_encoder_decoder(model))
    ids, read_ids = lens_sequence(model, prompt_ids, target_ids, whole_target)
    n = len(read_ids)
    n_prompt = len(prompt_ids)
    options = {"whole_target": whole_target}
    run = mlp_pass(model, ids, lambda t: target_loss(model, t, n_prompt, target_ids, **options))
    x, delta = run.x[:, :n], run.delta[:, :n]
    vjp_norm = delta.norm(dim=-1)  # [L, n]
    empty = vjp_norm == 0
    read = _read_lenses(model, len(tokenizer), x, delta, target_ids[0], top_k)
    cosine, cosine_rank = target_cosines(model, len(tokenizer), -delta, target_ids[0])

    def grid(name: str, blank: torch.Tensor = empty) -> TokenGrid:
        return _decode_grid(tokenizer, read[name].cpu(), blank.cpu())

    def zeroed(values: torch.Tensor) -> torch.Tensor:
        return torch.where(empty, torch.zeros_like(values), values).cpu()

    return BackwardLens(
        prompt=prompt,
        target=target,
        whole_target=whole_target,
        tokens=tuple(decode_each(tokenizer, read_ids)),
        target_tokens=tuple(decode_each(tokenizer, target_ids)),
        loss=float(run.loss.detach()),
        vjp_norm=vjp_norm.cpu().numpy().astype(np.float64),
        vjp_top=grid("top"),
        vjp_bottom=grid("bottom"),
        delta_bottom=grid("delta_bottom"),
        imprint_top=grid("imprint", torch.zeros_like(empty)),
        target_rank=zeroed(read["rank"]).numpy().astype(np.int64),
        target_cosine=zeroed(cosine).numpy().astype(np.float64),
        target_cosine_rank=zeroed(cosine_rank).numpy().astype(np.int64),
        ff1_rank=np.array(run.ff1_ranks(), dtype=np.int64),
        ff1_shape=tuple(lens_mlps(model)[0][0].weight.shape),
        vocab_size=min(len(tokenizer), unembedding(model).weight.shape[0]),
    )


def with_eos(tokenizer, ids: list[int]) -> list[int]:
    """``ids`` with the tokenizer's end token appended where it is not already last."""
    eos = tokenizer.eos_token_id
    return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def token_ids(
    tokenizer, prompt: str, target: str, encoder_decoder: bool = False
) -> tuple[list[int], list[int]]:
    """The prompt's ids (as the tokenizer gives them; an encoder-decoder model's encoder input
    ends with the end token) and the target's (no special tokens); GradLensError where either is
    empty."""
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    if not prompt_ids:
        raise GradLensError("the prompt is empty (no tokens)")
    if not target_ids:
        raise GradLensError("the target is empty (no tokens)")
    return with_eos(tokenizer, prompt_ids) if encoder_decoder else prompt_ids, target_ids


# -- the layers the lens reads -------------------------------------------------------------------
def is_encoder_decoder(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def t5_decoder(model: nn.Module) -> nn.Module:
    """The decoder stack of a T5-style encoder-decoder model (``block``s, ``final_layer_norm``);
    GradLensError, one line, for any other encoder-decoder model."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if not (
        isinstance(getattr(decoder, "final_layer_norm", None), nn.Module)
        and hasattr(decoder, "block")
        and hasattr(model, "prepare_decoder_input_ids_from_labels")
    ):
        raise GradLensError(
            f"the lenses support decoder-only models and T5-style encoder-decoder models, "
            f"not {type(model).__name__}"
        )
    return decoder


def lens_mlps(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """Per layer the lens reads, the MLP's FF1 (``up`` / ``fc_in``; T5: ``wi``, gated ``wi_1``)
    and FF2 (``down`` / ``fc_out``; T5: ``wo``): every block of a decoder LM, the decoder's
    blocks of a T5 model (layer 0 = the decoder's first block)."""
    stack = ""
    if is_encoder_decoder(model):
        t5_decoder(model)
        stack = "dec."
    modules = dict(model.named_modules())
    first: dict[int, nn.Module] = {}
    last: dict[int, nn.Module] = {}
    for comp in discover_components(model):
        if comp.layer is None or not comp.name.startswith(stack):
            continue
        if comp.kind in FIRST_MLP_KINDS:
            first[comp.layer] = modules[comp.module]
        elif comp.kind in LAST_MLP_KINDS:
            last[comp.layer] = modules[comp.module]
    layers = sorted(first)
    if not layers or layers != sorted(last) or layers != list(range(layers[0], layers[-1] + 1)):
        raise GradLensError(
            f"cannot find one first ({'/'.join(FIRST_MLP_KINDS)}) and one last "
            f"({'/'.join(LAST_MLP_KINDS)}) MLP matrix in every layer of {type(model).__name__}"
        )
    return [first[i] for i in layers], [last[i] for i in layers]


def lens_head(model: nn.Module) -> tuple[nn.Module, float]:
    """The final norm the logit lens applies and the factor the model multiplies its output by
    before the unembedding: 1, but T5's ``d_model**-0.5`` where ``config.scale_decoder_outputs``
    says it scales the decoder's output. A T5-style config without that flag (mT5, UMT5: each
    family decides in its own code) is refused rather than guessed."""
    if not is_encoder_decoder(model):
        return final_norm(model), 1.0
    norm = t5_decoder(model).final_layer_norm
    scaled = getattr(model.config, "scale_decoder_outputs", None)
    if not isinstance(scaled, bool):
        raise GradLensError(
            f"the logit lens cannot tell whether {type(model).__name__} scales its decoder's "
            "output (no config.scale_decoder_outputs): it supports T5 and LongT5"
        )
    return norm, float(model.config.d_model) ** -0.5 if scaled else 1.0


def lens_logits(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Logits ``unembed(scale · final_norm(h'))`` (``lens_head``) for vectors ``h`` [..., d],
    each scaled to unit RMS first (``h' = h / rms(h)``; a zero vector stays zero). Float32, no
    gradient."""
    norm, scale = lens_head(model)
    with torch.no_grad():
        h = h.float()
        rms = h.pow(2).mean(-1, keepdim=True).sqrt()
        h = h / torch.where(rms > 0, rms, torch.ones_like(rms))
        dtype = next(norm.parameters(), h).dtype
        return unembedding(model)(norm(h.to(dtype)) * scale).float()


# -- the loss ------------------------------------------------------------------------------------
def decoder_inputs(model: nn.Module, target_ids: list[int]) -> torch.Tensor:
    """[1, m]: the decoder's input when an encoder-decoder model predicts the m ``target_ids``
    (the model's own shift of the labels: its start token, then the target but its last)."""
    labels = torch.tensor([target_ids], device=model_device(model))
    return model.prepare_decoder_input_ids_from_labels(labels=labels)


def lens_sequence(
    model: nn.Module, prompt_ids: list[int], target_ids: list[int], whole_target: bool = False
) -> tuple[list[int], list[int]]:
    """The ids the model is given and the ids at the n positions the lens reads. A decoder LM:
    the prompt, with ``whole_target`` followed by the target; the lens reads the prompt's
    positions and the target's but its last. An encoder-decoder model: the encoder's input
    (the prompt); the lens reads the decoder's positions (its start token, with
    ``whole_target`` followed by the target but its last)."""
    m = len(target_ids) if whole_target else 1
    if is_encoder_decoder(model):
        return prompt_ids, decoder_inputs(model, target_ids[:m])[0].tolist()
    ids = prompt_ids + (target_ids if whole_target else [])
    return ids, ids[: len(prompt_ids) + m - 1]


def next_token_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The logits [V] (float32) at the last position of ``input_ids`` [1, S]."""
    out = model(input_ids=input_ids, use_cache=False, **last_logits_kwargs(model))
    return out.logits[0, -1].float()


def target_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    n_prompt: int,
    target_ids: list[int],
    whole_target: bool = False,
) -> torch.Tensor:
    """The logits [m, V] (float32) that predict the target's first token (m = 1) or, with
    ``whole_target``, each of its tokens (teacher-forced). ``input_ids`` [1, S]: a decoder LM's
    sequence (the prompt's ``n_prompt`` ids, then with ``whole_target`` the target's), or an
    encoder-decoder model's encoder input (the decoder reads ``decoder_inputs``)."""
    m = len(target_ids) if whole_target else 1
    if is_encoder_decoder(model):
        out = model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            decoder_input_ids=decoder_inputs(model, target_ids[:m]),
            use_cache=False,
        )
        return out.logits[0].float()
    if not whole_target:
        return next_token_logits(model, input_ids)[None]
    logits = model(input_ids=input_ids, use_cache=False).logits[0].float()
    return logits[n_prompt - 1 : n_prompt - 1 + m]


def target_loss(
    model: nn.Module, input_ids: torch.Tensor, n_prompt: int, target_ids: list[int], **options
) -> torch.Tensor:
    """Cross-entropy of the target's first token after the prompt, or with ``whole_target`` (in
    ``options``) the mean over the target's tokens (``target_logits``)."""
    logits = target_logits(model, input_ids, n_prompt, target_ids, **options)
    scored = torch.tensor(target_ids[: len(logits)], device=input_ids.device)
    return F.cross_entropy(logits, scored)


def mlp_pass(
    model: nn.Module, ids: list[int], loss_of: Callable[[torch.Tensor], torch.Tensor]
) -> MlpPass:
    """One forward and one backward pass of ``loss_of(input_ids)``, every weight frozen but the
    FF1 matrices (so that the MLP outputs carry a graph; their weight gradients are never
    formed). Hooks record FF1's input and FF1's and FF2's outputs; autograd then gives the
    gradients at those outputs. Hooks are removed, the model's flags and mode restored."""
    firsts, lasts = lens_mlps(model)
    xs: list[torch.Tensor] = []
    outs: dict[str, list[torch.Tensor]] = {"first": [], "last": []}

    def record(kind: str, keep_input: bool):
        def hook(module, args, output):
            if keep_input:
                xs.append(args[0].detach()[0])
            outs[kind].append(output)

        return hook

    handles = []
    try:
        with frozen(model, keep=[m.weight for m in firsts]):
            for first, last in zip(firsts, lasts):
                handles.append(first.register_forward_hook(record("first", True)))
                handles.append(last.register_forward_hook(record("last", False)))
            with torch.enable_grad():
                loss = loss_of(torch.tensor([ids], device=model_device(model)))
                grads = torch.autograd.grad(
                    loss, outs["first"] + outs["last"], allow_unused=True, materialize_grads=True
                )
    finally:
        for h in handles:
            h.remove()
    layers = len(firsts)
    d1 = torch.stack([g[0] for g in grads[:layers]]).float()
    delta = torch.stack([g[0] for g in grads[layers:]]).float()
    return MlpPass(torch.stack(xs).float(), d1, delta, loss.detach())


def factored_rank(d1: torch.Tensor, x: torch.Tensor) -> int:
    """``torch.linalg.matrix_rank`` of the float32 matrix ``d1ᵀ x`` (d1 [S, f], x [S, d]) at
    its default tolerance, ``σ_max · max(f, d) · eps(float32)``. With S < min(f, d) the
    singular values come from the S × S matrix ``R_d1 R_xᵀ`` (QR of d1ᵀ and xᵀ, float64):
    ``d1ᵀ x = Q_d1 (R_d1 R_xᵀ) Q_xᵀ`` with orthonormal ``Q``s."""
    S, f = d1.shape
    d = x.shape[1]
    if S >= min(f, d):
        full = (d1.T @ x).float()
        return int(torch.linalg.matrix_rank(full if f >= d else full.T.contiguous()))
    r_d1 = torch.linalg.qr(d1.double().T, mode="r").R
    r_x = torch.linalg.qr(x.double().T, mode="r").R
    sigma = torch.linalg.svdvals(r_d1 @ r_x.T)
    tol = sigma.max() * max(f, d) * torch.finfo(torch.float32).eps
    return int((sigma > tol).sum())


def target_cosines(
    model: nn.Module, n_vocab: int, v: torch.Tensor, target: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For vectors ``v`` [..., d]: their cosine with the target's row of the output embedding
    (the raw vector: no norm, no scaling), and the target's rank (1 = top) among the first
    ``n_vocab`` rows by that cosine. Float32; 0 cosine for a zero vector."""
    weight = getattr(unembedding(model), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise GradLensError(f"{type(model).__name__}'s output embedding has no weight matrix")
    with torch.no_grad():
        rows = weight[:n_vocab].float()
        row_norm = rows.norm(dim=-1)
        row_norm = torch.where(row_norm > 0, row_norm, torch.ones_like(row_norm))
        flat = v.reshape(-1, v.shape[-1]).float()
        v_norm = flat.norm(dim=-1, keepdim=True)
        cos = (flat @ rows.T) / row_norm / torch.where(v_norm > 0, v_norm, torch.ones_like(v_norm))
        cos_target = cos[:, target]
        rank = (cos > cos_target[:, None]).sum(-1) + 1
    return cos_target.reshape(v.shape[:-1]), rank.reshape(v.shape[:-1])


def _read_lenses(
    model: nn.Module, n_vocab: int, x: torch.Tensor, delta: torch.Tensor, target: int, top_k: int
) -> dict[str, torch.Tensor]:
    """The logit lens of −δ, δ and x (all [L, n, d]) over the tokenizer's ``n_vocab`` tokens:
    ids [L, n, k] of the tokens −δ promotes (``top``) and demotes (``bottom``) most, of δ's
    least probable tokens (``delta_bottom``) and of x's top tokens (``imprint``); the rank
    [L, n] (1 = top) of ``target`` in −δ's projection."""
    n_layers, n, hidden = delta.shape
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("top", "bottom", "rank")}
    flat = delta.reshape(-1, hidden)
    # LENS_ROWS rows at a time: each call reads the whole unembedding once, and the logits of
    # every row at once would not fit for a long prompt.
    for rows in flat.split(LENS_ROWS):
        minus = lens_logits(model, -rows)[:, :n_vocab]
        k = min(top_k, minus.shape[-1])
        out["top"].append(minus.topk(k, dim=-1).indices)
        out["bottom"].append((-minus).topk(k, dim=-1).indices)
        out["rank"].append((minus > minus[:, target : target + 1]).sum(-1) + 1)
    read = {name: torch.cat(parts) for name, parts in out.items()}
    read["delta_bottom"] = _lens_top(model, flat, n_vocab, top_k, lowest=True)
    read["imprint"] = _lens_top(model, x.reshape(-1, hidden), n_vocab, top_k)
    return {name: v.reshape(n_layers, n, *v.shape[1:]) for name, v in read.items()}


def _lens_top(
    model: nn.Module, v: torch.Tensor, n_vocab: int, top_k: int, lowest: bool = False
) -> torch.Tensor:
    """ids [m, k] of the top (with ``lowest``: the least probable) tokens of the logit lens of
    each row of ``v`` [m, d], over the first ``n_vocab`` tokens."""
    parts = []
    for rows in v.split(LENS_ROWS):
        logits = lens_logits(model, rows)[:, :n_vocab]
        parts.append((-logits if lowest else logits).topk(min(top_k, logits.shape[-1])).indices)
    return torch.cat(parts)
