"""Stage 7, lenses: single-example gradient views computed with a loaded model.

- ``backward``: the backward lens (MLP gradients in the vocabulary, the shift; a decoder LM's
  blocks or a T5 model's decoder blocks).
- ``ranks``: the backward lens over many prompts (``gradlens lens-ranks``, the paper's Fig. 4).
- ``edit``: one gradient step on one MLP matrix, the model restored.
- ``embedding``: input-embedding gradients and their optimisation (Adam or SGD), where the
  tokens went (``Moves``).
- ``embedding_batch``: the same experiment on a batch of random sentences drawn from the
  vocabulary's Gaussian.
- ``pairs``: the pair inspector (per-token gradients of two examples, the token matrix).
- ``token_gram``: dot products between per-token gradients from their factors.
"""
