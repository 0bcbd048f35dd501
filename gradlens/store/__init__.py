"""Stage 3, store: the DuckDB file and everything that writes it.

- ``database``: the schema, the ``Store`` write side, export.
- ``connect``: short-lived connections, retried while another process holds the file.
- ``score_kernel``: the numba kernel that scores one query against a float16 index.
- ``workfile``: a compute job's own work file, its lock, progress and publish.
- ``arrays``: ``RunArrays``, the in-memory form of one stored run.
- ``importer``: long tables of dot products into arrays.
- ``restore``: ``import --from`` of an exported run.
- ``bergson``: gradient stores written by bergson (``import --bergson-train``), and the
  module names ``export --modules`` prints.
"""
