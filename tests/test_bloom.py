"""BLOOM (bloomz-7b1, the paper's fifth model): loading with every hook value
equal to the Hugging Face model's, and transplants equal to an independent
implementation with plain HF forward hooks.

The checkpoint is built here: HF's own BloomConfig / BloomForCausalLM with random
weights (LayerNorm weights and biases too, so a swapped or missing norm shows),
saved as safetensors, with the byte-level BPE tokenizer of the shared tiny-qwen2
checkpoint beside it (1024 tokens, no BOS added, like BLOOM's). Six heads, not a
power of two, so the ALiBi slopes take HF's extra-slopes branch.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BloomConfig, BloomForCausalLM

import xtl
from xtl import datasets
from xtl.errors import XtlError
from xtl.model import bloom_gelu, encode, hf_alibi_bias
from xtl.testing.gguf import add_tokenizer, write_file

from conftest import DATA_DIR, MODELS_DIR

N_LAYERS = 4
SITES = ("ffn", "attn", "attn-paper")
EOS_SCALE = 3.5


def build_tiny_bloom(directory, *, seed: int = 0, hf_key_prefix: bool = True):
    """A random 4-layer BLOOM checkpoint in `directory`; with `hf_key_prefix=False`
    the weights are saved without the "transformer." prefix, as the original
    BLOOM checkpoints (saved from BloomModel) have them."""
    torch.manual_seed(seed)
    config = BloomConfig(
        vocab_size=1024, hidden_size=48, n_layer=N_LAYERS, n_head=6, bos_token_id=0, eos_token_id=1, pad_token_id=2
    )
    model = BloomForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layernorm" in name or "ln_f" in name:
                parameter.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(parameter))
            else:  # large weights: peaky next-token distributions, so greedy outputs are stable
                parameter.normal_(0.0, 0.35)
        model.transformer.word_embeddings.weight[1] *= EOS_SCALE  # tied: EOS is the argmax now and then
    model.save_pretrained(directory, safe_serialization=True)
    if not hf_key_prefix:
        from safetensors.torch import load_file, save_file

        weights = load_file(str(directory / "model.safetensors"))
        save_file({k.removeprefix("transformer."): v for k, v in weights.items()}, str(directory / "model.safetensors"),
                  metadata={"format": "pt"})
    tokenizer_dir = MODELS_DIR / "tiny-qwen2"
    for name in ("tokenizer.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir / name, directory / name)
    tokenizer_config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    tokenizer_config["tokenizer_class"] = "BloomTokenizerFast"  # what BLOOM checkpoints declare
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_bloom(tmp_path_factory.mktemp("bloom") / "tiny-bloom")


@pytest.fixture(scope="module")
def instances():
    return datasets.load("xnli", "sw", data_dir=DATA_DIR)[:1] + datasets.load("xcopa", "sw", data_dir=DATA_DIR)[:1]


# --- hook points in HF's BLOOM ---------------------------------------------------
# HF's BloomAttention and BloomMLP add the residual inside their forward
# (`dropout_add(output, residual)`), so the modules' own outputs are not the
# attention / MLP outputs. The values TransformerLens calls
#   hook_attn_out  = the output of `self_attention.dense` (bias included), before the residual add;
#   hook_mlp_out   = the output of `mlp.dense_4h_to_h` (bias included), before the residual add;
#   hook_resid_mid = BloomAttention's own output: residual + attention output.
# Overwriting `dense` / `dense_4h_to_h` outputs lets HF add the residual after the write.


def _hf_read_module(block, site: str):
    return {"ffn": block.mlp.dense_4h_to_h, "attn": block.self_attention.dense, "attn-paper": block.self_attention}[site]


def _hf_write_module(block, site: str):
    return block.mlp.dense_4h_to_h if site == "ffn" else block.self_attention.dense


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def hf_transplant(hf, tokenizer, source, target, *, site=None, source_layer=None, target_layer=None, eos=(1,)):
    """The transplant with plain HF forward hooks and HF `generate` (greedy, 20
    new tokens): read the source's value at the last position, overwrite the
    target's at the last position in the prompt pass only. `site=None`: vanilla."""
    blocks = hf.transformer.h
    handles = []
    if site is not None:
        read = {}
        handle = _hf_read_module(blocks[source_layer], site).register_forward_hook(
            lambda module, args, output: read.__setitem__("vector", _first(output)[0, -1].clone())
        )
        hf(torch.tensor([tokenizer(source).input_ids]))
        handle.remove()
        prompt_pass = [True]

        def write(module, args, output):
            if prompt_pass[0]:  # the first forward call of generate is the prompt pass
                prompt_pass[0] = False
                output = output.clone()
                output[:, -1] = read["vector"]
                return output

        handles.append(_hf_write_module(blocks[target_layer], site).register_forward_hook(write))
    ids = tokenizer(target).input_ids
    out = hf.generate(
        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False, num_beams=1,
        max_new_tokens=20, eos_token_id=list(eos), pad_token_id=2,
    )
    for handle in handles:
        handle.remove()
    return out[0, len(ids):].tolist()


# --- loading ---------------------------------------------------------------------


def _hf_hook_values(hf, tokens):
    captured = {}
    handles = []
    for layer, block in enumerate(hf.transformer.h):
        for hook, module in (("hook_attn_out", block.self_attention.dense), ("hook_mlp_out", block.mlp.dense_4h_to_h),
                             ("hook_resid_mid", block.self_attention)):
            handles.append(module.register_forward_hook(
                lambda m, args, output, name=f"blocks.{layer}.{hook}": captured.__setitem__(name, _first(output))))
    with torch.no_grad():
        logits = hf(tokens).logits
    for handle in handles:
        handle.remove()
    return logits, captured


def _relative_error(ours, theirs):
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@pytest.mark.parametrize("dtype, tolerance", [("float32", 2e-5), ("float64", 4e-6)])
def test_logits_and_hook_values_equal_the_hf_model(checkpoint, instances, dtype, tolerance):
    model = xtl.load_model(checkpoint, dtype=dtype)
    assert model.cfg.original_architecture == "BloomForCausalLM" and model.cfg.n_layers == N_LAYERS
    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).eval()
    tokens = torch.tensor([encode(model, instances[0].target)])
    assert tokens.shape[1] > 100  # long enough for ALiBi to matter
    hf_logits, hf_values = _hf_hook_values(hf, tokens)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    # Measured: 2.5e-6 (float32) and 5e-7 (float64) relative to each tensor's scale.
    # HF's BLOOM computes the attention softmax in float32 even in a float64
    # model; see the next test for the rest of the model at float64 precision.
    assert _relative_error(logits, hf_logits) < tolerance
    assert torch.equal(logits.argmax(-1), hf_logits.argmax(-1))
    assert len(hf_values) == 3 * N_LAYERS
    for name, value in hf_values.items():
        assert _relative_error(cache[name], value) < tolerance, name


def test_float64_equals_hf_to_the_last_bits_once_softmax_is_float32_like_hf(checkpoint, instances):
    # With the pattern computed as HF computes it (softmax in float32), every other
    # part -- weights, LayerNorms, ALiBi slopes, GELU constants -- agrees at float64
    # precision. TransformerLens' own GELU (gelu_fast, 2.5e-10 off) or its own
    # ALiBi slopes (wrong for 6 heads; float32-rounded for 16 or 32) fail here.
    model = xtl.load_model(checkpoint, dtype="float64")
    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float64).eval()
    tokens = torch.tensor([encode(model, instances[0].target)])
    hf_logits, hf_values = _hf_hook_values(hf, tokens)

    def float32_softmax(pattern, *, hook):
        return torch.softmax(scores[hook.layer()], dim=-1, dtype=torch.float32).to(pattern.dtype)

    scores = {}
    hooks = []
    for layer in range(N_LAYERS):
        hooks.append((f"blocks.{layer}.attn.hook_attn_scores", lambda s, *, hook: scores.__setitem__(hook.layer(), s)))
        hooks.append((f"blocks.{layer}.attn.hook_pattern", float32_softmax))
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits, cache = model.run_with_cache(tokens)
    assert _relative_error(logits, hf_logits) < 1e-13
    for name, value in hf_values.items():
        assert _relative_error(cache[name], value) < 1e-13, name


def test_alibi_and_gelu_are_hfs(checkpoint):
    from transformers.models.bloom.modeling_bloom import BloomGelu

    x = torch.linspace(-8, 8, 10001, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        assert torch.equal(bloom_gelu(x.to(dtype)), BloomGelu()(x.to(dtype)))
    model = xtl.load_model(checkpoint, dtype="float64", n_ctx=64)
    # HF: slope * key position (one row for every query), slopes in float32, for any head count.
    hf_row = torch.arange(64, dtype=torch.float32) * torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3])[:, None]
    for block in model.blocks:
        assert torch.equal(block.attn.alibi, hf_row[:, None, :].double())
        assert block.mlp.act_fn is bloom_gelu
    assert torch.equal(hf_alibi_bias(6, 64, torch.float64), hf_row[:, None, :].double())


def test_checkpoint_keys_without_transformer_prefix_and_from_the_hf_cache(tmp_path, checkpoint):
    # The original BLOOM safetensors (saved from BloomModel) have keys like "h.0.input_layernorm.weight"
    # and no lm_head (tied embeddings); the HF cache layout is that of an official name.
    snapshot = tmp_path / "hub" / "models--bigscience--bloomz-7b1" / "snapshots" / ("0" * 40)
    build_tiny_bloom(snapshot, hf_key_prefix=False)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    from safetensors.torch import load_file

    keys = set(load_file(str(snapshot / "model.safetensors")))
    assert "word_embeddings.weight" in keys and not any(k.startswith(("transformer.", "lm_head")) for k in keys)
    model = xtl.load_model("bigscience/bloomz-7b1", cache_dir=tmp_path / "hub")
    reference = xtl.load_model(checkpoint)
    assert model.xtl.name == "bigscience/bloomz-7b1" and model.xtl.eos_token_ids == (1,)
    assert model.xtl.fingerprint == reference.xtl.fingerprint
    assert torch.equal(model.W_U, model.W_E.T)  # tied
    tokens = torch.tensor([encode(model, "Habari ya asubuhi")])
    assert tokens[0, 0] != 0  # BLOOM's tokenizer adds no BOS
    assert torch.equal(model(tokens), reference(tokens))


def test_residual_post_layernorm_variant_is_refused(tmp_path, checkpoint):
    path = tmp_path / "variant"
    shutil.copytree(checkpoint, path)
    config = json.loads((path / "config.json").read_text())
    config["apply_residual_connection_post_layernorm"] = True
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(XtlError, match="apply_residual_connection_post_layernorm"):
        xtl.load_model(path)


# --- transplant and generate -----------------------------------------------------


@pytest.fixture(scope="module")
def float64_pair(checkpoint):
    model = xtl.load_model(checkpoint, dtype="float64")
    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float64).eval()
    return model, hf, AutoTokenizer.from_pretrained(checkpoint)


def test_generate_equals_hf_generate(float64_pair, instances):
    model, hf, tokenizer = float64_pair
    for item in instances:
        ours = xtl.generate(model, item.target)
        theirs = hf_transplant(hf, tokenizer, item.source, item.target)
        assert list(ours.token_ids) == theirs
        assert ours.text == tokenizer.decode(theirs, skip_special_tokens=True, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("site", SITES)
def test_transplant_equals_plain_hf_hooks(float64_pair, instances, site):
    model, hf, tokenizer = float64_pair
    changed = early_stops = 0
    for item in instances:
        vanilla = xtl.generate(model, item.target).token_ids
        for source_layer in range(N_LAYERS):
            for target_layer in range(N_LAYERS):
                ours = xtl.transplant(model, item.source, item.target, site=site, source_layer=source_layer,
                                      target_layer=target_layer)
                theirs = hf_transplant(hf, tokenizer, item.source, item.target, site=site,
                                       source_layer=source_layer, target_layer=target_layer)
                assert list(ours.token_ids) == theirs, (item.id, site, source_layer, target_layer)
                changed += ours.token_ids != vanilla
                early_stops += len(theirs) < 20
    assert changed >= 8  # the writes change answers, so a write that did nothing would fail
    assert early_stops > 0  # and some answers stop at EOS


# --- the sweep -------------------------------------------------------------------


def test_sweep_matches_transplant_on_bloom(float64_pair, instances):
    """ALiBi, LayerNorms with biases, the post-embedding LayerNorm and the plain GELU MLP
    in the batched engine: every row equals xtl.transplant / xtl.generate."""
    model = float64_pair[0]
    frame = xtl.sweep(model, instances, sites=list(SITES), progress=False, max_batch_rows=13)
    rows = {(r.instance_id, r.site, r.source_layer, r.target_layer): list(r.token_ids)
            for r in frame.astype(object).where(frame.notna(), None).itertuples()}
    assert len(rows) == len(instances) * (1 + len(SITES) * N_LAYERS ** 2)
    for item in instances:
        assert rows[(item.id, None, None, None)] == list(xtl.generate(model, item.target).token_ids)
        for site in SITES:
            for i in range(N_LAYERS):
                for j in range(N_LAYERS):
                    expected = xtl.transplant(model, item.source, item.target, site=site, source_layer=i, target_layer=j)
                    assert rows[(item.id, site, i, j)] == list(expected.token_ids), (item.id, site, i, j)


# --- GGUF -------------------------------------------------------------------------------


def write_bloom_gguf(checkpoint, path, *, output_scale: float = 1.0):
    """The checkpoint as llama.cpp's convert_hf_to_gguf.py writes a BLOOM GGUF:
    float32 tensors, each head's fused q/k/v rows regrouped as all q, all k, all
    v, and output.weight a copy of the token embedding (times `output_scale`,
    to make a file whose unembedding is not its embedding)."""
    import re

    import gguf
    from safetensors.torch import load_file

    config = json.loads((checkpoint / "config.json").read_text())
    weights = load_file(str(checkpoint / "model.safetensors"))
    heads, d = config["n_head"], config["hidden_size"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BLOOM, config["n_layer"])
    writer = gguf.GGUFWriter(str(path), "bloom")
    writer.add_context_length(config.get("seq_length", d))
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(4 * d)
    writer.add_block_count(config["n_layer"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_eps(config["layer_norm_epsilon"])
    add_tokenizer(writer, checkpoint, eos_id=1)
    tensors = {}
    for name, tensor in weights.items():
        name = name.removeprefix("transformer.")
        if re.fullmatch(r"h\.\d+\.self_attention\.query_key_value\.(weight|bias)", name):
            per_head = tensor.reshape(heads, 3, d // heads, *tensor.shape[1:])
            tensor = torch.cat([per_head[:, i].reshape(-1, *tensor.shape[1:]) for i in range(3)])
        tensors[names.get_name(name, try_suffixes=(".weight", ".bias"))] = tensor
        if name == "word_embeddings.weight":
            tensors["output.weight"] = tensor * output_scale
    write_file(writer, tensors)
    return path


def test_a_bloom_gguf_loads_the_model_its_safetensors_hold(checkpoint, instances, tmp_path):
    model = xtl.load_model(write_bloom_gguf(checkpoint, tmp_path / "bloom.gguf"), dtype="float64")
    assert model.cfg.original_architecture == "BloomForCausalLM" and model.xtl.gguf_file is not None
    reference = xtl.load_model(checkpoint, dtype="float64")
    for name, tensor in reference.state_dict().items():  # the same weights, bit for bit
        assert torch.equal(model.state_dict()[name], tensor), name
    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float64).eval()
    tokens = torch.tensor([encode(model, instances[0].target)])
    hf_logits, hf_values = _hf_hook_values(hf, tokens)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    assert _relative_error(logits, hf_logits) < 4e-6  # as from the safetensors (the file's eps is float32)
    assert len(hf_values) == 3 * N_LAYERS
    for name, value in hf_values.items():
        assert _relative_error(cache[name], value) < 4e-6, name
    for item in instances[:2]:
        ours = xtl.generate(model, item.target).token_ids
        assert list(ours) == hf_transplant(hf, model.tokenizer, item.source, item.target)


def test_a_bloom_gguf_whose_unembedding_is_not_its_embedding_is_refused(checkpoint, tmp_path):
    path = write_bloom_gguf(checkpoint, tmp_path / "bloom.gguf", output_scale=2.0)
    with pytest.raises(XtlError, match="holds an output.weight other than its token embedding, which transformers'"):
        xtl.load_model(path)
