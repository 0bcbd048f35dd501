"""Command line: ``gradlens COMMAND`` (compute, index, generate, paraphrase, runs, export, import,
select, lens-ranks, rank; ``gradlens --help`` lists them all).

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import duckdb

from gradlens.errors import GradLensError
from gradlens.options import (
    COMMANDS,
    ComputeOptions,
    ExportOptions,
    GenerateOptions,
    ImportOptions,
    IndexOptions,
    LensRanksOptions,
    ParaphraseOptions,
    RankOptions,
    RunsOptions,
    SelectOptions,
    add_options,
    from_namespace,
)

log = logging.getLogger("gradlens")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (exit 2) instead of usage + message."""

    def error(self, message: str):  # noqa: D102
        sys.stderr.write(f"gradlens: error: {message} (see --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one subcommand per options dataclass in ``gradlens.options.COMMANDS``."""
    parser = _Parser(prog="gradlens", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, cls in COMMANDS.items():
        summary = (cls.__doc__ or "").split(": ", 1)[-1].strip()
        add_options(sub.add_parser(name, help=summary, description=summary), cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="gradlens: %(message)s",
        stream=sys.stderr,
    )
    _quiet_libraries()
    try:
        return _dispatch(args)
    except GradLensError as exc:
        sys.stderr.write(f"gradlens: error: {exc}\n")
        return 2
    except (KeyboardInterrupt, duckdb.InterruptException):  # DuckDB's, mid-write
        sys.stderr.write("gradlens: interrupted; run the same command again to resume\n")
        return 130


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass


def _compute(opts: ComputeOptions) -> int:
    from gradlens.engine.job import run_compute

    summary = run_compute(opts)
    if summary is not None:  # None on torchrun ranks other than 0
        print(summary.line())
    return 0


def _index(opts: IndexOptions) -> int:
    from gradlens.engine.job import run_index

    summary = run_index(opts)
    if summary is not None:  # None on torchrun ranks other than 0
        print(summary.line())
    return 0


def _generate(opts: GenerateOptions) -> int:
    from gradlens.data.generate import generate

    n = generate(opts)
    print(f"wrote {n} examples to {opts.out}")
    return 0


def _paraphrase(opts: ParaphraseOptions) -> int:
    from gradlens.data.paraphrase import paraphrase

    print(paraphrase(opts).line())
    return 0


def _runs(opts: RunsOptions) -> int:
    from gradlens.runs.read import list_runs
    from gradlens.store.workfile import running_jobs

    jobs = running_jobs(opts.db)
    if not Path(opts.db).exists() and jobs:
        print(f"no runs in {opts.db} yet")
    else:
        runs = list_runs(opts.db)
        print(f"no runs in {opts.db}" if runs.empty else runs.to_string(index=False))
    for p in jobs:
        state = p.state if p.alive or p.state != "running" else "stopped"
        print(
            f"job '{p.name}' ({p.run_id}): {state}, {p.done}/{p.total} queries, "
            f"{p.passes} passes, {p.elapsed:.0f} s (rerun its compute command to resume)"
        )
    return 0


def _export(opts: ExportOptions) -> int:
    if opts.modules:
        from gradlens.runs.services import export_modules

        print(" ".join(export_modules(opts.db, opts.run, opts.subset, opts.greedy)))
        return 0
    from gradlens.store.database import Store

    with Store(opts.db, read_only=True) as store:
        run = store.resolve(opts.run)
        paths = store.export(run["run_id"], opts.out)
    print(f"exported run '{run['name']}' to {len(paths)} Parquet files in {opts.out}")
    return 0


def _import(opts: ImportOptions) -> int:
    if opts.folder is not None:
        from gradlens.store.restore import restore_run

        print(restore_run(opts.db, opts.folder).line())
        return 0
    if opts.bergson_train is not None:
        from gradlens.runs.services import import_bergson

        b = None if opts.all_pairs else (opts.candidates or 5)
        args = (opts.db, opts.run, opts.bergson_train, opts.bergson_queries, b, opts.columns)
        print(import_bergson(*args).line())
        return 0
    from gradlens.runs.services import import_run

    summary = import_run(opts.db, opts.run, opts.dots, opts.norms, opts.n_params, opts.filter)
    print(summary.line())
    return 0


def _select(opts: SelectOptions) -> int:
    from gradlens.runs.report import select_json, select_text
    from gradlens.runs.services import select_run

    result = select_run(opts)
    print(select_json(result) if opts.json else select_text(result))
    return 0


def _lens_ranks(opts: LensRanksOptions) -> int:
    from gradlens.lenses.ranks import lens_ranks_text, run_lens_ranks

    frame = run_lens_ranks(opts)
    print(lens_ranks_text(frame))
    where = f"; wrote {len(frame)} rows to {opts.out}" if opts.out else ""
    print(f"{frame.attrs['seconds']:.1f} s{where}")
    return 0


def _rank(opts: RankOptions) -> int:
    from gradlens.runs.rank import json_line, rank

    ranking = rank(opts)
    print(json_line(ranking) if opts.json else ranking.text())
    return 0


_HANDLERS = {
    "compute": _compute,
    "index": _index,
    "generate": _generate,
    "paraphrase": _paraphrase,
    "runs": _runs,
    "export": _export,
    "import": _import,
    "select": _select,
    "lens-ranks": _lens_ranks,
    "rank": _rank,
}


def _dispatch(args: argparse.Namespace) -> int:
    return _HANDLERS[args.command](from_namespace(COMMANDS[args.command], args))
