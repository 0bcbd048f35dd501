"""The house limits, checked on the source text: imports only run down the stages that
docs/design.md lists, one home for the concerns that had several, pages that only display, and
the size limits (docs/design.md, "Layout")."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "gradlens"
MAX_FUNCTION_LINES = 80
MAX_PAGE_LINES = 150
MAX_TOP_LEVEL_MODULES = 10


def _stage_table() -> list[tuple[str, list[str]]]:
    """(stage, [module or package/]) from the stage table of docs/design.md, bottom first."""
    text = (REPO / "docs" / "design.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    stages = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            stages.append((cells[1], re.findall(r"`([\w/]+)`", cells[2])))
    return stages


def _stage_of() -> dict[str, int]:
    """Top-level module or package name -> its stage's position (0 = bottom)."""
    return {
        entry.rstrip("/"): rank
        for rank, (_, entries) in enumerate(_stage_table())
        for entry in entries
    }


def _sources(*roots: str) -> list[Path]:
    paths: list[Path] = []
    for root in roots:
        base = REPO / root
        paths += [base] if base.suffix == ".py" else sorted(base.rglob("*.py"))
    return paths


def _gradlens_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every ``gradlens`` import in ``path`` (absolute, as written)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gradlens":
                found += [(node.lineno, f"gradlens.{a.name}") for a in node.names]
            elif node.module.startswith("gradlens."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("gradlens.")]
    return found


def test_every_module_of_the_package_has_a_stage():
    stage_of = _stage_of()
    tops = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
    assert tops - {"__init__", "__main__"} <= set(stage_of), tops - set(stage_of)


def test_imports_run_down_the_stages():
    """A module of stage s imports only from stages ≤ s (docs/design.md's order)."""
    stage_of = _stage_of()
    upward = []
    for path in _sources("gradlens"):
        rel = path.relative_to(PACKAGE)
        own = stage_of.get(rel.parts[0].removesuffix(".py"))
        for line, module in _gradlens_imports(path):
            target = stage_of.get(module.split(".")[1]) if "." in module else None
            if own is not None and target is not None and target > own:
                upward.append(f"gradlens/{rel}:{line} imports {module}")
    assert not upward, "\n".join(upward)


def test_each_package_names_its_stage():
    stages = {name for name, _ in _stage_table()}
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert any(doc.lower().startswith(f"stage {i}, {init.parent.name}") for i in range(20)), (
            f"{init}: the docstring starts with 'Stage N, {init.parent.name}: ...'"
        )
        assert init.parent.name in stages


def test_the_top_level_keeps_only_entry_points():
    modules = [p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")]
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, sorted(p.name for p in modules)


@pytest.mark.parametrize(
    "needle",
    ["requires_grad_(False)", "os.replace(", "time.sleep("],
    ids=["frozen parameters", "atomic write", "retried open"],
)
def test_one_home_per_concern(needle):
    """The frozen-parameters context, the atomic write and the retried open each live in one
    module (``time.sleep`` in the package is the retry loop's wait)."""
    homes = sorted(
        str(p.relative_to(REPO)) for p in _sources("gradlens") if needle in p.read_text()
    )
    assert len(homes) == 1, homes


def test_pages_only_display():
    """Pages import no numpy (their arithmetic lives in gradlens) and stay short."""
    for page in _sources("views"):
        text = page.read_text()
        assert not re.search(r"^\s*(import numpy|from numpy)", text, re.M), page.name
        assert len(text.splitlines()) <= MAX_PAGE_LINES, page.name


def test_no_long_functions():
    long = []
    for path in _sources("gradlens", "views", "dashboard", "app.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} {lines}")
    assert not long, "\n".join(long)


def _readme_paths() -> list[str]:
    """Every dotted ``gradlens.…`` path the README names (module, or module + attribute)."""
    text = (REPO / "README.md").read_text()
    found = set(re.findall(r"\bgradlens(?:\.\w+)+", text))
    for module, names in re.findall(r"from (gradlens[\w.]*) import ([\w, ]+)", text):
        found |= {f"{module}.{n.strip()}" for n in names.split(",") if n.strip()}
    return sorted(found)


@pytest.mark.parametrize("dotted", _readme_paths())
def test_every_path_the_readme_names_imports(dotted):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return
    pytest.fail(f"{dotted} does not import")


def test_import_gradlens_is_light():
    probe = "import sys, gradlens; print('torch' in sys.modules, 'duckdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_read_side_imports_no_torch():
    """``select``, ``runs``, ``rank --query-id`` and the read pages need no model: importing the
    CLI and the read side loads neither torch nor the model loader (a fresh interpreter)."""
    code = (
        "import sys, gradlens.cli, gradlens.models.naming, gradlens.models.tokens\n"
        "from gradlens.runs import read, rank, report, services\n"
        "print(sorted(m for m in ('torch', 'gradlens.models.loading') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # the package's names still resolve, loading the loader on first use
    from gradlens.models import loading, resolve_model_dir

    assert resolve_model_dir is loading.resolve_model_dir
