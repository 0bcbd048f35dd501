"""SQL only with parameters: every SQL string the package and the dashboard hand to DuckDB is a
literal, or an f-string whose only interpolated value is a table name taken from the store's own
schema (identifiers cannot be bound as parameters). Values from users (run names, ids, paths)
travel as ``?`` parameters; tests/app/test_hostile_text.py runs a run named with quotes and
``; DROP TABLE`` through compute, select and every page."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

SQL_CALLS = {"execute", "executemany", "sql", "query", "fetchdf"}
# The only names an SQL f-string may interpolate: loop variables over the schema's tables.
IDENTIFIER_NAMES = {"table"}
# A fixed SQL fragment built from literals in the same function (restore._column_types).
FRAGMENT_NAMES = {"sql"}


def _sources() -> list[Path]:
    roots = [REPO / "gradlens", REPO / "dashboard", REPO / "views"]
    return [p for root in roots for p in sorted(root.rglob("*.py"))] + [REPO / "app.py"]


def _interpolations(node: ast.JoinedStr) -> list[str]:
    return [ast.unparse(v.value) for v in node.values if isinstance(v, ast.FormattedValue)]


def test_sql_strings_interpolate_only_schema_identifiers():
    bad = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in SQL_CALLS or not node.args:
                continue
            first = node.args[0]
            if isinstance(first, ast.JoinedStr):
                names = set(_interpolations(first))
                if not names <= IDENTIFIER_NAMES | FRAGMENT_NAMES:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {sorted(names)}")
            elif isinstance(first, ast.BinOp) or (
                isinstance(first, ast.Call) and getattr(first.func, "attr", "") == "format"
            ):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: string built by + or format")
    assert not bad, "SQL built from values instead of parameters:\n" + "\n".join(bad)
