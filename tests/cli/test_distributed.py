"""torchrun scale-out, with the README's own commands: 2 CPU ranks (gloo) produce the
single-process result in one run, on one machine (`--standalone`) and as a one-node "multi-node"
launch (`--nnodes 1 --master-addr 127.0.0.1`); every compute option survives torchrun's parser."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys

import numpy as np
import pytest
from torch.distributed.run import get_args_parser

from gradlens.cli import build_parser
from gradlens.store.database import Store
from tests.conftest import DEMO, REPO


def readme_torchrun_commands() -> list[list[str]]:
    """The torchrun commands of the README's scale-out block, as argv lists (continuations
    joined; comments dropped)."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    return [shlex.split(line) for line in re.findall(r"^torchrun .*$", text, flags=re.M)]


def _compute_option_strings() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    compute = sub.choices["compute"]
    return sorted({s for a in compute._actions for s in a.option_strings if s.startswith("--")})


def _dots(db):
    with Store(db, read_only=True) as s:
        run_id, name, status = s.con.execute("SELECT run_id, name, status FROM runs").fetchone()
        assert status == "complete"
        frame = s.frame("dots", run_id, "exact").sort_values(
            ["query_id", "candidate_id", "component_idx"]
        )
        norms = s.frame("norms", run_id, "exact")
    return name, frame.reset_index(drop=True), norms


def test_readme_has_both_commands_with_the_separator():
    commands = readme_torchrun_commands()
    assert len(commands) == 2, commands
    for argv in commands:
        i = argv.index("-m")
        assert argv[i + 1 : i + 4] == ["gradlens", "--", "compute"], argv
        assert "--run" in argv, argv


@pytest.mark.parametrize("option", _compute_option_strings())
def test_every_compute_option_passes_through_torchrun(option):
    torchrun = get_args_parser()
    for readme in readme_torchrun_commands():
        argv = _as_test_command(readme, {})[3:]  # without `python -m torch.distributed.run`
        launcher = argv[: argv.index("gradlens") + 2]  # up to and including "--"
        args = torchrun.parse_args([*launcher, "compute", option, "value"])
        assert args.training_script == "gradlens"
        assert args.training_script_args == ["compute", option, "value"]


def test_without_the_separator_torchrun_takes_run_for_its_own(capsys):
    """Why the README writes `--`: torchrun's parser abbreviates `--run` to `--run-path`."""
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--standalone", "-m", "gradlens", "compute", "--run", "x"])
    assert "ambiguous option: --run" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_test_command(argv: list[str], paths: dict[str, str]) -> list[str]:
    """The README command with its placeholders filled in for this machine: the tiny model, 2 CPU
    ranks, one node on 127.0.0.1 (the command's own options are kept as written)."""
    fill = {"$RANK": "0", "HOST0": "127.0.0.1", "29500": str(_free_port()), "cuda": "cpu"}
    fill |= {"bf16": "float32"} | paths
    out = [fill.get(a, a) for a in argv]
    for flag, value in (("--nnodes", "1"), ("--nproc-per-node", "2")):
        if flag in out:
            out[out.index(flag) + 1] = value
    return [sys.executable, "-m", "torch.distributed.run", *out[1:]]


def test_readme_torchrun_commands_equal_single_process(tmp_path, tiny_model_dir):
    train = tmp_path / "train.jsonl"
    queries = tmp_path / "queries.jsonl"
    train.write_text("".join((DEMO / "train.jsonl").read_text().splitlines(True)[:10]))
    queries.write_text("".join((DEMO / "paraphrased.jsonl").read_text().splitlines(True)[:6]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    extra = ["--model", str(tiny_model_dir), "--candidates", "3", "--no-progress"]
    single = subprocess.run(
        [sys.executable, "-m", "gradlens", "compute", "--train", str(train)]
        + ["--queries", str(queries), "--db", str(tmp_path / "one.duckdb"), "--run", "scaled"]
        + extra,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    _, one, one_norms = _dots(tmp_path / "one.duckdb")
    for i, readme in enumerate(readme_torchrun_commands()):
        db = tmp_path / f"ranks-{i}.duckdb"
        paths = {"T": str(train), "Q": str(queries), "DB": str(db), "NAME": "scaled"}
        multi = subprocess.run(
            _as_test_command(readme, paths) + extra,
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=300,
        )
        assert multi.returncode == 0, multi.stderr[-3000:]
        assert multi.stdout.count("passes=") == 1  # only rank 0 reports
        name, two, two_norms = _dots(db)
        assert name == "scaled"
        assert one[["query_id", "candidate_id", "component_idx"]].equals(
            two[["query_id", "candidate_id", "component_idx"]]
        )
        np.testing.assert_allclose(two["dot"], one["dot"], rtol=1e-6, atol=1e-10)
        assert len(two_norms) == len(one_norms)  # every example's norms written exactly once


def _ranks_errors(stderr: str) -> str:
    """The lines of a failed launch that say why (torchrun's summary alone names only a signal)."""
    why = [
        ln for ln in stderr.splitlines() if re.search(r"Error|error|terminate|what\(\)|abort", ln)
    ]
    return "\n".join(why[:40]) + "\n...\n" + stderr[-2000:]


def test_index_under_torchrun_equals_one_process(tmp_path, tiny_model_dir):
    """``gradlens index`` with 2 CPU ranks: each rank passes a slice of the training set, rank 0
    writes; the index equals the one process's."""
    from gradlens.store.index import open_index

    train = tmp_path / "train.jsonl"
    train.write_text("".join((DEMO / "train.jsonl").read_text().splitlines(True)[:7]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = ["--model", str(tiny_model_dir), "--train", str(train), "--run", "solo"]
    args += ["--index", "sjlt:d8", "--no-progress"]
    launchers = {
        "one": [sys.executable, "-m", "gradlens", "index"],
        "two": [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        + ["--nproc-per-node", "2", "-m", "gradlens", "--", "index"],
    }
    for name, launcher in launchers.items():
        ran = subprocess.run(
            [*launcher, *args, "--db", str(tmp_path / f"{name}.duckdb")],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=300,
        )
        assert ran.returncode == 0, _ranks_errors(ran.stderr)
        assert ran.stdout.count("passes=7 ") == 1  # only rank 0 reports; one pass per example
    one, two = (open_index(tmp_path / f"{n}.duckdb", "solo", "sjlt:d8") for n in launchers)
    assert list(one.train_ids) == list(two.train_ids) and one.info == two.info
    for row in range(7):
        for a, b in zip(one.vectors("train", row), two.vectors("train", row)):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7 * np.abs(a).max())
