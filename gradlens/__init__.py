"""GradLens: which parts of a language model's loss gradient identify a training example."""

__version__ = "0.1.0"
