"""``datasets``-library inputs (``gradlens.data.sources``): a ``save_to_disk`` folder, an Arrow
file and ``hf:NAME[:CONFIG[:SPLIT]]`` from a temporary local cache read with the network off;
``--columns`` and its per-file overrides; the two chat shapes; ids from the row index; and the
one-line errors naming the file, row and field. The CLI side (same run id and dots as JSONL) is
``tests/cli/test_dataset_inputs.py``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from gradlens.config import ComputeConfig
from gradlens.data.examples import Example, content_hash, load_examples
from gradlens.data.sources import Columns, file_columns, parse_columns, parse_hf
from gradlens.errors import DataError, GradLensError
from gradlens.options import ComputeOptions

ROWS = [
    {"uid": "a", "instruction": "What is water?", "output": "Water is H2O."},
    {"uid": "b", "instruction": "Name a colour.", "output": "Blue."},
]
MAPPED = parse_columns("prompt=instruction,response=output,id=uid", "--columns")
EXPECTED = [Example(r["uid"], r["instruction"], r["output"]) for r in ROWS]


def dataset(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


def save(rows, folder: Path) -> Path:
    """``rows`` written by ``Dataset.save_to_disk``; returns the folder."""
    dataset(rows).save_to_disk(str(folder))
    return folder


def arrow_file(rows, tmp_path: Path) -> Path:
    """``rows`` as a ``datasets`` Arrow file (the shard a ``save_to_disk`` folder holds)."""
    folder = save(rows, tmp_path / "shard")
    (shard,) = folder.glob("*.arrow")
    return Path(shutil.copy(shard, tmp_path / "data-00000-of-00001.arrow"))


def put_in_cache(cache: Path, name: str, splits: dict[str, list[dict]]) -> None:
    """A dataset ``name`` (``namespace/name``) in the ``datasets`` cache ``cache`` as
    ``load_dataset`` leaves one it downloaded (``namespace___name/default/0.0.0/<hash>``), so
    reading it with the network off goes through ``load_dataset``'s own cache lookup. The
    splits share their columns (a column a split lacks is null there)."""
    from datasets.packaged_modules.json.json import Json

    names = list(dict.fromkeys(k for rows in splits.values() for r in rows for k in r))
    splits = {s: [{k: r.get(k) for k in names} for r in rows] for s, rows in splits.items()}
    features = dataset([r for rows in splits.values() for r in rows]).features
    files = {}
    for split, rows in splits.items():
        files[split] = str(cache.parent / f"{split}.jsonl")
        Path(files[split]).write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    stem = name.split("/")[-1]
    builder = Json(
        cache_dir=str(cache / "build"),
        dataset_name=stem,
        hash="0123abcd",
        data_files=files,
        features=features,
    )
    builder.download_and_prepare()
    target = cache / name.replace("/", "___") / "default" / "0.0.0"
    target.mkdir(parents=True)
    shutil.move(builder.cache_dir, target / "0123abcd")
    shutil.rmtree(cache / "build")


def fails(spec, *parts: str, columns: Columns | None = None, row_ids: bool = False) -> str:
    """``load_examples`` raises a one-line DataError holding every part; returns it."""
    with pytest.raises(DataError) as err:
        load_examples(spec, columns, row_ids=row_ids)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


def test_folder_and_arrow_file_read_as_the_same_jsonl(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    folder = save(ROWS, tmp_path / "folder")
    arrow = arrow_file(ROWS, tmp_path)
    loaded = [load_examples(p, MAPPED) for p in (jsonl, folder, arrow)]
    assert loaded[0] == loaded[1] == loaded[2] == EXPECTED
    assert len({content_hash(x) for x in loaded}) == 1
    assert loaded[1][1].where == f"{folder}: row 2"


def test_a_dataset_dict_folder_with_one_split_is_read(tmp_path):
    import datasets

    datasets.DatasetDict({"train": dataset(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    assert load_examples(tmp_path / "dd", MAPPED) == EXPECTED


def test_ids_of_another_type_go_through_str(tmp_path):
    rows = [{**r, "uid": i * 10} for i, r in enumerate(ROWS)]
    assert [e.id for e in load_examples(save(rows, tmp_path / "f"), MAPPED)] == ["0", "10"]


def test_a_training_set_without_ids_gets_its_row_index(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "uid"} for r in ROWS]
    folder = save(rows, tmp_path / "f")
    train = load_examples(folder, MAPPED, row_ids=True)
    assert [(e.id, e.prompt, e.id_from_row) for e in train] == [
        ("0", ROWS[0]["instruction"], True),
        ("1", ROWS[1]["instruction"], True),
    ]
    assert not load_examples(save(ROWS, tmp_path / "g"), MAPPED, row_ids=True)[0].id_from_row
    # a query set must name its originals
    query_cols = parse_columns("prompt=instruction,response=output", "--query-columns")
    fails(
        folder,
        f"{folder}: missing column 'id' (columns: 'instruction, output')",
        "--query-columns id=COLUMN",
        columns=query_cols,
    )


CHATS = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is water?"},
        {"role": "assistant", "content": "Water is H2O."},
    ],
    "conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "What is water?"},
        {"from": "gpt", "value": "Water is H2O."},
    ],
}


@pytest.mark.parametrize("shape", sorted(CHATS))
def test_chat_columns_of_both_shapes(shape, tmp_path):
    want = [Example("a", "What is water?", "Water is H2O.")]
    record = {"id": "a", shape: CHATS[shape]}
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(json.dumps(record), encoding="utf-8")
    assert load_examples(jsonl) == want
    assert load_examples(save([record], tmp_path / "c")) == want
    renamed = tmp_path / "r.jsonl"
    renamed.write_text(json.dumps({"id": "a", "chat": CHATS[shape]}), encoding="utf-8")
    assert load_examples(renamed, parse_columns("messages=chat", "--columns")) == want


def test_a_sharegpt_turn_without_its_value_is_named(tmp_path):
    turns = [{"from": "human", "value": "q"}, {"from": "gpt"}]
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"id": "a", "conversations": turns}), encoding="utf-8")
    fails(path, f"{path}:1: field 'conversations' has a assistant turn without 'value'")


def test_columns_parse_and_per_file_overrides():
    opts = ComputeOptions(
        train="t",
        queries="q",
        db="d",
        columns="prompt=instruction,response=output",
        query_columns="id=orig",
    )
    train, queries = file_columns(opts, "train"), file_columns(opts, "queries")
    assert (train.prompt, train.response, train.id) == ("instruction", "output", "id")
    assert (queries.prompt, queries.id) == ("instruction", "orig")
    assert queries.flag == "--columns and --query-columns"
    assert queries.mapped() == "id=orig,prompt=instruction,response=output"
    assert file_columns(ComputeOptions(train="t", queries="q", db="d"), "train").mapped() is None
    for text, part in {
        "prompt": "--columns: expected FIELD=COLUMN, got 'prompt'",
        "text=x": "--columns: unknown field 'text' (expected id, prompt, response, messages)",
        "id=a,id=b": "--columns: field 'id' given twice",
    }.items():
        with pytest.raises(GradLensError, match=re.escape(part)):
            parse_columns(text, "--columns")


def test_columns_do_not_enter_the_run_key():
    base = ComputeConfig("m", "h", "t", "q", "train.jsonl", "queries.jsonl")
    stated = ComputeConfig(
        "m",
        "h",
        "t",
        "q",
        "hf:x/y",
        "f.arrow",
        train_columns="prompt=a",
        train_ids="str(row index)",
    )
    assert base.key() == stated.key()
    assert "train_ids" not in json.loads(base.to_json())
    assert json.loads(stated.to_json())["train_ids"] == "str(row index)"


def test_hf_specs():
    assert parse_hf("hf:org/name") == ("org/name", None, "train")
    assert parse_hf("hf:org/name::test") == ("org/name", None, "test")
    assert parse_hf("hf:name:cfg:validation") == ("name", "cfg", "validation")
    for bad in ("hf:", "hf:a:b:c:d"):
        fails(bad, f"{bad}: expected hf:NAME[:CONFIG[:SPLIT]]")


def test_hf_reads_the_local_cache_offline(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    put_in_cache(cache, "gradlens-test/tiny", {"train": ROWS, "test": ROWS[:1]})
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    assert load_examples("hf:gradlens-test/tiny", MAPPED) == EXPECTED
    assert load_examples("hf:gradlens-test/tiny::test", MAPPED) == EXPECTED[:1]
    fails("hf:gradlens-test/tiny::nosuch", "hf:gradlens-test/tiny::nosuch: ", "nosuch")
    fails("hf:gradlens-test/absent", "hf:gradlens-test/absent: not read from the local datasets")


def test_hostile_dataset_inputs(tmp_path):
    folder = save(ROWS, tmp_path / "f")
    fails(
        folder,
        f"{folder}: missing column 'id' (columns: 'uid, instruction, output')",
        "name another with --columns id=COLUMN",
    )
    cols = parse_columns("prompt=question,response=output,id=uid", "--train-columns")
    fails(folder, "missing column 'question'", "from --train-columns prompt=question", columns=cols)
    typed = save([{**ROWS[0], "output": 3}], tmp_path / "typed")
    fails(typed, f"{typed}: column 'output' has type int64, expected string", columns=MAPPED)
    empty = save([ROWS[0], {**ROWS[1], "instruction": " "}], tmp_path / "empty")
    fails(empty, f"{empty}: row 2: field 'instruction' is empty", columns=MAPPED)
    twice = save([ROWS[0], ROWS[0]], tmp_path / "twice")
    fails(twice, f"{twice}: row 2: duplicate id 'a' (first at {twice}: row 1)", columns=MAPPED)
    plain = tmp_path / "plain"
    plain.mkdir()
    fails(plain, f"{plain}: is a folder but not one written by Dataset.save_to_disk")
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(b"not arrow at all")
    fails(junk, f"{junk}: cannot read as a datasets Arrow file")
    fails(tmp_path / "gone.arrow", "gone.arrow: file not found")
    import datasets

    two = tmp_path / "two"
    datasets.DatasetDict({"train": dataset(ROWS), "test": dataset(ROWS)}).save_to_disk(str(two))
    fails(two, f"{two}: holds the splits train, test; pass one split's folder")
    dataset(ROWS).select([]).save_to_disk(str(tmp_path / "none"))
    fails(tmp_path / "none", f"{tmp_path / 'none'}: ", columns=MAPPED)  # datasets' or ours


def test_a_job_plan_passes_the_columns_to_every_step(tmp_path):
    """The Compute page's job: paraphrase and generate read the user's columns; the compute
    reads the query set they built (JSONL with the fields' own names) as it is."""
    from gradlens import jobs
    from gradlens.cli import build_parser

    train = save([{k: v for k, v in r.items() if k != "uid"} for r in ROWS], tmp_path / "t")
    queries = arrow_file(ROWS, tmp_path)
    db = str(tmp_path / "x.duckdb")
    with_ids = str(save(ROWS, tmp_path / "t2"))
    opts = ComputeOptions(train=with_ids, queries=str(queries), db=db, columns=MAPPED.mapped())
    settings = {"endpoint": "http://127.0.0.1:8000/v1", "model": "served"}
    para, gen, compute, _ = jobs.plan_job(
        ComputeOptions(
            train=str(train), queries="", db=db, columns="prompt=instruction,response=output"
        ),
        tmp_path,
        paraphrase=settings,
        generate=True,
    ).steps
    parse = build_parser().parse_args
    assert parse(list(para)).columns == "prompt=instruction,response=output"
    assert parse(list(gen)).columns is None  # the paraphrases are JSONL with the own names
    assert parse(list(compute)).query_columns == "id=id,prompt=prompt,response=response"
    gen, compute, _ = jobs.plan_job(opts, tmp_path, generate=True).steps
    assert parse(list(gen)).columns == "id=uid,prompt=instruction,response=output"
    assert parse(list(compute)).columns == "id=uid,prompt=instruction,response=output"
    assert parse(list(compute)).query_columns == "id=id,prompt=prompt,response=response"
    compute, _ = jobs.plan_job(opts, tmp_path).steps
    assert parse(list(compute)).query_columns is None
