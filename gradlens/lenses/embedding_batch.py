"""The input-embedding experiment on a batch of random sentences: B sentences whose token
embeddings are drawn from a Gaussian fitted to the vocabulary embeddings (their mean and full
covariance), 6–12 tokens each, no special tokens, are optimised (Adam or SGD) so that the
model's next-token distribution after each sentence matches the one after a target prompt
(KL(q ‖ p_b), summed over the sentences, so each sentence moves as it would alone).

What it reads (``BatchOptimization``): each sentence's KL per step; how far each token travelled,
against the distances between random pairs of vocabulary embeddings; the displacement per
dimension; and where each token went (``embedding.Moves``: nearest tokens by cosine and by
Euclidean distance, the heading, cos(g, e)). A causal LM reads the prediction at a sentence's
last token (the sentences packed into one sequence, each seeing only itself); a masked LM (BERT
style) at a frozen mask token appended to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gradlens.errors import GradLensError
from gradlens.lenses.embedding import (
    Moves,
    Target,
    is_masked_lm,
    make_optimizer,
    read_moves,
    vocabulary,
)
from gradlens.models.surgery import frozen, last_logits_kwargs

#: Shortest and longest random sentence, in tokens.
LENGTHS = (6, 12)
#: Random vocabulary pairs whose distances make the reference histogram.
PAIRS = 4096


@dataclass(frozen=True)
class BatchOptimization:
    """B random sentences optimised toward a target prompt's next-token distribution.

    target: the target prompt; optimizer: ``adam`` or ``sgd``; lr; seed; dim: d (embedding
    size); lengths int[B]: tokens per sentence; kl float[steps+1, B]: each sentence's KL at step
    s (0: the random start); sentence, position int[N]: the N = Σ lengths tokens, sentence by
    sentence; moves: where each token went (``Moves``, N rows); displacement float32[N, d]:
    e_end − e_start; pair_distance float[PAIRS]: L2 distances between random pairs of distinct
    vocabulary embeddings.
    """

    target: str
    optimizer: str
    lr: float
    seed: int
    dim: int
    lengths: np.ndarray
    kl: np.ndarray
    sentence: np.ndarray
    position: np.ndarray
    moves: Moves
    displacement: np.ndarray
    pair_distance: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.kl) - 1

    @property
    def batch(self) -> int:
        return len(self.lengths)

    @property
    def mean_kl(self) -> np.ndarray:
        """The KL averaged over the sentences, per step [steps+1]."""
        return self.kl.mean(axis=1)

    @property
    def typical_distance(self) -> float:
        """Median distance between two random vocabulary embeddings."""
        return float(np.median(self.pair_distance))

    @property
    def first_step_expected(self) -> float:
        """What the first step should move a token: lr·√d under Adam (the mean ‖g‖·lr
        under SGD, which depends on each token's gradient)."""
        if self.optimizer == "adam":
            return self.lr * float(np.sqrt(self.dim))
        return float(np.mean(self.moves.first_step))

    def frame(self) -> pd.DataFrame:
        """One row per token: sentence, position, then the ``Moves`` columns."""
        moves = self.moves.frame()
        moves.insert(0, "position", self.position)
        moves.insert(0, "sentence", self.sentence)
        return moves


def vocabulary_gaussian(vocab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [d], factor [d, d]) of the Gaussian fitted to the rows of ``vocab``: mean + factor
    @ z, z standard normal, has their mean and full covariance (factor = Q √Λ of the
    covariance's eigendecomposition, negative round-off eigenvalues clipped to 0)."""
    mean = vocab.mean(0)
    centred = vocab - mean
    cov = (centred.T @ centred).double() / (len(vocab) - 1)
    values, vectors = torch.linalg.eigh(cov)
    return mean, (vectors * values.clamp_min(0).sqrt()).float()


def random_sentences(
    vocab: torch.Tensor, batch: int, seed: int, lengths: tuple[int, int] = LENGTHS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings [batch, max length, d], lengths int[batch]): sentence b has lengths[b]
    tokens drawn from ``vocabulary_gaussian(vocab)`` (uniform length in ``lengths``, both ends
    included), zeros after its end. Seeded: the same seed gives the same sentences."""
    low, high = lengths
    if not 1 <= low <= high:
        raise ValueError(f"lengths must satisfy 1 <= low <= high, got {lengths}")
    gen = torch.Generator().manual_seed(seed)
    n = torch.randint(low, high + 1, (batch,), generator=gen)
    mean, factor = vocabulary_gaussian(vocab.cpu())
    z = torch.randn(batch, int(n.max()), vocab.shape[1], generator=gen)
    embeds = (mean + z @ factor.T) * (torch.arange(int(n.max()))[None, :] < n[:, None])[..., None]
    return embeds.to(vocab.device), n.to(vocab.device)


def pair_distances(vocab: torch.Tensor, pairs: int = PAIRS, seed: int = 0) -> np.ndarray:
    """L2 distances float64[pairs] between random pairs of distinct vocabulary rows."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(0, vocab.shape[0], (pairs,), generator=gen)
    b = torch.randint(0, vocab.shape[0] - 1, (pairs,), generator=gen)
    b = b + (b >= a).long()  # distinct from a
    a, b = a.to(vocab.device), b.to(vocab.device)
    return (vocab[a] - vocab[b]).norm(dim=-1).cpu().double().numpy()


class _Batch:
    """The model read at each sentence's end: next-token logits [B, V] for embeddings [B, n, d]
    (right-padded; ``lengths`` [B]). A causal LM reads the sentences packed into one sequence of
    Σ lengths tokens (no padding computed): a block-diagonal causal mask and positions that
    restart at each sentence make every sentence see only itself, as if alone. A masked LM reads
    the padded batch with its mask token's embedding appended to each sentence."""

    def __init__(self, model: nn.Module, tokenizer, lengths: torch.Tensor, dtype) -> None:
        if model.config.is_encoder_decoder:
            raise GradLensError(
                "the random-sentence batch reads decoder-only and masked LMs, "
                "not encoder-decoder models"
            )
        self.model = model
        device = lengths.device
        self.rows = torch.arange(len(lengths), device=device)
        n = int(lengths.max())
        self.free = torch.arange(n, device=device)[None, :] < lengths[:, None]
        self.mask_embedding = None
        if is_masked_lm(model):
            mask_id = getattr(tokenizer, "mask_token_id", None)
            if mask_id is None:
                raise GradLensError("a masked LM needs a mask token in its tokenizer")
            emb = model.get_input_embeddings()
            with torch.no_grad():
                self.mask_embedding = emb(torch.tensor([mask_id], device=device))[0]
            self.read = lengths
            self.kwargs = {
                "attention_mask": (torch.arange(n + 1, device=device) <= lengths[:, None]).long()
            }
            return
        sentence, position = self.free.nonzero(as_tuple=True)
        total = len(sentence)
        order = torch.arange(total, device=device)
        allowed = (sentence[:, None] == sentence[None, :]) & (order[None, :] <= order[:, None])
        blocked = torch.zeros(1, 1, total, total, dtype=dtype, device=device)
        self.read = torch.cumsum(lengths, 0) - 1  # each sentence's last token, packed
        self.kwargs = {
            "attention_mask": blocked.masked_fill(~allowed, torch.finfo(dtype).min),
            "position_ids": position[None, :],
            "use_cache": False,
        }
        if last_logits_kwargs(model):  # only the read positions are unembedded
            self.kwargs["logits_to_keep"] = self.read

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        if self.mask_embedding is None:
            out = self.model(inputs_embeds=embeds[self.free][None], **self.kwargs).logits[0]
            return (out if "logits_to_keep" in self.kwargs else out[self.read]).float()
        pad = torch.zeros_like(embeds[:, :1])
        embeds = torch.cat([embeds, pad], dim=1).clone()
        embeds[self.rows, self.read] = self.mask_embedding.to(embeds.dtype)
        out = self.model(inputs_embeds=embeds, **self.kwargs)
        return out.logits[self.rows, self.read].float()


def optimize_batch(
    model: nn.Module,
    tokenizer,
    target_prompt: str,
    batch: int = 16,
    steps: int = 100,
    lr: float = 0.01,
    optimizer: str = "adam",
    seed: int = 0,
    lengths: tuple[int, int] = LENGTHS,
) -> BatchOptimization:
    """The experiment of the module docstring: ``batch`` random sentences (``seed``), ``steps``
    steps of ``optimizer`` (``adam`` or ``sgd``) at learning rate ``lr`` toward the next-token
    distribution after ``target_prompt``. The model's weights, flags and mode are unchanged."""
    if steps < 1 or batch < 1:
        raise ValueError(f"batch and steps must be >= 1, got {batch} and {steps}")
    vocab = vocabulary(model, tokenizer)
    start, n = random_sentences(vocab, batch, seed, lengths)
    free = (torch.arange(start.shape[1], device=n.device)[None, :] < n[:, None])[..., None]
    kl: list[np.ndarray] = []
    with frozen(model):
        goal = Target(model, tokenizer, "prompt", target_prompt)
        dtype = next(model.parameters()).dtype
        read = _Batch(model, tokenizer, n, dtype)
        e = start.clone().to(dtype).requires_grad_(True)
        opt = make_optimizer(optimizer, [e], lr)
        for step in range(steps + 1):
            with torch.enable_grad():
                log_p = F.log_softmax(read(e), dim=-1)
                each = (goal.log_q.exp() * (goal.log_q - log_p)).sum(-1)  # KL(q ‖ p_b)
                kl.append(each.detach().cpu().double().numpy())
                if step == steps:
                    break
                opt.zero_grad(set_to_none=False)
                each.sum().backward()
            e.grad.masked_fill_(~free, 0.0)
            if step == 0:
                grad0 = e.grad.detach().float().clone()
            opt.step()
            if step == 0:
                first = e.detach().float().clone()
    end = e.detach().float()
    keep = free[..., 0]
    sentence, position = (x.cpu().numpy() for x in keep.nonzero(as_tuple=True))
    return BatchOptimization(
        target=target_prompt,
        optimizer=optimizer,
        lr=lr,
        seed=seed,
        dim=int(vocab.shape[1]),
        lengths=n.cpu().numpy(),
        kl=np.stack(kl),
        sentence=sentence,
        position=position,
        moves=read_moves(tokenizer, vocab, start[keep], end[keep], first[keep], grad0[keep]),
        displacement=(end - start)[keep].cpu().numpy(),
        pair_distance=pair_distances(vocab, seed=seed),
    )
