"""The Streamlit side of the GradLens dashboard: what the pages in ``views/`` share. The
analysis lives in ``gradlens`` (its public API only); these modules hold state, cached reads and
widgets.

- ``state``: typed cross-page state (the view mirrored in the URL, the database, the page's
  context, the chosen model, a pair sent to the Pair inspector).
- ``common``: cached reads of the database, the shared greedy stepper, the sidebar.
- ``widgets``: tables with their download, the partner-run picker, component picks and clicks.
- ``models``: the one loaded model per server and its lock.
- ``model_widgets``, ``pair_widgets``, ``job_widgets``: the model, Pair inspector and Compute
  pages' widgets.
- ``backward_widgets``: the Backward lens page's widgets.
- ``embedding_widgets``: the Input embeddings page's forms and results.
"""
