"""One loaded model per server, shared by every session (``st.cache_resource``, one entry), with
a lock: hooks and autograd state live on the model object, so two sessions must never use it at
the same moment. Pages call ``loaded_model(spec)`` and work inside ``with lm.lock:``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from gradlens.figures.textdiff import escape_markdown
from gradlens.models.loading import load_model


@dataclass(eq=False)
class LoadedModel:
    """A model, its tokenizer, the lock every user of the model holds, and what it cost."""

    spec: str
    model: object
    tokenizer: object
    seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def memory_bytes(self) -> int:
        """Bytes of the weights and buffers in memory (what the cache holds)."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)


@st.cache_resource(max_entries=1, show_spinner=False)
def _load(spec: str, trust_remote_code: bool) -> LoadedModel:
    t0 = time.perf_counter()
    model, tokenizer = load_model(spec, trust_remote_code=trust_remote_code)
    return LoadedModel(spec, model, tokenizer, time.perf_counter() - t0)


def loaded_model(spec: str, trust_remote_code: bool = False) -> LoadedModel:
    """The server's model for ``spec`` (loaded on first use, with a status box; the previous
    model is dropped: one at a time). Raises GradLensError for a spec that cannot be loaded."""
    with st.status(f"Loading {escape_markdown(spec)}…", expanded=False) as status:
        try:
            lm = _load(spec, trust_remote_code)
        except Exception:
            status.update(label=f"{escape_markdown(spec)} could not be loaded", state="error")
            raise
        label = f"{escape_markdown(spec)} loaded ({lm.seconds:.1f} s)"
        status.update(label=label, state="complete")
    return lm


def chosen_model() -> tuple[str, bool]:
    """(spec, trust_remote_code) chosen on the Model page; the bundled SmolLM2 by default."""
    spec = st.session_state.get("model_spec", "smollm2")
    return spec, bool(st.session_state.get("model_trust_remote_code", False))


def run_on_model(inputs_key: str, hint: str, spinner: str, compute):
    """What a lens page does after its form: nothing until Run stored inputs for the current
    model under ``inputs_key`` (then ``hint``); else load the model and return
    ``compute(*inputs, _lm=model)`` under a spinner. A GradLensError is shown as one line."""
    from gradlens.errors import GradLensError

    spec, trust = chosen_model()
    inputs = st.session_state.get(inputs_key)
    if inputs is None or inputs[0] != spec:
        st.info(hint)
        st.stop()
    try:
        lm = loaded_model(spec, trust_remote_code=trust)
        with st.spinner(spinner):
            return compute(*inputs, _lm=lm)
    except GradLensError as exc:
        st.error(str(exc))
        st.stop()
