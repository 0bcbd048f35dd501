"""Stage 4, engine: exact gradient dot products and their projections.

- ``capture``: ``GradientEngine``, one forward+backward per example with hooks on every component.
- ``terms``: a component's gradient as a dense, factored or sparse term, and their dot products.
- ``projection``: random projections (gaussian, sjlt, kron) and the run's projectors;
  ``sketch_kernel`` is sjlt's compiled kernel.
- ``schedule``: the order in which queries are computed within a memory budget.
- ``job``: the resumable compute job (lock, progress, publish).
- ``distributed``: torchrun ranks.
- ``reference``: plain autograd, the brute-force truth that tests and benchmarks compare with.
"""
