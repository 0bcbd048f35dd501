"""One loaded model per server, shared by every session (``st.cache_resource``, one entry), with
a lock: hooks and autograd state live on the model object, so two sessions must never use it at
the same moment. Pages get the model with ``loaded_model`` (or ``run_on_model`` on a lens page)
and work inside ``with holding(lm):``, the one place that waits for another session."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

import streamlit as st

from dashboard import state
from gradlens.errors import GradLensError
from gradlens.figures.textdiff import escape_markdown
from gradlens.models.loading import load_model

T = TypeVar("T")


@dataclass(eq=False)
class LoadedModel:
    """A model, its tokenizer, the lock every user of the model holds, and what it cost; label:
    the spec and the adapter put on it (``state.ModelChoice.label``)."""

    spec: str
    model: object
    tokenizer: object
    seconds: float
    label: str = ""
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
def _load(
    spec: str, trust_remote_code: bool, adapter: str | None = None, merge: bool = False
) -> LoadedModel:
    t0 = time.perf_counter()
    model, tokenizer = load_model(
        spec, trust_remote_code=trust_remote_code, adapter=adapter, adapter_merge=merge
    )
    label = state.ModelChoice(spec, trust_remote_code, adapter, merge).label
    return LoadedModel(spec, model, tokenizer, time.perf_counter() - t0, label)


def loaded_model(choice: state.ModelChoice) -> LoadedModel:
    """The server's model for ``choice`` (loaded on first use, with a status box; the previous
    model is dropped: one at a time). Raises GradLensError for a spec that cannot be loaded."""
    spec = escape_markdown(choice.label)
    with st.status(f"Loading {spec}…", expanded=False) as status:
        try:
            args = (choice.spec, choice.trust_remote_code)
            # streamlit keys the cache by the arguments given: (spec, flag) alone without adapter
            adapter = (choice.adapter, choice.adapter_merge) if choice.adapter else ()
            lm = _load(*args, *adapter)
        except Exception:
            status.update(label=f"{spec} could not be loaded", state="error")
            raise
        status.update(label=f"{spec} loaded ({lm.seconds:.1f} s)", state="complete")
    return lm


@contextmanager
def holding(lm: LoadedModel) -> Iterator[None]:
    """Hold the model's lock; while another session computes with the model, say so and wait."""
    if not lm.lock.acquire(blocking=False):
        with st.spinner("Another session is using the model; waiting until it is done…"):
            lm.lock.acquire()
    try:
        yield
    finally:
        lm.lock.release()


def locked(lm: LoadedModel, compute, *args, **kwargs):
    """``compute(lm.model, lm.tokenizer, *args, **kwargs)`` holding the model's lock."""
    with holding(lm):
        return compute(lm.model, lm.tokenizer, *args, **kwargs)


def current_model() -> state.ModelChoice:
    """The model loaded on the Model page in this session, else the bundled SmolLM2: what the
    lens pages compute with, so an adapter comes merged into the weights (the lenses read the
    model's own matrices)."""
    choice = state.chosen_model() or state.ModelChoice()
    return replace(choice, adapter_merge=True) if choice.adapter else choice


def lens_model() -> state.ModelChoice:
    """``current_model()``, said in one caption line (what a lens page computes with)."""
    choice = current_model()
    st.caption(f"Model: {escape_markdown(choice.label)} (change it on the Model page).")
    return choice


def run_on_model(inputs_key: str, hint: str, spinner: str, compute: Callable[..., T]) -> T:
    """What a lens page does after its form: nothing until Run stored inputs for the current
    model under ``inputs_key`` (then ``hint``); else load the model and return
    ``compute(*inputs, _lm=model)`` under a spinner. A GradLensError is shown as one line."""
    choice = current_model()
    inputs = st.session_state.get(inputs_key)
    if inputs is None or inputs[0] != choice.label:
        st.info(hint)
        st.stop()
    try:
        lm = loaded_model(choice)
        with st.spinner(spinner):
            return compute(*inputs, _lm=lm)
    except GradLensError as exc:
        st.error(str(exc))
        st.stop()
