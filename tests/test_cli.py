"""`xtl transplant` and the command line's handling of mistakes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import xtl
from xtl.cli import build_parser, main

from conftest import DATA_DIR, MODELS_DIR, REPO, prompts_for

SOURCE, TARGET = prompts_for(DATA_DIR, "XNLI_sample", "sw", 0)
MODEL = str(MODELS_DIR / "tiny-qwen2")


@pytest.mark.parametrize("command", ["transplant", "sweep"])
def test_help_states_every_default(command):
    """The help of each option with a default names that default, so --help matches the code."""
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    for action in parser._actions:
        if action.dest != "help" and action.default not in (None, False):
            assert "default" in action.help and str(action.default) in action.help, action.dest


def test_transplant_prints_both_answers(capsys):
    assert main(["transplant", "--model", MODEL, "--source", SOURCE, "--target", TARGET,
                 "--site", "attn-paper", "--source-layer", "2", "--target-layer", "1"]) == 0
    out = capsys.readouterr().out
    model = xtl.load_model(MODEL)
    vanilla = xtl.generate(model, TARGET)
    moved = xtl.transplant(model, SOURCE, TARGET, site="attn-paper", source_layer=2, target_layer=1)
    assert f"vanilla                    | {vanilla.text!r}" in out
    assert f"transplant attn-paper 2->1 | {moved.text!r}" in out


def test_transplant_json_from_files(tmp_path, capsys):
    (tmp_path / "s.txt").write_text(SOURCE, encoding="utf-8")
    (tmp_path / "t.txt").write_text(TARGET, encoding="utf-8")
    assert main(["transplant", "--model", MODEL, "--source-file", str(tmp_path / "s.txt"),
                 "--target-file", str(tmp_path / "t.txt"), "--source-layer", "3", "--target-layer", "0", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    expected = xtl.transplant(xtl.load_model(MODEL), SOURCE, TARGET, site="ffn", source_layer=3, target_layer=0)
    assert record["transplant"]["token_ids"] == list(expected.token_ids)
    assert record["site"] == "ffn" and record["model"] == "tiny-qwen2"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--site", "mlp", "--source-layer", "0", "--target-layer", "0"], "unknown site 'mlp': the sites are ffn, attn, attn-paper."),
        (["--source-layer", "0", "--target-layer", "4"], "target layer 4 is outside this model: it has 4 layers, numbered 0..3."),
        (["--source-layer", "0", "--target-layer", "0", "--target", " "], "the target prompt is empty"),
        (["--source-layer", "0", "--target-layer", "0", "--model", str(MODELS_DIR)], "is a directory but not a Hugging Face checkpoint"),
        (["--source-layer", "0", "--target-layer", "0", "--source-file", "/nonexistent.txt"], "does not exist"),
    ],
)
def test_transplant_mistakes_get_one_sentence_and_status_2(arguments, message):
    base = {"--model": MODEL, "--source": SOURCE, "--target": TARGET}
    for flag in arguments:
        if flag in ("--model", "--target"):
            base.pop(flag)
    if "--source-file" in arguments:
        base.pop("--source")
    command = [sys.executable, "-m", "xtl", "transplant"] + [x for kv in base.items() for x in kv] + arguments
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
