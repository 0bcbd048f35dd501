"""LoRA adapters (peft): on a tiny Llama with a tiny adapter whose B matrices are random and
nonzero, the components are the adapter's matrices (names, kinds after their base kind,
parameter counts; the base's left out) and the engine's dots (dense and factored, on lm_head
too) equal plain autograd in cosine scale 1e-5; ``--adapter-merge`` gives the model's own
components with W + s·B A; pickled weights, other PEFT types, DoRA and LoRA on embeddings are
refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from gradlens.data.examples import tokenize_all
from gradlens.engine.capture import GradientEngine
from gradlens.engine.reference import flat_component_grads
from gradlens.engine.terms import Factored
from gradlens.errors import GradLensError
from gradlens.models.adapters import adapter_fingerprint, has_lora
from gradlens.models.loading import discover_components, load_model
from gradlens.models.naming import KINDS, parse_component_name
from tests.helpers import dot64, save_lora_adapter
from tests.unit.test_engine_exact import EXAMPLES, _check_pairs

pytest.importorskip("peft")

BASE_KINDS = ("q", "k", "v", "o", "gate", "up", "down")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir):
    return save_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora") / "adapter")


def _shapes(model) -> dict[str, tuple[int, int]]:
    """[out, in] of each base kind of the tiny Llama (2 kv heads of 8 dims: k, v are 16 out)."""
    c = model.config
    h, kv, m = c.hidden_size, c.num_key_value_heads * (c.hidden_size // 4), c.intermediate_size
    return {"q": (h, h), "k": (kv, h), "v": (kv, h), "o": (h, h), "gate": (m, h), "up": (m, h),
            "down": (h, m)}  # fmt: skip


def test_components_are_the_adapters_matrices(tiny_model_dir, adapter):
    net, _ = load_model(str(tiny_model_dir), adapter=str(adapter))
    assert has_lora(net)
    comps = discover_components(net)
    shapes, r = _shapes(net), 2
    want = []
    for layer in range(2):
        for kind in BASE_KINDS:
            out, inp = shapes[kind]
            want += [(f"L{layer}.{kind}.lora_A", (r, inp)), (f"L{layer}.{kind}.lora_B", (out, r))]
    assert sorted((c.name, c.shape) for c in comps) == sorted(want)
    for c in comps:
        assert c.n_params == c.shape[0] * c.shape[1]
        assert c.kind == c.name.split(".", 1)[1] and c.layer == int(c.name[1])
        assert c.module.endswith((".lora_A.default", ".lora_B.default"))
        assert parse_component_name(c.params[0]) == (c.name, c.layer, c.kind)
        assert parse_component_name(c.name) == (c.name, c.layer, c.kind)
    # the adapter's kinds sit right after their base kind in every table's column order
    for kind in BASE_KINDS:
        i = KINDS.index(kind)
        assert KINDS[i + 1 : i + 3] == (f"{kind}.lora_A", f"{kind}.lora_B")


@pytest.mark.parametrize("rank,loss_on,max_length", [(2, "response", None), (16, "all", 10)])
def test_engine_dots_match_autograd(tiny_model_dir, tokenizer, tmp_path, rank, loss_on, max_length):
    """r = 2: every gradient kept dense; r = 16 on 10 tokens: most kept factored (Δᵀ X)."""
    folder = save_lora_adapter(tiny_model_dir, tmp_path / "adapter", r=rank)
    net, _ = load_model(str(tiny_model_dir), adapter=str(folder))
    comps = discover_components(net)
    toks = tokenize_all(tokenizer, EXAMPLES, loss_on, max_length)
    ref = [flat_component_grads(net, comps, t) for t in toks]
    for grads in ref:  # B random: no component's gradient is trivially zero
        assert all(dot64(g, g) > 0 for g in grads)
    flags = [p.requires_grad for p in net.parameters()]
    with GradientEngine(net, comps) as engine:
        got = [engine.compute([t])[0] for t in toks]
        batched = engine.compute(toks)
    _check_pairs(got, ref)
    _check_pairs(batched, ref)
    factored = sum(isinstance(t, Factored) for g in got for terms in g.comps for t in terms)
    assert (factored > 0) == (rank == 16)
    assert [p.requires_grad for p in net.parameters()] == flags  # restored on exit


def test_lora_on_the_unembedding_is_two_components_whose_dots_match_autograd(
    tiny_model_dir, tokenizer, tmp_path
):
    """An adapter on lm_head (besides q and down): its A and B are components of their own
    (``lm_head.lora_A``, ``lm_head.lora_B``), and the engine's dots equal plain autograd's."""
    targets = ("lm_head", "q_proj", "down_proj")
    folder = save_lora_adapter(tiny_model_dir, tmp_path / "adapter", targets=targets)
    net, _ = load_model(str(tiny_model_dir), adapter=str(folder))
    comps = discover_components(net)
    assert {"lm_head.lora_A", "lm_head.lora_B"} <= {c.name for c in comps}
    assert len(comps) == 2 + 2 * 2 * 2  # the head's pair, and q and down in both layers
    toks = tokenize_all(tokenizer, EXAMPLES, "response", None)
    ref = [flat_component_grads(net, comps, t) for t in toks]
    with GradientEngine(net, comps) as engine:
        got = [engine.compute([t])[0] for t in toks]
    _check_pairs(got, ref)


def test_merge_gives_the_models_own_components_with_merged_weights(tiny_model_dir, adapter):
    base, tokenizer = load_model(str(tiny_model_dir))
    merged, _ = load_model(str(tiny_model_dir), adapter=str(adapter), adapter_merge=True)
    unmerged, _ = load_model(str(tiny_model_dir), adapter=str(adapter))
    assert not has_lora(merged)
    assert [c.name for c in discover_components(merged)] == [
        c.name for c in discover_components(base)
    ]
    scale = json.loads((adapter / "adapter_config.json").read_text())["lora_alpha"] / 2
    layer = unmerged.model.layers[1].mlp.down_proj
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    want = base.model.layers[1].mlp.down_proj.weight + scale * b @ a
    torch.testing.assert_close(merged.model.layers[1].mlp.down_proj.weight, want)
    ids = tokenizer("Water boils at 100 degrees.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, unmerged(ids).logits, atol=1e-5, rtol=0)
        assert not torch.allclose(merged(ids).logits, base(ids).logits, atol=1e-3)


def test_fingerprint_covers_weights_and_config(adapter, tmp_path):
    copy = shutil.copytree(adapter, tmp_path / "copy")
    assert adapter_fingerprint(str(copy)) == adapter_fingerprint(str(adapter))
    config = json.loads((copy / "adapter_config.json").read_text())
    config["lora_alpha"] = 8
    (copy / "adapter_config.json").write_text(json.dumps(config))
    assert adapter_fingerprint(str(copy)) != adapter_fingerprint(str(adapter))


def _refused(model_dir, folder, match, merge=False):
    with pytest.raises(GradLensError, match=match) as info:
        load_model(str(model_dir), adapter=str(folder), adapter_merge=merge)
    assert "\n" not in str(info.value)


def test_pickled_weights_are_refused_before_anything_loads(tiny_model_dir, adapter, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(adapter / "adapter_config.json", folder)
    (folder / "adapter_model.bin").write_bytes(b"not even a pickle")  # never read
    _refused(tiny_model_dir, folder, "only pickled weights \\(adapter_model.bin\\)")
    (folder / "adapter_model.bin").unlink()
    _refused(tiny_model_dir, folder, "no adapter_model.safetensors")
    _refused(tiny_model_dir, tmp_path / "missing", "no such folder")
    _refused(tiny_model_dir, tmp_path, "no adapter_config.json")


def test_other_peft_types_and_lora_variants_are_refused(tiny_model_dir, adapter, tmp_path):
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    ia3 = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        IA3Config(
            target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]
        ),
    )
    ia3.save_pretrained(tmp_path / "ia3", safe_serialization=True)
    _refused(tiny_model_dir, tmp_path / "ia3", "type IA3; GradLens reads LoRA adapters only")
    dora = shutil.copytree(adapter, tmp_path / "dora")
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps(config | {"use_dora": True}))
    _refused(tiny_model_dir, dora, "DoRA .* is not supported", merge=True)
    with pytest.raises(GradLensError, match="--adapter-merge needs --adapter DIR"):
        load_model(str(tiny_model_dir), adapter_merge=True)


def test_lora_on_the_embedding_needs_merge(tiny_model_dir, tmp_path):
    folder = save_lora_adapter(tiny_model_dir, tmp_path / "embed", targets=("embed_tokens",))
    _refused(tiny_model_dir, folder, "not a LoRA matrix of a linear layer")
    merged, _ = load_model(str(tiny_model_dir), adapter=str(folder), adapter_merge=True)
    assert len(discover_components(merged)) == 1 + 7 * 2
