"""Every user mistake of issue 11: one sentence, exit status 2, no traceback, nothing written.

The mistakes that need no model are all run in one fresh Python process (one
start-up for all of them), which records after each whether torch (or
transformers / TransformerLens) was imported: the command line must refuse them
before it imports torch, let alone reads weights. The mistakes that need the
model (a damaged checkpoint, a missing GPU, a prompt longer than the context)
run in this process through `xtl.cli.main`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import xtl
from xtl import cli
from xtl.errors import XtlError
from xtl.results import SETTINGS_FILE, Settings

from conftest import DATA_DIR, MODELS_DIR, REPO

MODEL = MODELS_DIR / "tiny-qwen2"  # 4 layers, max_position_embeddings 4096
HEAVY = ("torch", "transformers", "transformer_lens")


def sweep(out: str, *extra: str) -> list[str]:
    return ["sweep", "--model", str(MODEL), "--benchmark", "xnli", "--lang", "sw", "--data-dir", str(DATA_DIR),
            "--limit", "1", "--out", out, *extra]  # fmt: skip


def transplant(*extra: str, source: str = "Hello", target: str = "Habari") -> list[str]:
    return ["transplant", "--model", str(MODEL), "--source", source, "--target", target,
            "--source-layer", "0", "--target-layer", "1", *extra]  # fmt: skip


# (case id, argv with {tmp} for the case's folder, what the one sentence must say)
NO_MODEL_CASES = [
    ("layers-backwards", sweep("{tmp}/out", "--layers", "3-1"), "layer range '3-1' runs backwards"),
    ("layers-two-colons", sweep("{tmp}/out", "--layers", "0:1:2"), "layer group '0:1:2' has 2 colons"),
    ("layers-word", sweep("{tmp}/out", "--layers", "first"), "layer 'first' is not a layer number or range"),
    ("layers-negative", sweep("{tmp}/out", "--layers=-1:0"), "layer '-1' is not a layer number"),
    ("max-new-tokens-0", sweep("{tmp}/out", "--max-new-tokens", "0"), "--max-new-tokens must be a positive whole number, not 0."),
    ("memory-budget-lots", sweep("{tmp}/out", "--memory-budget", "lots"), "memory budget 'lots' is not understood"),
    ("max-batch-rows-1", sweep("{tmp}/out", "--max-batch-rows", "1"), "--max-batch-rows must be a whole number of at least 2"),
    ("site-mlp", sweep("{tmp}/out", "--site", "mlp"), "unknown site 'mlp': the sites are ffn, attn, attn-paper."),
    ("dtype", sweep("{tmp}/out", "--dtype", "float8"), "unknown dtype 'float8'"),
    ("device-gpu", sweep("{tmp}/out", "--device", "gpu"), "unknown device 'gpu': use cpu, cuda, cuda:N"),
    ("n-ctx-0", sweep("{tmp}/out", "--n-ctx", "0"), "--n-ctx must be a whole number of tokens of at least 2, not 0."),
    ("out-not-empty", sweep("{tmp}/full"), "is not empty and holds no xtl run"),
    ("out-other-settings", sweep("{tmp}/run", "--site", "ffn"), "holds a run made with other settings (sites: ['attn'] there, ['ffn'] now)"),
    ("out-layers-beyond-run", sweep("{tmp}/run", "--site", "attn", "--layers", "0-9"), "holds a run of a 4-layer model, and there layer 9 is outside"),
    ("out-is-a-file", sweep("{tmp}/file.txt"), "is a file"),
    ("lang-comma", sweep("{tmp}/out")[:5] + ["--lang", ","] + sweep("{tmp}/out")[7:], "--lang ',' names no language"),
    ("lang-unknown", sweep("{tmp}/out")[:5] + ["--lang", "xx"] + sweep("{tmp}/out")[7:], "has no language 'xx'"),
    ("benchmark-typo", ["sweep", "--model", str(MODEL), "--benchmark", "xnlii", "--lang", "sw", "--data-dir", str(DATA_DIR), "--out", "{tmp}/out"],
     "unknown benchmark 'xnlii' (did you mean xnli?)"),
    ("benchmark-given-a-file", ["sweep", "--model", str(MODEL), "--benchmark", "{tmp}/pairs.jsonl", "--lang", "sw", "--out", "{tmp}/out"],
     "--pairs PATH"),
    ("pairs-folder", ["sweep", "--model", str(MODEL), "--pairs", "{tmp}", "--out", "{tmp}/out"], "is a folder; give the path of a JSONL file"),
    ("pairs-lone-surrogate", ["sweep", "--model", str(MODEL), "--pairs", "{tmp}/surrogate.jsonl", "--out", "{tmp}/out"],
     "half of a UTF-16 surrogate pair"),
    ("data-dir-missing", sweep("{tmp}/out")[:7] + ["--data-dir", "{tmp}/nowhere"] + sweep("{tmp}/out")[9:], "does not exist or is not a folder"),
    ("transplant-negative-layer", transplant()[:7] + ["--source-layer", "-1"] + transplant()[9:], "--source-layer -1 is negative"),
    ("transplant-max-new-tokens-0", transplant("--max-new-tokens", "0"), "--max-new-tokens must be a positive whole number"),
    ("transplant-empty-target", transplant(target="  "), "the target prompt is empty"),
    ("transplant-device-gpu", transplant("--device", "gpu"), "unknown device 'gpu'"),
    ("report-missing-run", ["report", "{tmp}/nowhere"], "does not exist"),
    ("sweep-limit-0", sweep("{tmp}/out", "--limit", "0"), "--limit must be a whole number of at least 1, not 0."),
    ("demo-limit-0", ["demo", "--limit", "0", "--out", "{tmp}/demo"], "--limit must be a whole number of at least 1, not 0."),
    # issue 22: argparse's mistakes are one sentence; layers beyond the model are refused from its config or
    # GGUF header, before the weights load; the README's study example without a data folder, before torch
    ("missing-required-argument", transplant()[:7] + transplant()[9:], "the following arguments are required: --source-layer"),
    ("transplant-layer-beyond-model", transplant()[:7] + ["--source-layer", "40"] + transplant()[9:],
     "source layer 40 is outside this model: it has 4 layers, numbered 0..3."),
    ("transplant-layer-beyond-embedded-model",
     ["transplant", "--model", "SmolLM2-135M-Instruct", "--source", "a", "--target", "b", "--source-layer", "1", "--target-layer", "30"],
     "target layer 30 is outside this model: it has 30 layers, numbered 0..29."),
    ("sweep-layers-beyond-model", sweep("{tmp}/out", "--layers", "0-40"), "layer 40 is outside this model: it has 4 layers"),
    ("study-ray-ate-the-study-file", ["study", "--ray", "studies/paper-pilot.toml"],
     "--ray took 'studies/paper-pilot.toml' as the Ray cluster's address: write the study file first"),
    ("study-without-data-dir", ["study", str(REPO / "studies" / "paper-pilot.toml"), "--dry-run", "--gpus", "8"],
     "no data folder was given and XTL_DATA_DIR is not set"),
]

RUNNER = """
import json, sys
from xtl.cli import main
cases, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = {}
for name, argv in cases.items():
    sys.stderr.write(f"@@case {name}\\n")
    try:
        status = main(argv)
    except SystemExit as error:  # argparse's own usage errors
        status = error.code
    results[name] = {"status": status, "imported": [m for m in heavy if m in sys.modules]}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def no_model_runs(tmp_path_factory) -> dict:
    """All no-model cases in one fresh process: per case its status, stderr and the heavy modules imported."""
    root = tmp_path_factory.mktemp("mistakes")
    cases = {}
    for name, argv, _ in NO_MODEL_CASES:
        folder = root / name
        folder.mkdir()
        (folder / "full").mkdir()
        (folder / "full" / "notes.txt").write_text("mine\n")
        (folder / "run").mkdir()
        settings = Settings(model_fingerprint="0" * 16, architecture="LlamaForCausalLM", n_layers=4, dtype="float32",
                            sites=("attn",), configs="all", max_new_tokens=20, model="tiny-llama")  # fmt: skip
        (folder / "run" / SETTINGS_FILE).write_text(json.dumps(settings.to_json()))
        (folder / "file.txt").write_text("not a folder\n")
        (folder / "pairs.jsonl").write_text('{"id": "a", "source": "Hi", "target": "Habari"}\n')
        (folder / "surrogate.jsonl").write_text('{"id": "a", "source": "Hi \\ud800", "target": "Habari"}\n')
        cases[name] = [part.replace("{tmp}", str(folder)) for part in argv]
    before = {path: path.stat().st_mtime_ns for path in root.rglob("*")}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(cases), json.dumps(HEAVY)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={key: value for key, value in os.environ.items() if key != "XTL_DATA_DIR"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    for chunk in result.stderr.split("@@case ")[1:]:
        name, _, err = chunk.partition("\n")
        runs[name]["stderr"] = err
    after = {path: path.stat().st_mtime_ns for path in root.rglob("*")}
    runs["_written"] = sorted(str(p.relative_to(root)) for p in after.keys() - before.keys())
    runs["_changed"] = sorted(str(p.relative_to(root)) for p in before if after.get(p) != before[p] and p.is_file())
    return runs


@pytest.mark.parametrize("name, argv, message", NO_MODEL_CASES, ids=[c[0] for c in NO_MODEL_CASES])
def test_mistake_without_a_model_is_one_sentence_before_torch(no_model_runs, name, argv, message):
    run = no_model_runs[name]
    assert run["status"] == 2
    lines = run["stderr"].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run["stderr"], run["stderr"]
    assert lines[0].startswith(f"xtl {argv[0]}: error: ")
    assert message in lines[0]
    assert run["imported"] == [], f"{name}: imported {run['imported']} before refusing"


def test_no_mistake_wrote_anything(no_model_runs):
    assert no_model_runs["_written"] == [] and no_model_runs["_changed"] == []


# --------------------------------------------------------------------------- mistakes that need the model


def _copy_model(tmp_path: Path, name: str = "model") -> Path:
    target = tmp_path / name
    shutil.copytree(MODEL, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def _truncated(path: Path) -> None:
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50_000])


def _random(path: Path) -> None:
    (path / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(50_000))


def _no_tokenizer(path: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (path / name).unlink()


def _remote_code_tokenizer(path: Path) -> None:
    (path / "tokenizer.json").unlink()
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="MyTokenizer", auto_map={"AutoTokenizer": ["tokenization_my.MyTokenizer", None]})
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    (path / "tokenization_my.py").write_text("raise SystemExit('remote code ran')\n")


def _cuda_device() -> str:
    return "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


LONG = "habari " * 4000  # far more than 4096 tokens

MODEL_CASES = [
    ("safetensors-truncated", _truncated, [], "is not a readable safetensors file"),
    ("safetensors-random-bytes", _random, [], "is not a readable safetensors file"),
    ("no-tokenizer-files", _no_tokenizer, [], "has no tokenizer files"),
    ("remote-code-tokenizer", _remote_code_tokenizer, [], "--trust-remote-code"),
    ("device-without-cuda", None, ["--device", _cuda_device()], "is not available"),
    ("n-ctx-beyond-checkpoint", None, ["--n-ctx", "100000"], "n_ctx 100000 is more than the 4096 positions"),
    ("target-longer-than-checkpoint", None, ["--target", LONG], "the target prompt is"),
    ("target-longer-than-n-ctx", None, ["--n-ctx", "64", "--target", "habari " * 80], "or --n-ctx"),
    ("target-plus-new-tokens", None, ["--n-ctx", "64", "--max-new-tokens", "40", "--target", "habari " * 10],
     "plus 40 new tokens exceeds the context of 64 tokens"),
]


@pytest.mark.parametrize("name, damage, extra, message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_mistake_with_a_model_is_one_sentence(tmp_path, capsys, name, damage, extra, message):
    model = MODEL
    if damage is not None:
        model = _copy_model(tmp_path)
        damage(model)
    argv = transplant()
    argv[argv.index("--model") + 1] = str(model)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("xtl transplant: error: "), err
    assert message in err


def test_long_prompt_message_names_the_target_and_what_to_do(capsys):
    assert cli.main(transplant("--target", LONG)) == 2
    err = capsys.readouterr().err
    assert "the target prompt is" in err and "made for at most 4096 positions" in err


def test_n_ctx_raises_the_context(capsys):
    """--n-ctx is passed through: the model is loaded with that context."""
    model = xtl.load_model(MODEL, n_ctx=128)
    assert model.cfg.n_ctx == 128
    with pytest.raises(XtlError, match="plus 20 new tokens exceeds the context of 128 tokens"):
        xtl.generate(model, _prompt_of_length(model, 109, 128))


# --------------------------------------------------------------------------- integers from tables


@pytest.fixture(scope="module")
def model():
    return xtl.load_model(MODEL)


def test_numpy_and_pandas_integer_layers_are_layers(model):
    """What a results table holds (numpy int64, pandas Int64 scalars) is accepted wherever a layer is."""
    expected = xtl.transplant(model, "Hello", "Habari", site="ffn", source_layer=2, target_layer=1, max_new_tokens=3)
    column = pd.Series([2, 1], dtype="Int64")
    for source, target in ((np.int64(2), np.int32(1)), (column[0], column[1])):
        got = xtl.transplant(model, "Hello", "Habari", site="ffn", source_layer=source, target_layer=target,
                             max_new_tokens=np.int64(3))  # fmt: skip
        assert got == expected
    from xtl.model import check_layer

    assert check_layer(model, np.int64(3)) == 3 and type(check_layer(model, np.int64(3))) is int
    with pytest.raises(XtlError, match="target_layer 4 is outside this model: it has 4 layers, numbered 0..3"):
        xtl.transplant(model, "Hello", "Habari", site="ffn", source_layer=0, target_layer=np.int64(4))
    for not_a_layer in (True, 1.0, "1", np.float64(1)):
        with pytest.raises(XtlError, match="is not a whole number"):
            check_layer(model, not_a_layer)


def test_numpy_integer_configurations_in_a_sweep(model):
    item = xtl.datasets.load("xnli", "sw", split="sample", data_dir=DATA_DIR)[0]
    frame = xtl.sweep(model, [item], configs=[(np.int64(1), np.int64(2))], max_new_tokens=2, progress=False)
    assert set(zip(frame["source_layer"].dropna(), frame["target_layer"].dropna())) == {(1, 2)}


def _prompt_of_length(model, low: int, high: int) -> str:
    """A prompt of low..high tokens."""
    for words in range(1, high + 1):
        prompt = "habari " * words
        if low <= len(model.tokenizer(prompt).input_ids) <= high:
            return prompt
    raise AssertionError(f"no prompt of {low}..{high} tokens")


def test_generate_checks_prompt_and_new_tokens_against_the_context(model):
    prompt = _prompt_of_length(model, model.cfg.n_ctx - 19, model.cfg.n_ctx)  # fits, but not with 20 new tokens
    length = len(model.tokenizer(prompt).input_ids)
    with pytest.raises(XtlError, match=rf"the prompt \({length} tokens\) plus 20 new tokens exceeds the context of 4096"):
        xtl.generate(model, prompt)
    with pytest.raises(XtlError, match=r"the target prompt \(\d+ tokens\) plus 20 new tokens exceeds"):
        xtl.transplant(model, "Hello", prompt, site="ffn", source_layer=0, target_layer=0)


# --------------------------------------------------------------------------- Ctrl-C, the Python API


def test_ctrl_c_right_after_start_is_exit_130_without_traceback():
    """SIGINT while the command line is still importing (before main() runs) ends quietly."""
    code = "import os, signal, time, xtl.cli; os.kill(os.getpid(), signal.SIGINT); time.sleep(5); print('not reached')"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 130
    assert result.stderr.strip() == "xtl: interrupted" and result.stdout == ""


def test_ctrl_c_while_building_the_parser_is_exit_130(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["benchmarks"]) == 130
    assert capsys.readouterr().err.strip() == "xtl: interrupted"


def test_version():
    result = subprocess.run([sys.executable, "-m", "xtl", "--version"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"xtl {xtl.__version__}"


def test_python_api_is_discoverable_and_typed():
    names = dir(xtl)
    for name in ("load_model", "generate", "transplant", "sweep", "Site", "XtlError", "datasets", "plots", "report"):
        assert name in names
    for name in xtl.__all__:  # every name the API lists resolves (a renamed module would not)
        assert getattr(xtl, name) is not None, name
    assert (Path(xtl.__file__).parent / "py.typed").is_file()
    from xtl.generation import transplant as transplant_function

    assert typing.get_type_hints(transplant_function)["site"] == xtl.Site
    assert typing.get_args(xtl.Site) == ("ffn", "attn", "attn-paper")


def test_the_early_out_check_lets_a_matching_run_resume(tmp_path, capsys):
    """The check of --out before the model is loaded refuses other settings, never the same ones."""
    out = tmp_path / "run"
    argv = sweep(str(out), "--layers", "0:1;2-3:0", "--site", "attn", "--site", "ffn", "--max-new-tokens", "2",
                 "--quiet")  # fmt: skip
    assert cli.main(argv) == 0
    parts = sorted(out.glob("part-*.parquet"))
    assert cli.main(argv) == 0  # the same settings (sites in another order): resumed, nothing to add
    assert sorted(out.glob("part-*.parquet")) == parts
    capsys.readouterr()
    assert cli.main(sweep(str(out), "--layers", "0:1", "--site", "ffn", "--site", "attn", "--max-new-tokens", "2")) == 2
    assert "configs: [[0, 1], [2, 0], [3, 0]] there, [[0, 1]] now" in capsys.readouterr().err
