"""Stage 2, data: examples in, query sets out.

- ``examples``: reading datasets (JSONL / CSV / Parquet and the ``sources``), chat formatting,
  loss masking.
- ``sources``: ``datasets``-library inputs (a ``save_to_disk`` folder, an Arrow file,
  ``hf:NAME`` from the local cache) and the column names of a data file (``--columns``).
- ``candidates``: BM25 candidates per query.
- ``preview``: an example as the model sees it, token by token (the Model page's preview).
- ``generate``: the model-generated query set (the model completes the paraphrased prompts).
- ``paraphrase``: the paraphrased query set from an OpenAI-compatible endpoint (package:
  ``checks``, ``endpoint``, ``job``).
"""

from gradlens.data.examples import Example, load_examples, tokenize_example

__all__ = ["Example", "load_examples", "tokenize_example"]
