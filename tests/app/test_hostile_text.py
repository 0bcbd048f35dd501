"""User text is shown, never interpreted: a run computed on examples whose ids, prompts and
responses (and the run's name) are Markdown images, links and HTML is opened on every explore
page, a failure included; every string Streamlit renders as Markdown (bodies, headings, captions,
alerts, labels, help texts, radio options) is parsed with a CommonMark parser and must hold no
image and no link (an image would load remote content the moment the page is shown)."""

from __future__ import annotations

import json

import pytest
from markdown_it import MarkdownIt

from gradlens.cli import main
from gradlens.runs import read as queries
from gradlens.runs.viewstate import ViewState
from gradlens.selection import failures
from tests.conftest import REPO

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

EVIL = "http://evil.test"
IMG = f"![i]({EVIL}/img.png)"
HOSTILE = f"{IMG} <img src='{EVIL}/h.png'> [link]({EVIL}/l) `tick` *em* :red[x] $x$ <script>"
RUN = f"run 'x'; DROP TABLE runs; -- {IMG}"  # quotes: SQL only with parameters
PAGES = ["overview", "greedy", "heatmaps", "failures", "project", "runs"]
# proto fields Streamlit renders as Markdown
MARKDOWN_FIELDS = ("body", "label", "help", "caption")
PLAIN_TEXT = ("Text", "Code")  # st.text / st.code show their body verbatim


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("hostile")
    train, para = [], []
    for i in range(6):
        ex_id = f"ex{i} {IMG}"
        train.append({"id": ex_id, "prompt": f"Question {i} {HOSTILE}", "response": f"A {i}"})
        para.append({"id": ex_id, "prompt": f"Asked {i} {HOSTILE}", "response": f"A {i} {IMG}"})
    # query 0 is word for word training example 1: its original is certainly not retrieved,
    # so the failures page shows it
    para[0] = dict(train[1], id=train[0]["id"])
    for name, rows in (("train", train), ("queries", para[:4])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = root / "hostile.duckdb"
    argv = ["compute", "--model", str(tiny_model_dir), "--train", str(root / "train.jsonl")]
    argv += ["--queries", str(root / "queries.jsonl"), "--db", str(db), "--run", RUN]
    assert main([*argv, "--candidates", "4", "--no-progress"]) == 0
    assert main(["select", "--db", str(db), "--run", RUN, "--folds", "2"]) == 0
    return db


def _protos(node):
    proto = getattr(node, "proto", None)
    if proto is not None:
        yield proto
    for child in getattr(node, "children", {}).values():
        yield from _protos(child)


def _markdown_strings(at: AppTest) -> list[str]:
    out = []
    for root in (at.main, at.sidebar):
        for proto in _protos(root):
            if type(proto).__name__ in PLAIN_TEXT:
                continue
            for field in MARKDOWN_FIELDS:
                value = getattr(proto, field, None)
                if isinstance(value, str) and value:
                    out.append(value)
            if type(proto).__name__ == "Radio":
                out += list(proto.options)
    return out


def _loads_or_links(text: str) -> list[str]:
    """Images and links a CommonMark renderer would make of ``text``."""
    found = []
    for token in MarkdownIt("commonmark").parse(text):
        for t in [token, *(token.children or [])]:
            if t.type in ("image", "link_open"):
                found.append(f"{t.type} {t.attrs}")
    return found


def _open(monkeypatch, db, page: str, view: ViewState) -> AppTest:
    monkeypatch.setenv("GRADLENS_DB", str(db))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    for key, value in view.to_params().items():
        at.query_params[key] = value
    at.switch_page(f"views/{page}.py")
    return at.run()


@pytest.mark.parametrize("page", PAGES)
def test_no_user_text_becomes_an_image_or_a_link(hostile_db, monkeypatch, page):
    arrays = queries.load_arrays(str(hostile_db), RUN)
    fails = failures(arrays, list(range(arrays.shape[2])))
    query = str(fails["query_id"].iloc[0])
    at = _open(monkeypatch, hostile_db, page, ViewState(run=RUN, query=query))
    assert not at.exception, [e.value for e in at.exception]
    texts = _markdown_strings(at)
    shown = "\n".join(texts)
    if page in ("overview", "failures"):
        assert "evil" in shown  # the hostile name / ids are shown, as text
    bad = {t: _loads_or_links(t) for t in texts}
    bad = {t: found for t, found in bad.items() if found}
    assert not bad, f"{page}: user text rendered as Markdown images/links: {bad}"
