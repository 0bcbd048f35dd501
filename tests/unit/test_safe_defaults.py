"""Safe defaults: the dashboard binds 127.0.0.1 with XSRF protection and an upload limit; weights
load only from safetensors (a pickled checkpoint is refused before anything unpickles it); model
code from disk never runs unless asked for; the model cache is private; uploads live in a
private folder and are gone once their job has succeeded."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys

import pytest

from gradlens import jobs
from gradlens.errors import GradLensError
from gradlens.models import loading as models
from gradlens.options import ComputeOptions
from gradlens.store.database import Store
from tests.conftest import REPO

_READ_CONFIG = """
from streamlit import config
config.get_config_options(force_reparse=True)
for key in ("server.address", "server.enableXsrfProtection", "server.enableCORS",
            "server.maxUploadSize", "browser.gatherUsageStats", "client.toolbarMode"):
    print(key, config.get_option(key))
"""


def test_streamlit_reads_safe_server_defaults_from_the_repo_config():
    """What Streamlit itself reads from .streamlit/config.toml when started in the repo."""
    out = subprocess.run(
        [sys.executable, "-c", _READ_CONFIG],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")},
    )
    assert out.returncode == 0, out.stderr
    got = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert got["server.address"] == "127.0.0.1"
    assert got["server.enableXsrfProtection"] == "True"
    assert got["server.enableCORS"] == "True"  # XSRF protection needs CORS protection on
    assert 0 < int(got["server.maxUploadSize"]) <= 200
    assert got["browser.gatherUsageStats"] == "False"


class _Payload:
    """Unpickling this creates a file: proof that a checkpoint ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled_model_folder(tmp_path, tiny_model_dir):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    marker = tmp_path / "pwned"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weights": _Payload(str(marker))}, f)
    return folder, marker


def test_pickled_weights_are_refused_without_unpickling(tmp_path, tiny_model_dir):
    folder, marker = _pickled_model_folder(tmp_path, tiny_model_dir)
    with pytest.raises(GradLensError, match="only pickled weights.*safetensors only"):
        models.load_model(str(folder))
    assert not marker.exists()


def test_pickled_weights_next_to_safetensors_are_never_read(tmp_path, tiny_model_dir):
    folder, marker = _pickled_model_folder(tmp_path, tiny_model_dir)
    for f in tiny_model_dir.iterdir():
        if f.name != "config.json":
            (folder / f.name).write_bytes(f.read_bytes())
    model, _ = models.load_model(str(folder))
    assert sum(p.numel() for p in model.parameters()) > 0
    assert not marker.exists()


def _remote_code_folder(tmp_path):
    folder = tmp_path / "remote"
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    config = {"model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_model_code_from_disk_never_runs_by_default(tmp_path):
    assert ComputeOptions(train="t", queries="q", db="d").trust_remote_code is False
    folder, marker = _remote_code_folder(tmp_path)
    with pytest.raises(GradLensError, match="cannot load model"):
        models.load_model(str(folder))
    assert not marker.exists()


def test_the_model_cache_is_private(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRADLENS_CACHE", str(cache))
    assert models.private_cache_root() == cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    os.chmod(cache, 0o777)  # as left by someone else's umask
    models.private_cache_root()
    assert not stat.S_IMODE(cache.stat().st_mode) & (stat.S_IWGRP | stat.S_IWOTH)


def test_the_bundled_model_is_read_from_the_private_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    monkeypatch.setenv("GRADLENS_CACHE", str(cache))
    target = models._bundled_cache_dir(models.bundled_gguf_path())
    target.mkdir()
    (target / "config.json").write_text("{}")  # already converted: no 30 s conversion here
    assert models.resolve_model_dir(models.BUNDLED_MODEL) == target
    assert not stat.S_IMODE(cache.stat().st_mode) & (stat.S_IWGRP | stat.S_IWOTH)


def test_uploads_live_in_a_private_folder_removed_after_success(tmp_path):
    db = tmp_path / "x.duckdb"
    job_id, inputs = jobs.new_job_folder(db)
    assert stat.S_IMODE(inputs.stat().st_mode) == 0o700
    assert stat.S_IMODE(inputs.parent.stat().st_mode) == 0o700
    (inputs / "train.jsonl").write_text("uploaded\n")
    job = jobs.create_job(db, "r", [["runs", "--db", str(db)]], "label", job_id=job_id)
    assert jobs._run(job.folder, 0) == 2  # no database yet: the step fails
    assert jobs.load_job(job.folder).status.state == "failed"
    assert (inputs / "train.jsonl").exists()  # kept for Resume
    Store(db).close()
    assert jobs._run(job.folder, 0) == 0
    assert jobs.load_job(job.folder).status.state == "complete"
    assert not inputs.exists()
