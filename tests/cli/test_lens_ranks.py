"""`gradlens lens-ranks`: the backward lens over many prompts (the paper's Fig. 4) as a command:
its CSV equals the in-process computation, bad input is one line naming the file and line, and
the shipped demo result is the demo's prompts as the current code computes them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gradlens.cli import main
from gradlens.errors import GradLensError
from gradlens.files import progress_path
from gradlens.lenses.ranks import (
    COLUMNS,
    lens_ranks,
    lens_ranks_summary,
    read_lens_prompts,
    read_lens_ranks,
)
from gradlens.models.loading import load_model
from tests.conftest import DEMO

ROWS = [
    {"id": "cat", "prompt": "The cat sat on the", "target": " mat"},
    {"prompt": "One, two, three,", "target": " four"},
    {"id": "<b>", "prompt": "Lionel Messi plays for", "target": " Paris"},
]


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_lens_ranks_writes_what_the_function_computes(tmp_path, tiny_model_dir, capsys):
    prompts, out = tmp_path / "p.jsonl", tmp_path / "ranks.csv"
    write_jsonl(prompts, ROWS)
    args = ["lens-ranks", "--model", str(tiny_model_dir), "--prompts", str(prompts)]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    frame = read_lens_ranks(out)
    n_layers = 2
    assert list(frame.columns) == list(COLUMNS)
    assert frame["id"].tolist() == [i for i in ("cat", "2", "<b>") for _ in range(n_layers)]
    model, tokenizer = load_model(str(tiny_model_dir))
    direct = lens_ranks(model, tokenizer, read_lens_prompts(prompts))
    pd.testing.assert_frame_equal(frame, direct, check_dtype=False, rtol=1e-5)
    assert lens_ranks_summary(direct) in printed and f"wrote {len(frame)} rows" in printed
    assert not progress_path(out).exists()
    # without --out: the same summary, no file
    assert main([*args, "--no-progress"]) == 0
    assert lens_ranks_summary(direct) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "a", "target": " b"}', "{not json"], "p.jsonl:2: not JSON"),
        (['["a", "b"]'], "p.jsonl:1: expected an object"),
        (['{"prompt": "a"}'], "p.jsonl:1: 'target' must be a non-empty string"),
        (['{"prompt": "", "target": " b"}'], "p.jsonl:1: 'prompt' must be a non-empty string"),
        (['{"prompt": "a", "target": 3}'], "p.jsonl:1: 'target' must be a non-empty string"),
        (
            ['{"id": 2, "prompt": "a", "target": " b"}', '{"prompt": "c", "target": " d"}'],
            "p.jsonl:2: id '2' appears twice",
        ),
        (["", "  "], "p.jsonl: no prompts"),
    ],
)
def test_bad_prompts_are_one_line_and_write_nothing(tmp_path, capsys, lines, message):
    prompts, out = tmp_path / "p.jsonl", tmp_path / "ranks.csv"
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # the file is read before any model is loaded: a model that does not exist is not reached
    rc = main(["lens-ranks", "--model", str(tmp_path / "none"), "--prompts", str(prompts),
               "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not progress_path(out).exists()


def test_other_refusals(tmp_path, tiny_model_dir, capsys):
    prompts = tmp_path / "p.jsonl"
    write_jsonl(prompts, ROWS[:1])
    base = ["lens-ranks", "--prompts", str(prompts)]
    cases = [
        ([*base, "--model", str(tiny_model_dir), "--out", str(tmp_path / "no" / "r.csv")],
         "--out: no folder"),
        ([*base, "--model", str(tmp_path / "missing")], "is not a model folder"),
        (["lens-ranks", "--prompts", str(tmp_path / "absent.jsonl")], "cannot read"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_read_lens_ranks_refuses_other_csvs(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(GradLensError, match="other.csv is not a lens-ranks CSV .*ff1_rank"):
        read_lens_ranks(other)
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(COLUMNS) + "\nx,0,5,five,0.1,1,2\n")
    with pytest.raises(GradLensError, match="bad values \\(ff1_rank\\)"):
        read_lens_ranks(bad)
    with pytest.raises(GradLensError, match="cannot read"):
        read_lens_ranks(tmp_path / "absent.csv")


def test_the_shipped_demo_result_is_the_demo_prompts_as_the_code_computes_them():
    """data/demo/lens_prompts.jsonl is the training set's prompts with the first word of each
    response (a leading space) as target; data/demo/lens_ranks.csv holds every prompt and layer
    of SmolLM2, and two prompts recomputed now give the shipped rows."""
    train = [json.loads(line) for line in (DEMO / "train.jsonl").read_text().splitlines()]
    prompts = read_lens_prompts(DEMO / "lens_prompts.jsonl")
    assert [(p.id, p.prompt, p.target) for p in prompts] == [
        (r["id"], r["prompt"], " " + r["response"].split()[0]) for r in train
    ]
    shipped = read_lens_ranks(DEMO / "lens_ranks.csv")
    model, tokenizer = load_model("smollm2")
    n_layers = model.config.num_hidden_layers
    assert shipped["id"].tolist() == [p.id for p in prompts for _ in range(n_layers)]
    some = [prompts[0], prompts[len(prompts) // 2]]
    now = lens_ranks(model, tokenizer, some)
    rows = shipped[shipped["id"].isin([p.id for p in some])].reset_index(drop=True)
    exact = ["id", "layer", "n_tokens", "ff1_rank"]
    pd.testing.assert_frame_equal(rows[exact], now[exact], check_dtype=False)
    # a rank counts strict float32 comparisons over 49,152 tokens: another thread count may
    # order a near tie the other way, nothing more
    for column in ("cosine_rank", "lens_rank"):
        assert (rows[column] - now[column]).abs().max() <= 2, column
    # the CSV keeps 6 significant digits
    np.testing.assert_allclose(rows["target_cosine"], now["target_cosine"], rtol=1e-5, atol=1e-6)


def test_lens_ranks_read_the_merged_adapter(tmp_path, tiny_model_dir, capsys):
    """``--adapter``: the rows are those of the model with the adapter merged (as the pages)."""
    from tests.helpers import save_lora_adapter

    adapter = save_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    prompts, out = tmp_path / "p.jsonl", tmp_path / "ranks.csv"
    write_jsonl(prompts, ROWS)
    args = ["lens-ranks", "--model", str(tiny_model_dir), "--prompts", str(prompts)]
    assert main([*args, "--adapter", str(adapter), "--out", str(out), "--no-progress"]) == 0
    merged, tokenizer = load_model(str(tiny_model_dir), adapter=str(adapter), adapter_merge=True)
    want = lens_ranks(merged, tokenizer, read_lens_prompts(prompts))
    pd.testing.assert_frame_equal(read_lens_ranks(out), want, check_dtype=False, rtol=1e-5)
    base, _ = load_model(str(tiny_model_dir))
    plain = lens_ranks(base, tokenizer, read_lens_prompts(prompts))
    assert not np.allclose(plain["target_cosine"], want["target_cosine"])  # the adapter counts
