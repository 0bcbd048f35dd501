"""Command line: ``gradlens compute | generate | runs | export | import | select``.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from gradlens.errors import GradLensError

log = logging.getLogger("gradlens")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (exit 2) instead of usage + message."""

    def error(self, message: str):  # noqa: D102
        sys.stderr.write(f"gradlens: error: {message} (see --help)\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gradlens", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("compute", help="per-component gradient dot products into DuckDB")
    c.add_argument("--model", default="smollm2", help="smollm2 | local HF folder | cached hub id")
    c.add_argument("--train", required=True, help="training set (.jsonl/.csv/.parquet)")
    c.add_argument("--queries", required=True, help="query set; ids name their originals")
    c.add_argument("--db", required=True, help="DuckDB file (created if missing)")
    c.add_argument("--run", help="run name (default: <queries file>-<key>)")
    c.add_argument("--candidates", type=_positive_int, default=5, help="BM25 candidates b")
    c.add_argument("--bm25-on", choices=["prompt", "prompt+response"], default="prompt")
    c.add_argument("--loss-on", choices=["response", "all"], default="response")
    c.add_argument("--reduction", choices=["mean", "sum"], default="mean")
    c.add_argument("--max-length", type=_positive_int, help="cut examples to N tokens (warns)")
    c.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    c.add_argument("--dtype", choices=["float32", "bf16"], default="float32")
    c.add_argument(
        "--project",
        help="projections METHOD:FRACTION,... with METHOD gaussian, sjlt, kron (Kronecker "
        "CountSketch of the factors) or trak; e.g. sjlt:0.01,gaussian:0.001",
    )
    c.add_argument("--seed", type=int, default=0, help="projection seed")
    c.add_argument(
        "--max-memory", help="gradient cache budget, e.g. 8G (default: 70%% of free - 1G)"
    )
    c.add_argument("--batch-size", type=_positive_int, help="examples per pass (cpu 1, cuda 8)")
    c.add_argument("--trust-remote-code", action="store_true", help="allow model code from disk")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    g = sub.add_parser("generate", help="model-generated query set (greedy completions)")
    g.add_argument("--model", default="smollm2")
    g.add_argument("--queries", required=True, help="paraphrased queries (their prompts are used)")
    g.add_argument("--out", required=True, help="output JSONL")
    g.add_argument("--max-new-tokens", type=_positive_int, default=200)
    g.add_argument("--device", default="cpu")
    g.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("runs", help="list the runs in a database")
    r.add_argument("--db", required=True)

    e = sub.add_parser("export", help="write a run's tables as Parquet files")
    e.add_argument("--db", required=True)
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True, help="output folder")

    i = sub.add_parser("import", help="import long tables of externally computed dot products")
    i.add_argument("--db", required=True)
    i.add_argument("--run", required=True, help="name of the new run")
    i.add_argument(
        "--dots", required=True, help="Parquet/CSV: query_id, candidate_id, component, dot"
    )
    i.add_argument(
        "--norms", required=True, help="Parquet/CSV: split, example_id, component, sqnorm"
    )
    i.add_argument("--n-params", help="JSON {parameter name: count}, in component order")
    i.add_argument("--filter", action="append", default=[], metavar="COL=VALUE")

    s = sub.add_parser("select", help="headline table, greedy selection curves (stored in the DB)")
    s.add_argument("--db", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--folds", type=_positive_int, default=5, help="k for held-out evaluation")
    s.add_argument("--seed", type=int, default=0)
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
    except KeyboardInterrupt:
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


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "compute":
        from gradlens.compute import compute, parse_memory

        summary = compute(
            model=args.model,
            train_path=args.train,
            queries_path=args.queries,
            db=args.db,
            run=args.run,
            candidates=args.candidates,
            bm25_on=args.bm25_on,
            loss_on=args.loss_on,
            reduction=args.reduction,
            max_length=args.max_length,
            device=args.device,
            dtype=args.dtype,
            project=args.project,
            seed=args.seed,
            max_memory=parse_memory(args.max_memory) if args.max_memory else None,
            batch_size=args.batch_size,
            trust_remote_code=args.trust_remote_code,
            progress=not args.no_progress,
        )
        if summary is not None:  # None on torchrun ranks other than 0
            print(summary.line())
        return 0
    if args.command == "generate":
        from gradlens.generate import generate

        n = generate(
            args.model,
            args.queries,
            args.out,
            max_new_tokens=args.max_new_tokens,
            device=args.device,
            progress=not args.no_progress,
        )
        print(f"wrote {n} examples to {args.out}")
        return 0
    if args.command == "runs":
        from gradlens.store import Store

        with Store(args.db, read_only=True) as store:
            runs = store.list_runs()
        if runs.empty:
            print(f"no runs in {args.db}")
        else:
            print(runs.to_string(index=False))
        return 0
    if args.command == "export":
        from gradlens.store import Store

        with Store(args.db, read_only=True) as store:
            run = store.resolve(args.run)
            paths = store.export(run["run_id"], args.out)
        print(f"exported run '{run['name']}' to {len(paths)} Parquet files in {args.out}")
        return 0
    if args.command == "import":
        from gradlens.report import import_run

        print(import_run(args.db, args.run, args.dots, args.norms, args.n_params, args.filter))
        return 0
    if args.command == "select":
        from gradlens.report import select_report

        print(select_report(args.db, args.run, folds=args.folds, seed=args.seed))
        return 0
    raise GradLensError(f"unknown command {args.command}")  # pragma: no cover
