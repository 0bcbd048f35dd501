"""Cross-page state of the dashboard behind typed accessors, so that no page spells a shared
session key: the lasting ``ViewState`` (one per session, mirrored in the URL) with the subsets it
held before, the database path, the page's ``Context``, the model chosen on the Model page and a
pair of examples sent to the Pair inspector."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import streamlit as st

from gradlens.runs.viewstate import ViewState

if TYPE_CHECKING:
    from dashboard.common import Context

#: ``persist_state`` of the widgets whose values survive a visit to another page.
SESSION = "session"


def kept(widget, label: str, key: str, **options):
    """``widget(label, key=key, **options)`` (``st.text_input``, a column's ``number_input``,
    ...) whose value survives a visit to another page."""
    return widget(label, key=key, persist_state=SESSION, **options)


DEFAULT_DB = "data/demo.duckdb"
DEFAULT_MODEL = "smollm2"

_VIEW = "gl_view"
_HISTORY = "gl_history"
_DB = "gl_db"
_CONTEXT = "gl_ctx"
_MODEL_SPEC = "model_spec"
_MODEL_TRUST = "model_trust_remote_code"
_MODEL_ADAPTER = "model_adapter_dir"
_MODEL_ADAPTER_MERGE = "model_adapter_merged"
_SENT_PAIR = "pair_sent"


# -- the view -----------------------------------------------------------------------------------
def view() -> ViewState:
    """The session's ViewState; a new session starts from the URL's query parameters."""
    if _VIEW not in st.session_state:
        st.session_state[_VIEW] = ViewState.from_params(st.query_params.to_dict())
        st.session_state[_HISTORY] = []
    return st.session_state[_VIEW]


def set_view(new: ViewState) -> None:
    """Replace the view; a changed subset is remembered so that "Step back" restores it."""
    old = view()
    if new.subset != old.subset:
        st.session_state[_HISTORY].append(old.subset)
    st.session_state[_VIEW] = new


def correct_view(new: ViewState) -> None:
    """Replace the view without remembering the old one (a run, method or subset the database
    no longer has)."""
    view()
    st.session_state[_VIEW] = new


def previous_subset() -> tuple[int, ...] | None:
    """The subset before the last change (None when the view has not changed it)."""
    history = st.session_state.get(_HISTORY) or []
    return history[-1] if history else None


def step_back() -> None:
    history = st.session_state.get(_HISTORY, [])
    if history:
        st.session_state[_VIEW] = view().with_subset(history.pop())


def sync_url() -> None:
    """Mirror the view into the URL (navigation between pages clears query parameters)."""
    params = view().to_params()
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


# -- the database and the page's context --------------------------------------------------------
def db_path() -> str:
    """The database this session reads (``GRADLENS_DB`` or the demo until the sidebar sets it)."""
    if _DB not in st.session_state:
        st.session_state[_DB] = os.environ.get("GRADLENS_DB", DEFAULT_DB)
    return st.session_state[_DB]


def set_db_path(db: str) -> None:
    st.session_state[_DB] = db


def context() -> Context | None:
    """The Context the sidebar built for this run of the script (None without a complete run)."""
    return st.session_state.get(_CONTEXT)


def set_context(ctx: Context | None) -> None:
    st.session_state[_CONTEXT] = ctx


# -- the model chosen on the Model page ---------------------------------------------------------
@dataclass(frozen=True)
class ModelChoice:
    """A model spec (``smollm2``, a folder or a cached hub id), whether its own code may run, and
    a LoRA adapter folder put on it (None: none), merged into its weights or not."""

    spec: str = DEFAULT_MODEL
    trust_remote_code: bool = False
    adapter: str | None = None
    adapter_merge: bool = False

    @property
    def label(self) -> str:
        """The spec, and the adapter when there is one: what names the model in captions and
        keys the lens pages' cached results."""
        if self.adapter is None:
            return self.spec
        return f"{self.spec} + adapter {self.adapter}" + (" (merged)" if self.adapter_merge else "")


def chosen_model() -> ModelChoice | None:
    """The model loaded on the Model page in this session (None before one is)."""
    spec = st.session_state.get(_MODEL_SPEC)
    if spec is None:
        return None
    trust = bool(st.session_state.get(_MODEL_TRUST, False))
    merge = bool(st.session_state.get(_MODEL_ADAPTER_MERGE, False))
    return ModelChoice(spec, trust, st.session_state.get(_MODEL_ADAPTER), merge)


def choose_model(choice: ModelChoice) -> None:
    st.session_state[_MODEL_SPEC] = choice.spec
    st.session_state[_MODEL_TRUST] = choice.trust_remote_code
    st.session_state[_MODEL_ADAPTER] = choice.adapter
    st.session_state[_MODEL_ADAPTER_MERGE] = choice.adapter_merge


# -- a pair sent to the Pair inspector ----------------------------------------------------------
@dataclass(frozen=True)
class PairText:
    """One example of a sent pair: a label ("query q7", "original e3"), its prompt and response."""

    label: str
    prompt: str
    response: str


@dataclass(frozen=True)
class SentPair:
    """Two examples for the Pair inspector and the sending run's ``loss_on``, ``reduction`` and
    model (None where the run does not record them)."""

    a: PairText
    b: PairText
    loss_on: str | None = None
    reduction: str | None = None
    model: str | None = None


def send_pair(pair: SentPair) -> None:
    """Hand ``pair`` to the Pair inspector (the caller switches to its page)."""
    st.session_state[_SENT_PAIR] = pair


def take_sent_pair() -> SentPair | None:
    """The pair sent since the Pair inspector last looked (once: it is forgotten here)."""
    return st.session_state.pop(_SENT_PAIR, None)
