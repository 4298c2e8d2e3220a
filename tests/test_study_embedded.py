"""A study on the embedded model (SmolLM2-135M-Instruct, a GGUF): its dry run is
sized from the GGUF header without torch, and the study runs with its progress
bar on, whether or not the size of its sweeps is known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import xtl
from xtl import results
from xtl.checkpoints import embedded_model_path, read_shape
from xtl.options import LoadOptions
from xtl.study import Job, ModelSpec, StudyProgress, study

from conftest import MODELS_DIR, REPO

STUDY = {
    "benchmarks": ["facts"], "languages": ["fr"], "splits": ["demo"], "sites": ["ffn"], "limit": 1,
    "max_new_tokens": 4, "prompt_format": "chat", "models": [{"model": "SmolLM2-135M-Instruct", "layers": "0,3"}],
}  # fmt: skip


def test_the_gguf_header_gives_the_embedded_models_shape_without_torch():
    code = (
        "import sys, json; from xtl.checkpoints import read_shape; s = read_shape('SmolLM2-135M-Instruct'); "
        "print(json.dumps([s.n_layers, s.params, s.architecture, s.source, 'torch' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    n_layers, params, architecture, source, torch_imported = json.loads(out)
    # SmolLM2-135M: 30 layers, d_model 576, vocabulary 49152, tied embeddings
    assert (n_layers, architecture, source, torch_imported) == (30, "LlamaForCausalLM", "the GGUF header", False)
    per_layer = 576 * 576 * 2 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576  # q, o, k, v, gate/up/down, two norms
    assert params == 30 * per_layer + 49152 * 576 + 576  # + the embedding (tied) and the final norm


def test_a_gguf_file_and_a_config_give_the_same_layer_count_as_the_loader(smollm2):
    assert read_shape(str(embedded_model_path())).n_layers == smollm2.cfg.n_layers
    assert read_shape(MODELS_DIR / "tiny-qwen2").n_layers == xtl.load_model(MODELS_DIR / "tiny-qwen2").cfg.n_layers


def test_the_dry_run_of_a_study_on_the_embedded_model_is_sized_from_the_gguf_header(tmp_path):
    text = study({**STUDY, "out": str(tmp_path / "out")}, dry_run=True)
    assert "LlamaForCausalLM, 30 layers, 135M parameters, from the GGUF header" in text
    assert "1 instances, 1 languages x 1 sites x 4 configurations = 5 rows" in text
    assert "unknown" not in text and "not found" not in text


def test_a_study_on_the_embedded_model_runs_with_its_progress_bar(tmp_path, smollm2, monkeypatch):
    monkeypatch.setattr(xtl, "load_model", lambda *args, **kwargs: smollm2)  # the session's copy: one load
    frame = study({**STUDY, "out": str(tmp_path / "out")}, progress=True, report=False)
    assert len(frame) == 1 * (1 + 4)
    run = results.load(tmp_path / "out" / "SmolLM2-135M-Instruct" / "facts-demo")
    assert len(run) == 5 and set(run["model"]) == {"SmolLM2-135M-Instruct"}


def test_the_study_progress_bar_takes_rows_of_sweeps_of_unknown_size(tmp_path):
    unknown = Job(ModelSpec(LoadOptions("no/such-model-here")), ("instance",), tmp_path / "run", "facts", "demo", ("fr",))
    bar = StudyProgress([unknown], enabled=True)
    bar.add(7)  # was a ZeroDivisionError: no sweep's size known, so no rows per instance
    assert bar.bar.n == 7 and bar.bar.total is None and "instances/s" not in str(bar.bar.postfix)
    bar.close()


def test_the_readme_study_example_is_the_one_that_works():
    readme = (REPO / "README.md").read_text()
    assert "xtl study studies/paper-pilot.toml --dry-run --gpus 8 --data-dir" in readme
    assert Path(REPO / "studies" / "paper-pilot.toml").is_file()
