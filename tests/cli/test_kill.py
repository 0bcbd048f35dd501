"""Kill at any point: a command killed with SIGKILL at a fault point (``gradlens.faults``,
reached through ``GRADLENS_FAULT``, not by timing) and started again with the same command ends
with exactly the rows and values of an uninterrupted run, and the database never shows a run
complete (or a half run) before the end. Ctrl-C (SIGINT) exits 130 saying how to resume.

Every command runs in its own process: ``python -m gradlens`` for ``import`` of long tables,
otherwise a process forked from one server that has already imported torch and transformers (a
fresh interpreter spends 5-15 s on those imports on a loaded 2-core box), which runs
``gradlens.cli.main`` as ``python -m gradlens`` does. All of them run single-threaded
(``OMP_NUM_THREADS=1``: the same computation in every process, so the values compare bit for
bit, and no OpenMP spin-waiting on a busy machine).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from gradlens import faults
from gradlens.cli import main
from gradlens.faults import ENV, fault_point
from gradlens.store.database import DATA_TABLES, Store
from gradlens.store.workfile import running_jobs, work_file
from tests.conftest import REPO
from tests.helpers import export_with_one_curve_value_changed, synthetic_import_args

KILLED = -9
INTERRUPTED = 130
RESUME_HINT = "gradlens: interrupted; run the same command again to resume"

TRAIN = [
    ("t1", "How do I boil an egg?", "Put it in boiling water for eight minutes."),
    ("t2", "How do I fry an egg?", "Heat oil in a pan and crack the egg."),
    ("t3", "What is the capital of France?", "Paris."),
    ("t4", "What is the capital of Spain?", "Madrid."),
    ("t5", "Name a red fruit.", "A strawberry."),
    ("t6", "Name a yellow fruit.", "A banana."),
]
#: The first two queries share their candidates, so a job resumed after the first one computes
#: gradients of training examples whose norms are already stored.
QUERIES = [
    ("t1", "How can I boil eggs?", "Boil them for eight minutes."),
    ("t2", "How can I fry eggs?", "Crack them into hot oil."),
    ("t3", "Which city is the capital of France?", "It is Paris."),
]
#: (point, queries in the work file right after the kill, or None: no work file)
COMPUTE_POINTS = [
    ("compute.model", None),
    ("compute.bm25", None),
    ("compute.setup", 0),
    ("compute.query:1", 0),  # the first query
    ("compute.query:2", 1),  # mid-run
    ("compute.write:3", 2),  # while writing the last query
    ("compute.complete", 3),
    ("compute.publish:2", 3),  # mid-publish: runs and components copied, the rest not
    ("compute.published", 3),
]


@dataclass(frozen=True)
class Ran:
    rc: int
    out: str
    err: str


#: Environment of every command run here (see the module docstring).
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_SERVER = r"""
import importlib, json, os, sys, traceback
import gradlens.cli
for m in ("gradlens.engine.job", "gradlens.data.generate", "gradlens.runs.services",
          "gradlens.store.restore", "gradlens.runs.report",
          "transformers.models.llama.modeling_llama",
          "transformers.models.auto.modeling_auto", "transformers.models.auto.tokenization_auto",
          "transformers.generation.utils", "transformers.integrations.hub_kernels",
          "transformers.core_model_loading", "transformers.conversion_mapping",
          "transformers.tokenization_utils_tokenizers", "transformers.quantizers.auto",
          "transformers.loss.loss_utils"):
    try:  # a speed-up only: what the first model load would import
        importlib.import_module(m)
    except ImportError:
        pass
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.pop(req["env_key"], None)
        os.environ.update(req["env"])
        for fd, path in ((1, req["out"]), (2, req["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        try:
            rc = gradlens.cli.main(req["argv"])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


class ForkServer:
    """Runs ``gradlens.cli.main(argv)`` in a process forked from a server that has imported
    torch and transformers once; ``rc`` is -N when the child died of signal N. The server and
    its children form their own process group, killed when a reply takes over ``TIMEOUT``."""

    TIMEOUT = 300.0

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.n = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=_env(None),
            start_new_session=True,
        )
        assert self._reply() == "ready"

    def _reply(self) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.TIMEOUT)
        if not ready:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"no reply from the fork server in {self.TIMEOUT:.0f} s")
        return self.proc.stdout.readline().strip()

    def __call__(self, argv: list[str], fault: str | None = None) -> Ran:
        self.n += 1
        out, err = self.tmp / f"{self.n}.out", self.tmp / f"{self.n}.err"
        env = {ENV: fault} if fault else {}
        req = {"argv": argv, "env": env, "env_key": ENV, "out": str(out), "err": str(err)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        rc = int(self._reply())
        return Ran(rc, out.read_text(), err.read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _env(fault: str | None) -> dict[str, str]:
    """This environment, single-threaded, with ``GRADLENS_FAULT=fault`` or without it."""
    env = {k: v for k, v in os.environ.items() if k != ENV} | SINGLE_THREAD
    return env | {ENV: fault} if fault else env


def python_m(argv: list[str], fault: str | None = None) -> Ran:
    """``python -m gradlens ARGV`` with ``GRADLENS_FAULT=fault`` (or without the variable)."""
    p = subprocess.run(
        [sys.executable, "-m", "gradlens", *argv],
        env=_env(fault),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Ran(p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="module")
def gradlens_fork(tmp_path_factory):
    server = ForkServer(tmp_path_factory.mktemp("fork-io"))
    yield server
    server.close()


def _write_jsonl(path: Path, rows) -> Path:
    lines = [json.dumps({"id": i, "prompt": p, "response": r}) for i, p, r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-data")
    return _write_jsonl(root / "train.jsonl", TRAIN), _write_jsonl(root / "queries.jsonl", QUERIES)


def run_rows(db: Path, run: str | None = None) -> dict[str, pd.DataFrame]:
    """Every row of the database's run (the only one, or the one named ``run``), each table
    sorted (order-free comparison); the ``runs`` row without created_at and stats, and the
    ``select_timings`` rows without their seconds (the session's timings)."""
    with Store(db, read_only=True) as s:
        run_id = s.con.execute("SELECT run_id FROM runs").fetchone()[0]
        if run is not None:
            run_id = s.resolve(run)["run_id"]
        frames = {
            t: s.con.execute(f"SELECT * FROM {t} WHERE run_id = ?", [run_id]).df()
            for t in ("runs",) + DATA_TABLES
        }
    frames["runs"] = frames["runs"].drop(columns=["created_at", "stats"])
    frames["select_timings"] = frames["select_timings"].drop(columns=["seconds"])
    return {
        t: f.sort_values(list(f.columns), ignore_index=True, na_position="first")
        for t, f in frames.items()
    }


KEYS = {
    "dots": ["method", "query_id", "candidate_id", "component_idx"],
    "norms": ["method", "split", "example_id", "component_idx"],
    "candidates": ["query_id", "candidate_id"],
    "examples": ["split", "example_id"],
    "components": ["component_idx"],
}


def assert_same_rows(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    """The same rows, bit for bit, and no duplicated key in any table."""
    for table, keys in KEYS.items():
        dup = got[table][got[table].duplicated(keys, keep=False)]
        assert dup.empty, f"duplicate {table} rows:\n{dup.head()}"
    for table in want:
        pd.testing.assert_frame_equal(got[table], want[table], check_exact=True, obj=table)
    assert got["runs"]["status"].tolist() == ["complete"]


def runs_in(db: Path) -> list[tuple[str, str]]:
    """(name, status) of every run the database shows ([] when it does not exist)."""
    if not db.exists():
        return []
    with Store(db, read_only=True) as s:
        return s.con.execute("SELECT name, status FROM runs ORDER BY name").fetchall()


# -- compute ---------------------------------------------------------------------------------


def compute_argv(model_dir, data, db: Path) -> list[str]:
    train, queries = data
    return [
        "compute",
        "--model",
        str(model_dir),
        "--train",
        str(train),
        "--queries",
        str(queries),
        "--db",
        str(db),
        "--run",
        "k",
        "--candidates",
        "2",
        "--no-progress",
    ]


@pytest.fixture(scope="module")
def compute_reference(gradlens_fork, tiny_model_dir, kill_data, tmp_path_factory):
    """The rows of an uninterrupted compute."""
    db = tmp_path_factory.mktemp("compute-ref") / "ref.duckdb"
    ran = gradlens_fork(compute_argv(tiny_model_dir, kill_data, db))
    assert ran.rc == 0, ran.err
    return run_rows(db)


def _work_state(db: Path, run_id: str) -> tuple[str, int, int] | None:
    """(status, queries done, queries with dots) in the job's work file, None if absent."""
    path = work_file(db, run_id)
    if not path.exists():
        return None
    with Store(path, read_only=True) as s:
        status = s.con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()
        done = len(s.done_queries(run_id))
        with_dots = s.con.execute(
            "SELECT count(DISTINCT query_id) FROM dots WHERE run_id = ?", [run_id]
        ).fetchone()[0]
    return (status[0] if status else "none", done, with_dots)


@pytest.mark.parametrize(("point", "done"), COMPUTE_POINTS, ids=[p for p, _ in COMPUTE_POINTS])
def test_compute_killed_then_rerun(
    point, done, gradlens_fork, tiny_model_dir, kill_data, compute_reference, tmp_path
):
    db = tmp_path / "x.duckdb"
    argv = compute_argv(tiny_model_dir, kill_data, db)
    killed = gradlens_fork(argv, fault=point)
    assert killed.rc == KILLED, killed.err
    run_id = compute_reference["runs"]["run_id"][0]
    state = _work_state(db, run_id)
    if point == "compute.published":
        assert runs_in(db) == [("k", "complete")]  # published; its work file is left behind
        assert state is not None
    else:
        assert runs_in(db) == []  # the database never shows a half run, nor one complete early
        if done is None:
            assert state is None
        else:
            status = "complete" if done == len(QUERIES) else "running"
            assert state == (status, done, done)  # a query's rows land with its progress row
    again = gradlens_fork(argv)
    assert again.rc == 0, again.err
    assert_same_rows(run_rows(db), compute_reference)
    assert not work_file(db, run_id).exists() and running_jobs(db) == []
    if point == "compute.published":
        assert "already complete" in again.out
    else:
        assert again.out.startswith("run=k ")


def test_compute_ctrl_c_says_how_to_resume(
    gradlens_fork, tiny_model_dir, kill_data, compute_reference, tmp_path
):
    db = tmp_path / "x.duckdb"
    argv = compute_argv(tiny_model_dir, kill_data, db)
    stopped = gradlens_fork(argv, fault="compute.query:2:int")
    assert stopped.rc == INTERRUPTED
    assert stopped.err.strip().splitlines()[-1] == RESUME_HINT
    assert runs_in(db) == []
    (progress,) = running_jobs(db)
    assert (progress.state, progress.done, progress.total) == ("interrupted", 1, len(QUERIES))
    again = gradlens_fork(argv)
    assert again.rc == 0, again.err
    assert_same_rows(run_rows(db), compute_reference)


# -- the index (compute --index) ----------------------------------------------------------------

INDEX = ["--index", "sjlt:d8,exact:L1.down"]
#: Kill points of a compute with --index. ``index.write`` is reached once per method and row:
#: the query rows and 4 candidates of the 3 queries make 14, the 2 training examples no query
#: uses 4 more. 2: inside the first query's rows (nothing stored yet); 9: the third query's
#: row, its dots not yet stored (the rerun computes that query again); 17: the last example of
#: the pass after the queries. Then the finished folders, their move and the publish that
#: describes them.
INDEX_POINTS = [
    "index.write:2",
    "index.write:9",
    "index.write:17",
    "index.finalized",
    "compute.complete",
    "index.moved",
    "index.record",
    "compute.published",
]
#: Kill points of an index added to a published run (its own short transaction).
ADDED_INDEX_POINTS = ["index.write:3", "index.finalized", "index.moved", "index.record"]


def index_state(db: Path) -> dict[str, object]:
    """The run's index rows (``index_files``, ``index_rows``, sorted) and every index file's
    bytes by path relative to ``X.index/<run_id>/``."""
    from gradlens.store.index import run_index_dir

    with Store(db, read_only=True) as s:
        run_id = s.con.execute("SELECT run_id FROM runs").fetchone()[0]
        out: dict[str, object] = {
            t: s.con.execute(f"SELECT * FROM {t} WHERE run_id = ? ORDER BY ALL", [run_id]).df()
            for t in ("index_files", "index_rows")
        }
    root = run_index_dir(db, run_id)
    out["files"] = {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
    return out


def assert_same_index(got: dict, want: dict) -> None:
    for table in ("index_files", "index_rows"):
        pd.testing.assert_frame_equal(got[table], want[table], check_exact=True, obj=table)
    assert sorted(got["files"]) == sorted(want["files"])
    for name, data in want["files"].items():
        assert got["files"][name] == data, name  # bit for bit


@pytest.fixture(scope="module")
def index_reference(gradlens_fork, tiny_model_dir, kill_data, tmp_path_factory):
    """Rows and index of an uninterrupted compute --index, and of a compute without it to
    which the same --index is added afterwards (with the database before that)."""
    root = tmp_path_factory.mktemp("index-ref")
    db = root / "same-pass.duckdb"
    assert gradlens_fork(compute_argv(tiny_model_dir, kill_data, db) + INDEX).rc == 0
    plain = root / "plain.duckdb"
    assert gradlens_fork(compute_argv(tiny_model_dir, kill_data, plain)).rc == 0
    added = root / "added.duckdb"
    shutil.copy(plain, added)
    assert gradlens_fork(compute_argv(tiny_model_dir, kill_data, added) + INDEX).rc == 0
    return {
        "same_pass": (run_rows(db), index_state(db)),
        "plain": plain,
        "added": (run_rows(added), index_state(added)),
    }


@pytest.mark.parametrize("point", INDEX_POINTS)
def test_compute_with_index_killed_then_rerun(
    point, gradlens_fork, tiny_model_dir, kill_data, index_reference, tmp_path
):
    from gradlens.store.index import work_index_dir

    db = tmp_path / "x.duckdb"
    argv = compute_argv(tiny_model_dir, kill_data, db) + INDEX
    killed = gradlens_fork(argv, fault=point)
    assert killed.rc == KILLED, killed.err
    want_rows, want_index = index_reference["same_pass"]
    if point != "compute.published":
        assert runs_in(db) == []
    again = gradlens_fork(argv)
    assert again.rc == 0, again.err
    assert_same_rows(run_rows(db), want_rows)
    assert_same_index(index_state(db), want_index)
    run_id = want_rows["runs"]["run_id"][0]
    assert not work_file(db, run_id).exists() and not work_index_dir(db, run_id).exists()


@pytest.mark.parametrize("point", ADDED_INDEX_POINTS)
def test_index_added_to_a_published_run_killed_then_rerun(
    point, gradlens_fork, tiny_model_dir, kill_data, index_reference, tmp_path
):
    db = tmp_path / "x.duckdb"
    shutil.copy(index_reference["plain"], db)
    argv = compute_argv(tiny_model_dir, kill_data, db) + INDEX
    killed = gradlens_fork(argv, fault=point)
    assert killed.rc == KILLED, killed.err
    with Store(db, read_only=True) as s:  # the run stays as it was, undescribed index or not
        assert s.con.execute("SELECT status FROM runs").fetchall() == [("complete",)]
    again = gradlens_fork(argv)
    assert again.rc == 0, again.err
    want_rows, want_index = index_reference["added"]
    assert_same_rows(run_rows(db), want_rows)
    assert_same_index(index_state(db), want_index)


# -- generate --------------------------------------------------------------------------------


def generate_argv(model_dir, data, out: Path) -> list[str]:
    return [
        "generate",
        "--model",
        str(model_dir),
        "--queries",
        str(data[1]),
        "--out",
        str(out),
        "--max-new-tokens",
        "4",
        "--no-progress",
    ]


@pytest.fixture(scope="module")
def generate_reference(gradlens_fork, tiny_model_dir, kill_data, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("generate-ref") / "gen.jsonl"
    ran = gradlens_fork(generate_argv(tiny_model_dir, kill_data, out))
    assert ran.rc == 0, ran.err
    return out.read_bytes()


@pytest.mark.parametrize(
    ("point", "lines"), [("generate.model", 0), ("generate.line:2", 2), ("generate.out", 3)]
)
def test_generate_killed_then_rerun(
    point, lines, gradlens_fork, tiny_model_dir, kill_data, generate_reference, tmp_path
):
    out = tmp_path / "gen.jsonl"
    argv = generate_argv(tiny_model_dir, kill_data, out)
    killed = gradlens_fork(argv, fault=point)
    assert killed.rc == KILLED, killed.err
    assert not out.exists()  # never a part of the set under the final name
    partial = tmp_path / "gen.jsonl.partial"
    assert len(partial.read_text().splitlines()) == lines
    again = gradlens_fork(argv)
    assert again.rc == 0, again.err
    assert out.read_bytes() == generate_reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.jsonl"]


def test_generate_drops_a_line_cut_short(
    gradlens_fork, tiny_model_dir, kill_data, generate_reference, tmp_path
):
    """A process killed while writing a line leaves it without its newline: it is generated
    again, not read as an answer and not glued to the next one."""
    out = tmp_path / "gen.jsonl"
    first, second = generate_reference.splitlines(keepends=True)[:2]
    (tmp_path / "gen.jsonl.partial").write_bytes(first + second[: len(second) // 2])
    again = gradlens_fork(generate_argv(tiny_model_dir, kill_data, out))
    assert again.rc == 0, again.err
    assert out.read_bytes() == generate_reference


# -- import, import --from, select ------------------------------------------------------------


@pytest.fixture(scope="module")
def import_reference(tmp_path_factory):
    """(import argv, rows of an uninterrupted import) of the synthetic run ``syn``."""
    tmp = tmp_path_factory.mktemp("import-ref")
    argv = synthetic_import_args(tmp, tmp / "ref.duckdb")
    assert main(argv) == 0
    return argv, run_rows(tmp / "ref.duckdb")


def _with_db(argv: list[str], db: Path) -> list[str]:
    argv = list(argv)
    argv[argv.index("--db") + 1] = str(db)
    return argv


def test_import_killed_then_rerun(gradlens_fork, import_reference, tmp_path):
    ref_argv, want = import_reference
    db = tmp_path / "x.duckdb"
    argv = _with_db(ref_argv, db)
    killed = python_m(argv, fault="import.write")  # the real entry point, killed
    assert killed.rc == KILLED, killed.err
    assert runs_in(db) == []  # not even a 'running' row: all of the import or nothing
    again = gradlens_fork(argv)
    assert again.rc == 0, again.err
    assert_same_rows(run_rows(db), want)


def test_import_ctrl_c_says_how_to_resume(gradlens_fork, import_reference, tmp_path):
    ref_argv, want = import_reference
    db = tmp_path / "x.duckdb"
    argv = _with_db(ref_argv, db)
    stopped = python_m(argv, fault="import.write:1:int")
    assert stopped.rc == INTERRUPTED
    assert stopped.err.strip().splitlines()[-1] == RESUME_HINT
    assert runs_in(db) == []
    assert gradlens_fork(argv).rc == 0
    assert_same_rows(run_rows(db), want)


@pytest.fixture(scope="module")
def exported(import_reference, tmp_path_factory):
    """An export folder of the synthetic run after select, and the same folder with one
    curve value changed."""
    ref_argv, _ = import_reference
    tmp = tmp_path_factory.mktemp("export")
    db = tmp / "src.duckdb"
    assert main(_with_db(ref_argv, db)) == 0
    assert main(["select", "--db", str(db), "--run", "syn", "--folds", "2"]) == 0
    folder = tmp / "export"
    assert main(["export", "--db", str(db), "--run", "syn", "--out", str(folder)]) == 0
    return folder, export_with_one_curve_value_changed(folder, tmp / "changed")


def _restored(db: Path, folder: Path) -> dict[str, pd.DataFrame]:
    assert main(["import", "--db", str(db), "--from", str(folder)]) == 0
    return run_rows(db)


@pytest.mark.parametrize(
    ("replacing", "point"),
    [(False, "restore.write:1"), (True, "restore.write:4")],
    ids=["fresh", "replacing"],
)
def test_restore_killed_then_rerun(replacing, point, gradlens_fork, exported, tmp_path):
    """``import --from`` killed after the runs table (into a fresh database) or mid-way
    (replacing an older copy of the run): the database keeps what it had."""
    folder, changed = exported
    want_before = _restored(tmp_path / "old.duckdb", folder) if replacing else None
    want = _restored(tmp_path / "new.duckdb", changed)
    db = tmp_path / "x.duckdb"
    if replacing:
        _restored(db, folder)
    argv = ["import", "--db", str(db), "--from", str(changed)]
    killed = gradlens_fork(argv, fault=point)
    assert killed.rc == KILLED, killed.err
    if replacing:  # the old run, untouched
        assert_same_rows(run_rows(db), want_before)
    else:
        assert runs_in(db) == []
    again = gradlens_fork(argv)
    assert again.rc == 0, again.err
    assert_same_rows(run_rows(db), want)


SELECT = ["select", "--run", "syn", "--folds", "3"]


@pytest.fixture(scope="module")
def selected(gradlens_fork, import_reference, tmp_path_factory):
    """(a database holding the synthetic run selected with ``--folds 2``, its rows, the rows
    of an uninterrupted ``select --folds 3`` on it)."""
    ref_argv, _ = import_reference
    tmp = tmp_path_factory.mktemp("selected")
    db, ref = tmp / "folds2.duckdb", tmp / "ref.duckdb"
    assert main(_with_db(ref_argv, db)) == 0
    assert gradlens_fork(["select", "--db", str(db), "--run", "syn", "--folds", "2"]).rc == 0
    shutil.copy(db, ref)
    assert gradlens_fork([*SELECT, "--db", str(ref)]).rc == 0
    before, want = run_rows(db), run_rows(ref)
    assert not want["selection_curves"].equals(before["selection_curves"])
    return db, before, want


@pytest.mark.parametrize("point", ["select.computed", "select.write"])
def test_select_killed_then_rerun(point, gradlens_fork, selected, tmp_path):
    """``select --folds 3`` killed on a run selected with ``--folds 2``: the old curves stay
    until the new ones replace them; the rerun stores exactly those of an uninterrupted one."""
    src, before, want = selected
    db = tmp_path / "x.duckdb"
    shutil.copy(src, db)
    killed = gradlens_fork([*SELECT, "--db", str(db)], fault=point)
    assert killed.rc == KILLED, killed.err
    assert_same_rows(run_rows(db), before)
    again = gradlens_fork([*SELECT, "--db", str(db)])
    assert again.rc == 0, again.err
    assert_same_rows(run_rows(db), want)


# -- the hook itself ---------------------------------------------------------------------------


def test_fault_point_counts_and_rejects_unknown_points(monkeypatch):
    monkeypatch.setattr(faults, "_reached", faults.Counter())
    monkeypatch.delenv(ENV, raising=False)
    fault_point("select.write")  # unset: nothing happens
    monkeypatch.setenv(ENV, "select.computed, select.write:2:int")
    fault_point("select.write")  # the first time: nothing
    fault_point("import.write")  # not named: nothing
    with pytest.raises(KeyboardInterrupt):
        fault_point("select.write")
    fault_point("select.write")  # the third time: nothing
    for bad in ("select.wrote", "select.write:x", "select.write:1:2", "select.write:1:term"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ValueError, match=ENV):
            fault_point("select.write")
    with pytest.raises(ValueError, match="not in gradlens.faults.POINTS"):
        fault_point("nowhere")


def test_every_point_is_placed_and_documented():
    """Each name in POINTS is reached by a ``fault_point`` call in gradlens and listed in the
    module docstring (the documentation of the hook)."""
    source = "".join(p.read_text() for p in (REPO / "gradlens").rglob("*.py"))
    for point in faults.POINTS:
        assert f'fault_point("{point}")' in source, point
        assert f"``{point}``" in faults.__doc__, point
