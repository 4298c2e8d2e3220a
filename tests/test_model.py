"""Loading: offline, any directory name, the HF cache, and values equal to the HF model's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import xtl
from xtl.errors import XtlError
from xtl.model import encode
from xtl.sites import check_site

from conftest import MODELS_DIR, ORACLE_DIR, TINY_MODELS


@pytest.fixture(scope="module")
def oracle_inputs():
    return [json.loads(line) for line in (ORACLE_DIR / "tiny_inputs.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_logits_and_hook_values_equal_the_hf_model(name, oracle_inputs):
    model = xtl.load_model(MODELS_DIR / name, dtype="float64")
    hf = AutoModelForCausalLM.from_pretrained(MODELS_DIR / name, dtype=torch.float64).eval()
    ids = next(r for r in oracle_inputs if r["model"] == name)["target_input_ids"]
    tokens = torch.tensor([ids])

    captured = {}
    handles = []
    for layer, hf_layer in enumerate(hf.model.layers):
        handles.append(hf_layer.self_attn.register_forward_hook(
            lambda m, i, o, layer=layer: captured.__setitem__(f"blocks.{layer}.hook_attn_out", o[0])))
        handles.append(hf_layer.mlp.register_forward_hook(
            lambda m, i, o, layer=layer: captured.__setitem__(f"blocks.{layer}.hook_mlp_out", o)))
    with torch.no_grad():
        hf_out = hf(tokens, output_hidden_states=True)
        logits, cache = model.run_with_cache(tokens)
    for handle in handles:
        handle.remove()

    # HF computes RMSNorm and rotary angles in float32 even for a float64 model,
    # so agreement is to float32 precision, relative to each tensor's scale.
    def close(ours, theirs):
        return (ours - theirs).abs().max().item() <= 1e-4 * theirs.abs().max().item()

    assert close(logits, hf_out.logits)
    assert logits[0, -1].argmax() == hf_out.logits[0, -1].argmax()
    for hook, value in captured.items():
        assert close(cache[hook], value), hook
    for layer in range(model.cfg.n_layers):
        # resid_mid = resid_pre + attn_out; resid_pre is HF's hidden state at the layer's input
        expected = hf_out.hidden_states[layer] + captured[f"blocks.{layer}.hook_attn_out"]
        assert close(cache[f"blocks.{layer}.hook_resid_mid"], expected)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tokenizer_is_the_checkpoints_own(name, oracle_inputs):
    model = xtl.load_model(MODELS_DIR / name)
    hf_tokenizer = AutoTokenizer.from_pretrained(MODELS_DIR / name)
    assert type(model.tokenizer) is type(hf_tokenizer)
    assert model.xtl.eos_token_ids == (1,)
    assert model.cfg.n_layers == 4
    # Llama / Mistral tokenizers add BOS (id 0), Qwen2's does not: ids must be exactly the HF ones
    starts_with_bos = {r["target_input_ids"][0] == 0 for r in oracle_inputs if r["model"] == name}
    assert starts_with_bos == {name != "tiny-qwen2"}


def test_encode_equals_the_oracle_token_ids(oracle_inputs, data_dir):
    from conftest import prompts_for  # the oracle cases' prompts

    for record in oracle_inputs:
        model = _cached_model(record["model"])
        source, target = prompts_for(data_dir, record["dataset"], "sw" if "XQuAD" not in record["dataset"] else "th", record["index"])
        assert encode(model, source) == record["source_input_ids"]
        assert encode(model, target) == record["target_input_ids"]


_MODELS: dict = {}


def _cached_model(name):
    if name not in _MODELS:
        _MODELS[name] = xtl.load_model(MODELS_DIR / name)
    return _MODELS[name]


def _copy_checkpoint(source: Path, destination: Path) -> Path:
    destination.mkdir(parents=True)
    for file in source.iterdir():
        os.symlink(file, destination / file.name)
    return destination


@pytest.mark.parametrize(
    "checkpoint, directory",
    [
        ("tiny-mistral", "Mistral-7B-Instruct-v0.3"),  # a name TransformerLens does not list
        ("tiny-llama", "chinese-alpaca-2-7b"),
        ("tiny-qwen2", "my-llama-finetune"),  # "llama" in the path of a Qwen2 checkpoint
    ],
)
def test_any_directory_name_loads_with_its_own_architecture(tmp_path, checkpoint, directory):
    path = _copy_checkpoint(MODELS_DIR / checkpoint, tmp_path / directory)
    model = xtl.load_model(path)
    reference = _cached_model(checkpoint)
    assert model.cfg.original_architecture == reference.cfg.original_architecture
    assert model.xtl.name == directory
    tokens = torch.tensor([encode(model, "Habari ya asubuhi")])
    assert torch.equal(model(tokens), reference(tokens))


def _fake_hf_cache(root: Path, repo: str, checkpoint: str) -> Path:
    org, name = repo.split("/")
    repo_dir = root / f"models--{org}--{name}"
    snapshot = repo_dir / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    _copy_checkpoint(MODELS_DIR / checkpoint, snapshot)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    return root


def test_official_name_loads_from_the_hf_cache(tmp_path):
    cache = _fake_hf_cache(tmp_path / "hub", "Qwen/Qwen2-7B-Instruct", "tiny-qwen2")
    model = xtl.load_model("Qwen/Qwen2-7B-Instruct", cache_dir=cache)
    assert model.xtl.name == "Qwen/Qwen2-7B-Instruct"
    assert model.xtl.fingerprint == _cached_model("tiny-qwen2").xtl.fingerprint


def test_hf_cache_from_the_environment_offline(tmp_path):
    cache = _fake_hf_cache(tmp_path / "hub", "meta-llama/Llama-2-7b-chat-hf", "tiny-llama")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    script = "import xtl; m = xtl.load_model('meta-llama/Llama-2-7b-chat-hf'); print(m.xtl.architecture, m.xtl.path)"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "LlamaForCausalLM"
    assert str(cache) in out.stdout


def test_trust_remote_code_is_off_unless_asked(monkeypatch):
    import transformers

    seen = []
    original = transformers.AutoTokenizer.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    xtl.load_model(MODELS_DIR / "tiny-qwen2")
    xtl.load_model(MODELS_DIR / "tiny-qwen2", trust_remote_code=True)
    assert seen == [False, True]


def test_fingerprint_tells_checkpoints_and_dtypes_apart():
    prints = {_cached_model(name).xtl.fingerprint for name in TINY_MODELS}
    assert len(prints) == 3
    assert xtl.load_model(MODELS_DIR / "tiny-qwen2", dtype="float64").xtl.fingerprint not in prints
    assert xtl.load_model(MODELS_DIR / "tiny-qwen2").xtl.fingerprint == _cached_model("tiny-qwen2").xtl.fingerprint


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(XtlError, match="not a Hugging Face checkpoint"):
        xtl.load_model(tmp_path)
    with pytest.raises(XtlError, match="no checkpoint found for 'nobody/nothing-7b'.*never downloads"):
        xtl.load_model("nobody/nothing-7b", cache_dir=tmp_path)
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(XtlError, match="is a file"):
        xtl.load_model(tmp_path / "weights.txt")


def test_unsupported_architecture(tmp_path):
    path = tmp_path / "gpt2-like"
    path.mkdir()
    config = json.loads((MODELS_DIR / "tiny-llama" / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(XtlError, match=r"architecture .GPT2LMHeadModel. is not supported: xtl loads BloomForCausalLM, .*LlamaForCausalLM, MistralForCausalLM, .*Qwen2ForCausalLM"):
        xtl.load_model(path)


def test_pickle_weights_are_refused(tmp_path):
    path = tmp_path / "pickled"
    path.mkdir()
    for file in (MODELS_DIR / "tiny-llama").iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, path / file.name)
    (path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(XtlError, match="no \\*.safetensors weights .*pytorch_model.bin.*never pickle"):
        xtl.load_model(path)


def test_unknown_dtype():
    with pytest.raises(XtlError, match="unknown dtype 'float8': use one of float32, float64, bfloat16, float16"):
        xtl.load_model(MODELS_DIR / "tiny-llama", dtype="float8")


def test_a_row_added_to_the_site_table_is_known_everywhere(monkeypatch):
    """One table: the torch-free check the CLI runs (`xtl.sites.check_site`), the hook
    names (xtl.model) and the list of sites all follow a row added to `xtl.sites.TABLE`."""
    from xtl import sites
    from xtl import model as xtl_model

    with pytest.raises(XtlError, match="unknown site 'resid-mid': the sites are ffn, attn, attn-paper."):
        check_site("resid-mid")
    monkeypatch.setitem(sites.TABLE, "resid-mid", sites.SiteRow("resid-mid", read=sites.RESID_MID, write=sites.RESID_MID))
    assert check_site("resid-mid") == "resid-mid"
    assert xtl.SITES == ("ffn", "attn", "attn-paper", "resid-mid")
    assert xtl_model.read_hook("attn-paper", 3) == "blocks.3.hook_resid_mid"
    assert xtl_model.write_hook("attn-paper", 3) == "blocks.3.hook_attn_out"
    assert xtl_model.write_hook("resid-mid", 2) == "blocks.2.hook_resid_mid"


@pytest.mark.parametrize("name", TINY_MODELS)
def test_weights_in_hf_layout_change_no_output(name):
    # xtl stores the projection weights in nn.Linear's layout, so TransformerLens'
    # per-forward `.T.contiguous()` / rearranges are views, not copies of every weight.
    model = xtl.load_model(MODELS_DIR / name)
    block = model.blocks[0]
    assert block.mlp.W_in.T.is_contiguous() and block.mlp.W_out.T.is_contiguous()
    assert model.unembed.W_U.T.is_contiguous()
    assert block.attn.W_Q.permute(0, 2, 1).is_contiguous()
    assert block.attn.W_O.permute(2, 0, 1).is_contiguous()
    ids = torch.tensor([list(range(5, 40))])
    with torch.inference_mode():
        relaid = model(ids)
        for parameter in model.parameters():
            parameter.data = parameter.data.contiguous()
        assert not block.mlp.W_in.T.is_contiguous()
        plain = model(ids)
    assert torch.equal(relaid, plain)
