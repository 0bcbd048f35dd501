"""Options are spelled once: the dataclass fields generate argparse and the run key."""

from __future__ import annotations

import dataclasses

import pytest

from gradlens.cli import build_parser
from gradlens.config import ComputeConfig
from gradlens.errors import GradLensError
from gradlens.options import COMMANDS, ComputeOptions, from_namespace


def config(opts: ComputeOptions) -> ComputeConfig:
    return ComputeConfig.from_options(opts, "m", "t", "q", ())


def test_every_key_option_is_in_the_run_config_and_no_other() -> None:
    cfg_fields = {f.name for f in dataclasses.fields(ComputeConfig)}
    for f in dataclasses.fields(ComputeOptions):
        if f.metadata["key"] and f.name != "project":
            assert f.name in cfg_fields, f.name
    base = ComputeOptions(train="a.jsonl", queries="b.jsonl", db="x.duckdb")
    key = config(base).key()
    # options that do not change the numbers do not change the key ...
    for change in ({"device": "auto"}, {"batch_size": 4}, {"max_memory": "2G"}, {"run": "n"}):
        assert config(dataclasses.replace(base, **change)).key() == key
    assert config(dataclasses.replace(base, db="other.duckdb", train="c.jsonl")).key() == key
    # ... and every key option does
    for change in ({"candidates": 3}, {"loss_on": "all"}, {"max_length": 64}, {"seed": 1}):
        assert config(dataclasses.replace(base, **change)).key() != key


def test_the_parser_is_generated_from_the_dataclasses() -> None:
    parser = build_parser()
    ns = parser.parse_args(
        ["compute", "--train", "a", "--queries", "b", "--db", "c", "--candidates", "3"]
    )
    opts = from_namespace(ComputeOptions, ns)
    assert opts == ComputeOptions(train="a", queries="b", db="c", candidates=3)
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for name, cls in COMMANDS.items():
        flags = {o for a in sub.choices[name]._actions for o in a.option_strings}
        for f in dataclasses.fields(cls):
            assert any(flag.replace("-", "_").strip("_") == f.name for flag in flags) or (
                "flag" in f.metadata and f.metadata["flag"] in flags
            ), (name, f.name)


def test_the_api_validates_like_the_cli() -> None:
    with pytest.raises(GradLensError, match="--candidates must be at least 1"):
        ComputeOptions(train="a", queries="b", db="c", candidates=0)
    with pytest.raises(GradLensError, match="--loss-on"):
        ComputeOptions(train="a", queries="b", db="c", loss_on="prompt")
    with pytest.raises(GradLensError, match="--max-length must be at least 2"):
        ComputeOptions(train="a", queries="b", db="c", max_length=1)
