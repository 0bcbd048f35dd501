"""Brute-force references shared by the tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gradlens.engine.reference import flat_component_grads


def brute_force_tables(model, components, toks_by_split):
    """Flat ``torch.autograd.grad`` per component for every (split, id): {key: [P_c] tensors}."""
    return {
        (split, t.example.id): flat_component_grads(model, components, t)
        for split, toks in toks_by_split.items()
        for t in toks
    }


def dot64(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.dot(a.double(), b.double()).item()


def assert_db_matches_brute_force(store, run_id, grads, tol=1e-5) -> int:
    """Every stored exact dot and norm vs brute force; error in cosine scale. Returns #checked."""
    dots = store.frame("dots", run_id, "exact")
    norms = store.frame("norms", run_id, "exact")
    sq = {(r.split, r.example_id, r.component_idx): r.sqnorm for r in norms.itertuples(index=False)}
    checked = 0
    for (split, ex_id), flat in grads.items():
        for k, g in enumerate(flat):
            if (split, ex_id, k) not in sq:
                continue
            ref = dot64(g, g)
            assert abs(sq[(split, ex_id, k)] - ref) <= tol * max(ref, 1e-30), (split, ex_id, k)
            checked += 1
    worst = 0.0
    for r in dots.itertuples(index=False):
        gq = grads[("query", r.query_id)][r.component_idx]
        gc = grads[("train", r.candidate_id)][r.component_idx]
        scale = np.sqrt(dot64(gq, gq) * dot64(gc, gc)) + 1e-30
        err = abs(r.dot - dot64(gq, gc)) / scale
        worst = max(worst, err)
        checked += 1
    assert worst <= tol, f"worst error in cosine scale {worst:.2e}"
    assert isinstance(dots, pd.DataFrame)
    return checked


def synthetic_import_args(tmp_path, db) -> list[str]:
    """`gradlens import` arguments for the synthetic long tables of test_paper_reference,
    written as Parquet under ``tmp_path`` (run name ``syn``)."""
    from tests.unit.test_paper_reference import synthetic, write

    dots, norms, _ = synthetic()
    dp, np_ = write(tmp_path, dots, norms, "parquet")
    setting = dots["setting"].iloc[0]
    return [
        "import",
        "--db",
        str(db),
        "--run",
        "syn",
        "--dots",
        str(dp),
        "--norms",
        str(np_),
        "--filter",
        f"setting={setting}",
    ]


def synthetic_selected_db(tmp_path, name: str = "app.duckdb"):
    """A real DuckDB file holding the synthetic run ``syn`` after ``gradlens select``."""
    from gradlens.cli import main

    db = tmp_path / name
    assert main(synthetic_import_args(tmp_path, db)) == 0
    assert main(["select", "--db", str(db), "--run", "syn", "--folds", "2"]) == 0
    return db


def export_with_one_curve_value_changed(folder, dest):
    """A copy of the export ``folder`` at ``dest`` whose first selection-curve accuracy is
    0.123: the same run, different files (a restore must replace the run)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(folder, dest)
    path = dest / "selection_curves.parquet"
    curves = pq.read_table(path)
    acc = curves.column("accuracy").to_numpy().copy()
    acc[0] = 0.123
    idx = curves.schema.get_field_index("accuracy")
    pq.write_table(curves.set_column(idx, "accuracy", pa.array(acc)), path)
    return dest


#: The projections of every Llama block that a test adapter targets.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def save_lora_adapter(model_dir, out, r: int = 2, targets=LORA_TARGETS, seed: int = 1):
    """A LoRA adapter for the model in ``model_dir`` saved at ``out`` as safetensors, its B
    matrices random and nonzero (peft starts them at zero, which would make every A gradient
    zero); alpha = 2r; A and B both from ``seed`` (whatever tests ran before). Returns ``out``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), lora_dropout=0.0)
    with torch.random.fork_rng():  # peft draws A from the global generator: seeded here too
        torch.manual_seed(seed)
        model = get_peft_model(base, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    model.save_pretrained(out, safe_serialization=True)
    return out
