"""Stage 7, lenses: single-example gradient views computed with a loaded model.

- ``backward``: the backward lens (MLP gradients in the vocabulary).
- ``embedding``: input-embedding gradients and their optimisation.
- ``pairs``: the pair inspector (per-token gradients of two examples).
"""
