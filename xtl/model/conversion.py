"""A checkpoint's config and weights as a HookedTransformer: config translation,
weight names for TransformerLens' converters, and the numerics that make every
hook value the Hugging Face model's (BLOOM's ALiBi and GELU, rotary tables, HF
weight layouts)."""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer, HookedTransformerConfig

from xtl.errors import XtlError

DEFAULT_N_CTX = 4096


def converters() -> dict[str, Callable]:
    from transformer_lens.pretrained.weight_conversions import (
        convert_llama_weights,
        convert_mistral_weights,
        convert_qwen2_weights,
    )

    return {
        "LlamaForCausalLM": convert_llama_weights,
        "MistralForCausalLM": convert_mistral_weights,
        "Qwen2ForCausalLM": convert_qwen2_weights,
        "BloomForCausalLM": _convert_bloom_weights,
    }


SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "BloomForCausalLM")


def hooked_config(
    hf_config: dict, *, dtype: torch.dtype, device: str, n_ctx: int | None = None
) -> HookedTransformerConfig:
    """A HookedTransformerConfig for a Llama / Mistral / Qwen2 / BLOOM `config.json`."""
    architecture = (hf_config.get("architectures") or ["?"])[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise XtlError(
            f"architecture {architecture!r} is not supported: xtl loads {', '.join(SUPPORTED_ARCHITECTURES)}."
        )
    if architecture == "BloomForCausalLM":
        return _bloom_config(hf_config, dtype=dtype, device=device, n_ctx=n_ctx)
    rope_scaling = hf_config.get("rope_scaling") or (hf_config.get("rope_parameters") or {})
    rope_type = (rope_scaling.get("rope_type") or rope_scaling.get("type") or "default").lower()
    if rope_type not in ("default", "llama3"):
        raise XtlError(f"rope scaling {rope_type!r} is not supported: xtl supports none or 'llama3'.")
    n_heads = hf_config["num_attention_heads"]
    d_model = hf_config["hidden_size"]
    d_head = hf_config.get("head_dim") or d_model // n_heads
    n_kv = hf_config.get("num_key_value_heads") or n_heads
    rope_theta = hf_config.get("rope_theta") or (hf_config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    max_positions = hf_config.get("max_position_embeddings", DEFAULT_N_CTX)
    cfg = dict(
        d_model=d_model,
        d_head=d_head,
        n_heads=n_heads,
        n_key_value_heads=n_kv if (n_kv != n_heads or architecture != "LlamaForCausalLM") else None,
        d_mlp=hf_config["intermediate_size"],
        n_layers=hf_config["num_hidden_layers"],
        n_ctx=n_ctx or min(max_positions, DEFAULT_N_CTX),
        d_vocab=hf_config["vocab_size"],
        act_fn=hf_config.get("hidden_act", "silu"),
        eps=hf_config.get("rms_norm_eps", 1e-6),
        normalization_type="RMS",
        final_rms=True,
        gated_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_adjacent_pairs=False,
        rotary_base=rope_theta,
        original_architecture=architecture,
        default_prepend_bos=False,
        init_weights=False,
        dtype=dtype,
        device=device,
    )
    window = hf_config.get("sliding_window") if hf_config.get("use_sliding_window", True) else None
    if window and window < cfg["n_ctx"]:
        cfg.update(use_local_attn=True, window_size=window, attn_types=["local"] * cfg["n_layers"])
    if rope_type == "llama3":
        cfg.update(
            use_NTK_by_parts_rope=True,
            NTK_original_ctx_len=rope_scaling.get("original_max_position_embeddings", max_positions),
            NTK_by_parts_low_freq_factor=rope_scaling.get("low_freq_factor", 1.0),
            NTK_by_parts_high_freq_factor=rope_scaling.get("high_freq_factor", 4.0),
            NTK_by_parts_factor=rope_scaling.get("factor", 1.0),
        )
    return HookedTransformerConfig(**cfg)


# --- BLOOM ---------------------------------------------------------------------
# BLOOM (bloomz-7b1, the paper's fifth model) differs from the rotary models:
# ALiBi position biases, LayerNorm with biases (one also right after the
# embedding), a GELU MLP without a gate (d_mlp = 4 d_model), biases on every
# projection, tied embeddings. TransformerLens' converter reads the weights; the
# ALiBi bias and the GELU are then replaced by Hugging Face's own formulas
# (`use_hf_bloom_numerics`), so every hook value is the HF model's.


def _bloom_config(
    hf_config: dict, *, dtype: torch.dtype, device: str, n_ctx: int | None
) -> HookedTransformerConfig:
    from transformers import BloomConfig

    config = BloomConfig.from_dict(hf_config)  # reads the aliases (n_embed, num_attention_heads, ...)
    if config.apply_residual_connection_post_layernorm:
        raise XtlError(
            "this BLOOM checkpoint sets apply_residual_connection_post_layernorm, which xtl does not support: "
            "its residual stream is not TransformerLens' (BLOOM and bloomz checkpoints leave it off)."
        )
    # ALiBi has no position limit; the context only sizes the masks (TransformerLens caps BLOOM at 2048).
    max_positions = hf_config.get("seq_length") or 2048
    return HookedTransformerConfig(
        d_model=config.hidden_size,
        d_head=config.hidden_size // config.n_head,
        n_heads=config.n_head,
        d_mlp=4 * config.hidden_size,
        n_layers=config.n_layer,
        n_ctx=n_ctx or min(max_positions, DEFAULT_N_CTX),
        d_vocab=config.vocab_size,
        act_fn="gelu_fast",  # replaced by HF's BloomGelu formula in use_hf_bloom_numerics
        eps=config.layer_norm_epsilon,
        normalization_type="LN",
        post_embedding_ln=True,
        positional_embedding_type="alibi",
        original_architecture="BloomForCausalLM",
        default_prepend_bos=False,
        init_weights=False,
        dtype=dtype,
        device=device,
    )


def _convert_bloom_weights(bloom, cfg: HookedTransformerConfig) -> dict[str, torch.Tensor]:
    from transformer_lens.pretrained.weight_conversions import convert_bloom_weights

    state_dict = convert_bloom_weights(bloom, cfg)
    # TransformerLens gives every non-rotary model a learned position table; ALiBi never reads it.
    state_dict["pos_embed.W_pos"] = torch.zeros(cfg.n_ctx, cfg.d_model, dtype=cfg.dtype)
    return state_dict


def bloom_gelu(x: Float[torch.Tensor, "... d_mlp"]) -> Float[torch.Tensor, "... d_mlp"]:
    """Hugging Face's BloomGelu (tanh approximation), same constants and order of
    operations. TransformerLens' `gelu_fast` uses 0.7978845608 for 0.79788456 and
    `gelu_new` sqrt(2/pi): both differ from BLOOM's in float64."""
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def hf_alibi_bias(n_heads: int, n_ctx: int, dtype: torch.dtype) -> Float[torch.Tensor, "head 1 key"]:
    """BLOOM's ALiBi bias exactly as Hugging Face builds it: slopes (for any head
    count) and `slope * key_position` in float32, then cast to `dtype`. It does
    not depend on the query position: softmax is shift-invariant, so it equals
    the textbook `slope * (key - query)` up to rounding, and one row broadcasts
    over every query."""
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    return build_alibi_tensor(torch.ones(1, n_ctx, dtype=torch.long), n_heads, dtype)  # (n_heads, 1, n_ctx)


def use_hf_bloom_numerics(model: HookedTransformer) -> None:
    """HF's ALiBi bias and HF's GELU in every block.

    TransformerLens builds its own bias on the first forward pass, with slopes
    that are right for a power-of-two head count only, in float32; here each
    attention gets HF's bias for the whole context as a buffer (so it follows
    `model.to`), which TransformerLens slices as `alibi[:, -query:, :key]`.
    TransformerLens' GELU constants differ from BLOOM's in the ninth digit."""
    bias = hf_alibi_bias(model.cfg.n_heads, model.cfg.n_ctx, model.cfg.dtype)
    for block in model.blocks:
        del block.attn.alibi  # a plain attribute (None) until now
        block.attn.register_buffer("alibi", bias.to(block.attn.W_Q.device), persistent=False)
        block.mlp.act_fn = bloom_gelu


def hf_weight_names(architecture: str, weights: dict[str, torch.Tensor], hf_config: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under the names TransformerLens' converter reads
    (those of the `...ForCausalLM` module), with the tied unembedding filled in."""
    if architecture == "BloomForCausalLM":
        # BLOOM checkpoints were saved from BloomModel: their keys have no "transformer." prefix.
        if not any(name.startswith("transformer.") for name in weights):
            weights = {name if name.startswith("lm_head.") else "transformer." + name: w for name, w in weights.items()}
        embedding, tied_by_default = "transformer.word_embeddings.weight", True
    else:
        embedding, tied_by_default = "model.embed_tokens.weight", False
    if "lm_head.weight" not in weights and hf_config.get("tie_word_embeddings", tied_by_default) and embedding in weights:
        weights["lm_head.weight"] = weights[embedding]
    return weights


class WeightTree:
    """Attribute access over a flat HF state dict (`model.layers[3].mlp.up_proj.weight`),
    so TransformerLens' converters run without building the HF model."""

    def __init__(self, weights: dict[str, torch.Tensor], prefix: str = ""):
        self._weights, self._prefix = weights, prefix

    def __getattr__(self, name: str):
        key = self._prefix + name
        if key in self._weights:
            return self._weights[key]
        if not any(k.startswith(key + ".") for k in self._weights):
            raise XtlError(f"the checkpoint has no weight {key!r}: it does not match its declared architecture.")
        return WeightTree(self._weights, key + ".")

    def __getitem__(self, index: int):
        return self.__getattr__(str(index))


def new_hooked_transformer(cfg: HookedTransformerConfig) -> HookedTransformer:
    """An empty HookedTransformer for `cfg`, on the CPU, with no tokenizer."""
    with warnings.catch_warnings():
        # TransformerLens 3.x marks HookedTransformer deprecated in favour of 4.0's
        # TransformerBridge; xtl pins <4 and HookedTransformer is its model class.
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    use_hf_layouts(model)
    return model


def use_hf_layouts(model: HookedTransformer) -> None:
    """Store the projection weights in the memory layout of Hugging Face's
    `nn.Linear` (out_features, in_features), seen through TransformerLens'
    shapes. TransformerLens' forward pass turns each weight into that layout
    with `.contiguous()` on every call (the MLP, W_O, the unembedding) or a
    rearrange (W_Q/W_K/W_V): a copy of every weight per forward pass. In this
    layout those are views, so nothing is copied and the products receive the
    very same tensors (same values, same layout), hence the same results.
    Loading weights later (`load_state_dict`) copies into these tensors and
    keeps their layout."""
    with torch.no_grad():
        def store(parameter: torch.nn.Parameter, contiguous_as, view_back) -> None:
            parameter.data = view_back(contiguous_as(parameter.data).contiguous())

        for block in model.blocks:
            attn, mlp = block.attn, block.mlp
            for name in ("W_Q", "W_K", "W_V", "_W_K", "_W_V"):
                weight = attn._parameters.get(name)
                if isinstance(weight, torch.nn.Parameter) and weight.dim() == 3:
                    store(weight, lambda w: w.permute(0, 2, 1), lambda w: w.permute(0, 2, 1))
            w_o = attn._parameters.get("W_O")
            if isinstance(w_o, torch.nn.Parameter) and w_o.dim() == 3:
                store(w_o, lambda w: w.permute(2, 0, 1), lambda w: w.permute(1, 2, 0))
            for name in ("W_in", "W_gate", "W_out"):
                weight = mlp._parameters.get(name) if isinstance(mlp, torch.nn.Module) else None
                if isinstance(weight, torch.nn.Parameter) and weight.dim() == 2:
                    store(weight, lambda w: w.T, lambda w: w.T)
        w_u = model.unembed._parameters.get("W_U")
        if isinstance(w_u, torch.nn.Parameter):
            store(w_u, lambda w: w.T, lambda w: w.T)


def use_hf_rotary_tables(model: HookedTransformer) -> None:
    """Rotary tables computed exactly as Hugging Face computes them (inverse
    frequencies and angles in float32, then cast to the model's dtype), for the
    whole context. TransformerLens computes them in the model's dtype with
    another formula: in float64 that differs from the HF model in the last bits,
    enough to flip a near-tie between two tokens."""
    cfg = model.cfg
    dim = cfg.rotary_dim
    inv_freq = 1.0 / (cfg.rotary_base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    angles = torch.outer(torch.arange(cfg.n_ctx, dtype=torch.int64).float(), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # non-adjacent pairs: [f0..f(d/2-1), f0..f(d/2-1)]
    cos, sin = angles.cos().to(cfg.dtype), angles.sin().to(cfg.dtype)
    for block in model.blocks:
        block.attn.rotary_cos = cos.to(block.attn.rotary_cos.device)
        block.attn.rotary_sin = sin.to(block.attn.rotary_sin.device)
