"""Shared fixtures: tiny randomly initialised models with the bundled SmolLM2 tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"


def tiny_config(family: str, vocab_size: int):
    """A 2-layer config of the given family (llama, gpt2, neox), hidden size 32."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    if family == "llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            max_position_embeddings=2048,
        )
    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=2048,
            bos_token_id=0,
            eos_token_id=0,
        )
    if family == "neox":
        return GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=2048,
        )
    raise ValueError(family)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The bundled SmolLM2 converted to safetensors (cached under the user cache folder)."""
    from gradlens.models.loading import resolve_model_dir

    return Path(resolve_model_dir("smollm2"))


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def build_tiny(family: str, tokenizer, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(family, len(tokenizer))
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny Llama saved as a local HF folder (weights + the SmolLM2 tokenizer)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    build_tiny("llama", tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
