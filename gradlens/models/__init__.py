"""Stage 1, models: everything that touches a model's architecture.

- ``naming``: the one table of component kinds and their user-facing names (``L3.gate``).
- ``loading``: offline loading (bundled SmolLM2, local folders, the hub cache; safetensors only)
  and component discovery.
- ``adapters``: LoRA adapters (``peft``) checked, hashed and put on a model, merged or not.
- ``surgery``: final norm, unembedding, MLP lookup, device, and the frozen-parameters context.
- ``tokens``: the one token formatter (decoding one piece per id, visible whitespace).
- ``info``: what the Model page shows of a model (its source, architecture summary, weight table).
"""

__all__ = ["Component", "discover_components", "load_model", "resolve_model_dir"]


def __getattr__(name: str):
    """``loading``'s public names, imported on first use: ``naming`` and ``tokens`` (what the
    read side needs) do not load torch and transformers."""
    if name in __all__:
        from gradlens.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
