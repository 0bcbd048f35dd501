"""The Backward lens page under AppTest on a tiny Llama: the Fig. 4 tab shows the shipped demo
result before anything is run, and any lens-ranks CSV named by path (a file that is not one is
one error line); after Run, the shift's summary; the edit's numbers are the function's, and the
shared model is bit for bit what it was."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DEMO, REPO
from tests.unit.test_lens import bits

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

PROMPT, TARGET = "Lionel Messi plays for", " Paris"


def texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_backward_page(tmp_path, tiny_model_dir, monkeypatch):
    from dashboard.models import _load
    from gradlens.lenses.backward import backward_lens
    from gradlens.lenses.edit import one_step_edit
    from gradlens.lenses.ranks import lens_ranks_summary, read_lens_ranks, run_lens_ranks
    from gradlens.options import LensRanksOptions

    monkeypatch.setenv("GRADLENS_DB", str(tmp_path / "none.duckdb"))  # the lens needs no run
    spec = str(tiny_model_dir)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["model_spec"] = spec
    at.run()
    at.switch_page("views/backward_lens.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shipped = lens_ranks_summary(read_lens_ranks(DEMO / "lens_ranks.csv"))
    assert shipped in texts(at).replace("\\", "")
    assert any("Press **Run**" in i.value for i in at.info)

    # a CSV the command wrote, by path; then a file that is not one
    prompts, out = tmp_path / "p.jsonl", tmp_path / "mine.csv"
    prompts.write_text(json.dumps({"prompt": PROMPT, "target": TARGET}) + "\n")
    mine = run_lens_ranks(LensRanksOptions(str(prompts), spec, str(out), no_progress=True))
    at.text_input(key="bl_ranks_path").input(str(out)).run()
    assert lens_ranks_summary(mine) in texts(at).replace("\\", "")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    at.text_input(key="bl_ranks_path").input(str(bad)).run()
    assert [e.value for e in at.error] == [
        "bad.csv is not a lens-ranks CSV (missing columns id, layer, n_tokens, ff1_rank, "
        "target_cosine, cosine_rank, lens_rank)"
    ]
    at.text_input(key="bl_ranks_path").input("").run()

    # Run, then one step on layer 1's FF2
    at.session_state["bl_inputs"] = (spec, PROMPT, TARGET, 3, False)
    at.run()
    assert not at.exception and not at.error
    lm = _load(spec, False)  # the server's one model, as the page got it
    saved = bits(lm.model)
    lens = backward_lens(lm.model, lm.tokenizer, PROMPT, TARGET, top_k=3)
    assert lens.shift_summary().replace("'", "") in texts(at).replace("\\", "").replace("'", "")
    at.session_state["bl_edit"] = (spec, PROMPT, TARGET, 1, "FF2", 0.5, 4)
    at.run()
    assert not at.exception and not at.error
    now = bits(lm.model)
    assert all((saved[k] == now[k]).all() for k in saved)
    edit = one_step_edit(lm.model, lm.tokenizer, PROMPT, TARGET, 1, "FF2", 0.5, 4)
    shown = {m.label: m.value for m in at.metric}
    assert shown["p(' Paris')"] == f"{edit.after.target_prob:.4f}"
    assert shown["rank of the target"] == str(edit.after.target_rank)
    assert shown["loss"] == f"{edit.after.loss:.4f}"
