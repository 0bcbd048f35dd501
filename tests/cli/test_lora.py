"""``gradlens compute --adapter DIR [--adapter-merge]`` end to end on a tiny Llama: the adapter's
content hash and the merge flag are in the run key (the run without an adapter keeps its id:
tests/cli/test_pinned.py), the run stores the adapter's components and its config names the
adapter, a typed query of an indexed adapter run goes through the run's own adapter, a bf16
adapter run is well formed, and bad adapter options give one line and exit code 2."""

from __future__ import annotations

import json
import shutil

import pytest

from gradlens.cli import main
from gradlens.engine.job import compute
from gradlens.models.adapters import adapter_fingerprint
from gradlens.store.database import Store
from tests.conftest import DEMO
from tests.helpers import save_lora_adapter

pytest.importorskip("peft")

INDEX = "exact:L0.q.lora_A+L1.down.lora_B"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    """(folder, training file, query file, adapter folder)."""
    root = tmp_path_factory.mktemp("lora-cli")
    train, queries = root / "train.jsonl", root / "queries.jsonl"
    lines = (DEMO / "train.jsonl").read_text(encoding="utf-8").splitlines()
    train.write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    paraphrased = (DEMO / "paraphrased.jsonl").read_text(encoding="utf-8").splitlines()
    queries.write_text("\n".join(paraphrased[:6:3]) + "\n", encoding="utf-8")
    return root, train, queries, save_lora_adapter(tiny_model_dir, root / "adapter")


def test_the_adapter_and_the_merge_are_in_the_run_key(tiny_model_dir, setup, tmp_path):
    _, train, queries, adapter = setup
    db = tmp_path / "k.duckdb"
    plain = compute(str(tiny_model_dir), str(train), str(queries), str(db), candidates=3,
                    progress=False)  # fmt: skip
    lora = compute(str(tiny_model_dir), str(train), str(queries), str(db), candidates=3,
                   adapter=str(adapter), progress=False)  # fmt: skip
    merged = compute(str(tiny_model_dir), str(train), str(queries), str(db), candidates=3,
                     adapter=str(adapter), adapter_merge=True, progress=False)  # fmt: skip
    assert len({plain.run_id, lora.run_id, merged.run_id}) == 3
    # the same adapter elsewhere: the same run (its path is not in the key) ...
    moved = shutil.copytree(adapter, tmp_path / "moved")
    again = compute(str(tiny_model_dir), str(train), str(queries), str(db), candidates=3,
                    adapter=str(moved), progress=False)  # fmt: skip
    assert again.run_id == lora.run_id and again.already_complete
    # ... and other weights another one
    other = save_lora_adapter(tiny_model_dir, tmp_path / "other", seed=2)
    changed = compute(str(tiny_model_dir), str(train), str(queries), str(db), candidates=3,
                      adapter=str(other), progress=False)  # fmt: skip
    assert changed.run_id != lora.run_id
    with Store(db, read_only=True) as store:
        comps = store.frame("components", lora.run_id)
        config = json.loads(store.run(lora.run_id)["config"])
        plain_config = json.loads(store.run(plain.run_id)["config"])
        merged_comps = store.frame("components", merged.run_id)
    assert len(comps) == lora.components == 2 * 7 * 2
    assert all(name.endswith((".lora_A", ".lora_B")) for name in comps["component"])
    assert config["adapter"] == str(adapter) and config["adapter_merge"] is False
    assert config["adapter_hash"] == adapter_fingerprint(str(adapter))
    assert not {"adapter", "adapter_hash", "adapter_merge"} & set(plain_config)
    assert len(merged_comps) == 1 + 7 * 2


def test_a_typed_query_uses_the_runs_adapter(tiny_model_dir, setup, tmp_path, capsys):
    _, train, queries, adapter = setup
    db = tmp_path / "r.duckdb"
    compute(str(tiny_model_dir), str(train), str(queries), str(db), run="lora", candidates=3,
            adapter=str(adapter), index=INDEX, progress=False)  # fmt: skip
    query = json.loads(queries.read_text(encoding="utf-8").splitlines()[0])

    def ranked(*args) -> dict:
        capsys.readouterr()
        assert main(["rank", "--db", str(db), "--run", "lora", "--json", *args]) == 0
        return json.loads(capsys.readouterr().out)

    stored = ranked("--query-id", query["id"])
    typed = ranked("--prompt", query["prompt"], "--response", query["response"])
    assert stored["subset"] == typed["subset"] == ["L0.q.lora_A", "L1.down.lora_B"]
    assert [r["example_id"] for r in typed["results"]] == [
        r["example_id"] for r in stored["results"]
    ]
    for a, b in zip(typed["results"], stored["results"], strict=True):
        assert a["cosine"] == pytest.approx(b["cosine"], abs=1e-6)


def test_bad_adapter_options_give_one_line(tiny_model_dir, setup, tmp_path, capsys):
    _, train, queries, adapter = setup
    base = ["compute", "--model", str(tiny_model_dir), "--train", str(train), "--queries"]
    base += [str(queries), "--db", str(tmp_path / "e.duckdb"), "--no-progress"]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(adapter / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"never read")
    cases = {
        ("--adapter-merge",): "--adapter-merge needs --adapter DIR",
        ("--adapter", str(tmp_path / "nope")): "no such folder",
        ("--adapter", str(pickled)): "only pickled weights (adapter_model.bin)",
    }
    for extra, message in cases.items():
        capsys.readouterr()
        assert main([*base, *extra]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and message in err[0], err


def test_a_bf16_adapter_run_is_well_formed(tiny_model_dir, setup, tmp_path):
    """--dtype bf16 with an adapter: the float32 run's pairs and LoRA components, finite dots that
    differ from float32's (the model did run in bfloat16), and every stored dot within
    Cauchy-Schwarz of its stored norms (dots and norms come from the same gradients). How close
    bfloat16 comes to float32 depends on the adapter's values (cosines of 0.73 to 1.00 between
    the runs' dots for random adapters): no closeness is asserted."""
    import numpy as np

    from gradlens.queries import load_arrays

    _, train, queries, adapter = setup
    runs = {}
    for dtype in ("float32", "bf16"):
        db = tmp_path / f"{dtype}.duckdb"
        compute(str(tiny_model_dir), str(train), str(queries), str(db), run="r", candidates=3,
                adapter=str(adapter), dtype=dtype, progress=False)  # fmt: skip
        runs[dtype] = load_arrays(str(db), "r")
    a, b = runs["float32"], runs["bf16"]
    assert a.names == b.names and all(n.endswith((".lora_A", ".lora_B")) for n in b.names)
    assert np.array_equal(a.candidate_ids, b.candidate_ids) and np.array_equal(a.valid, b.valid)
    valid = b.valid[:, :, None] & np.ones(b.dots.shape, dtype=bool)
    assert np.isfinite(b.dots[valid]).all() and not np.array_equal(a.dots, b.dots)
    bound = np.sqrt(b.query_sq[:, None, :] * b.cand_sq)
    assert np.all(np.abs(b.dots[valid]) <= bound[valid] * (1 + 1e-9) + 1e-30)
