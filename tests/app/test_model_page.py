"""The Model page under Streamlit's AppTest: it renders before any model is loaded; loading the
tiny Llama folder shows its components (as many rows as discover_components) and the tokenised
demo example (loss flags as tokenize_example's labels); a bad folder gives one error line and
no exception, and keeps the session's model."""

from __future__ import annotations

import pytest

from gradlens.data.examples import IGNORE_INDEX, load_examples, tokenize_example
from gradlens.models.loading import discover_components, load_model
from tests.conftest import DEMO, REPO
from tests.helpers import save_lora_adapter, synthetic_selected_db

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

PAGE = "views/model.py"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return synthetic_selected_db(tmp_path_factory.mktemp("model-page"))


@pytest.fixture
def page(db, monkeypatch):
    monkeypatch.setenv("GRADLENS_DB", str(db))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.switch_page(PAGE)
    return at.run()


def frame_with(at: AppTest, column: str):
    """The value of the first dataframe that has ``column``."""
    for df in at.dataframe:
        value = df.value
        value = getattr(value, "data", value)  # a pandas Styler carries its frame as .data
        if column in value.columns:
            return value
    raise AssertionError(f"no dataframe with a {column!r} column")


def load_folder(at: AppTest, folder) -> AppTest:
    at.radio(key="model_source").set_value("local folder").run()  # enables the path input
    at.text_input(key="model_path").input(str(folder))
    at.button(key="model_load").click()
    return at.run()


def test_renders_before_any_model_is_loaded(page):
    assert not page.exception, page.exception
    assert page.title[0].value == "Model"
    assert not page.error
    assert any("No model loaded" in i.value for i in page.info)
    assert "model_spec" not in page.session_state
    assert page.button(key="model_load")
    assert page.checkbox(key="model_trust").value is False


def test_load_tiny_folder_shows_its_components_and_tokens(page, tiny_model_dir):
    at = load_folder(page, tiny_model_dir)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["model_spec"] == str(tiny_model_dir.resolve())
    assert at.session_state["model_trust_remote_code"] is False

    model, tokenizer = load_model(str(tiny_model_dir))
    comps = discover_components(model)
    shown = frame_with(at, "component")
    assert len(shown) == len(comps)
    assert list(shown["component"]) == [c.name for c in comps]
    assert list(shown["n_params"]) == [c.n_params for c in comps]

    arch = frame_with(at, "field").set_index("field")["value"]
    assert arch["model class"] == "LlamaForCausalLM" and arch["layers"] == "2"

    first = load_examples(DEMO / "train.jsonl")[0]
    ids, labels = tokenize_example(tokenizer, first, loss_on="response", max_length=512)
    tokens = frame_with(at, "token_id")
    assert list(tokens["token_id"]) == ids.tolist()
    assert list(tokens["loss"]) == (labels != IGNORE_INDEX).tolist()

    # options rerun the preview on the cached model
    at.radio(key="model_preview_loss_on").set_value("all").run()
    assert not at.exception
    assert frame_with(at, "token_id")["loss"].all()


def test_bad_folder_shows_one_error_line(page, tmp_path, tiny_model_dir):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    at = load_folder(page, empty)
    assert not at.exception, at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert "config.json" in message and "\n" not in message.strip()
    assert "model_spec" not in at.session_state

    at = load_folder(at, tmp_path / "missing")
    assert not at.exception
    assert [e.value for e in at.error] == [f"no folder at {tmp_path / 'missing'}"]

    # a good model, then a bad folder: the error line, and the session keeps its model
    at = load_folder(at, tiny_model_dir)
    assert not at.error
    at = load_folder(at, empty)
    assert not at.exception
    assert len(at.error) == 1
    assert at.session_state["model_spec"] == str(tiny_model_dir.resolve())
    assert len(frame_with(at, "component")) == 1 + 7 * 2


def test_empty_hub_id_and_a_typed_example(page, tiny_model_dir):
    at = page
    at.radio(key="model_source").set_value("hub id in the local cache").run()
    at.button(key="model_load").click()
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and "hub id" in at.error[0].value

    at = load_folder(at, tiny_model_dir)
    at.radio(key="model_preview_source").set_value("type an example").run()
    assert not at.exception
    assert any("Type a prompt" in i.value for i in at.info)
    at.text_area(key="model_preview_prompt").input("What is 2 + 2?")
    at.text_area(key="model_preview_response").input("<b>4</b> ²")
    at.number_input(key="model_preview_max_length").set_value(16)
    at.run()
    assert not at.exception
    _, tokenizer = load_model(str(tiny_model_dir))
    from gradlens.data.examples import Example

    ex = Example("typed", "What is 2 + 2?", "<b>4</b> ²")
    ids, labels = tokenize_example(tokenizer, ex, loss_on="response", max_length=16)
    tokens = frame_with(at, "token_id")
    assert list(tokens["token_id"]) == ids.tolist()
    assert list(tokens["loss"]) == (labels != IGNORE_INDEX).tolist()
    assert any("max_length cut" in t.value for t in at.text)


def test_an_adapter_shows_its_components(page, tiny_model_dir, tmp_path):
    """A LoRA adapter on the tiny Llama: the adapter's matrices are the components (the base's
    left out); merged, the model's own components again."""
    pytest.importorskip("peft")
    adapter = save_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    at = page
    at.text_input(key="model_adapter").input(str(adapter))
    at = load_folder(at, tiny_model_dir)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["model_adapter_dir"] == str(adapter.resolve())
    model, _ = load_model(str(tiny_model_dir), adapter=str(adapter))
    comps = discover_components(model)
    shown = frame_with(at, "component")
    assert list(shown["component"]) == [c.name for c in comps]
    assert list(shown["n_params"]) == [c.n_params for c in comps]
    assert list(shown["kind"]) == [c.kind for c in comps] and len(comps) == 2 * 7 * 2
    assert "L0.q.lora_A" in set(shown["component"]) and "L0.q" not in set(shown["component"])
    # the lens pages compute with the merged model (and say so)
    at.switch_page("views/backward_lens.py").run()
    assert not at.exception
    (line,) = [c.value for c in at.caption if c.value.startswith("Model:")]
    assert "adapter" in line and line.endswith("(merged\\) (change it on the Model page).")

    at.switch_page(PAGE).run()
    at.checkbox(key="model_adapter_merge").check()
    at.button(key="model_load").click()
    at = at.run()
    assert not at.exception and not at.error
    assert at.session_state["model_adapter_merged"] is True
    assert len(frame_with(at, "component")) == 1 + 7 * 2
