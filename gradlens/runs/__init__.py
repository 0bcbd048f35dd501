"""Stage 6, runs: the read side of a stored run and the services built on it.

- ``read``: read-only queries by database path (runs, examples, arrays, curves).
- ``services``: import of long tables, ``select`` (headline and curves stored with the run).
- ``report``: the CLI's text.
- ``viewstate``: the dashboard's view of a run as a plain value and its URL form.
"""
