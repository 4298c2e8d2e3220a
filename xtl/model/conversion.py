"""Pieces of the conversion that are not one family's row (`xtl.model.families`):
an empty HookedTransformer in HF weight layouts, weight names, and BLOOM's
config, weights and numerics (ALiBi and GELU as HF computes them)."""

from __future__ import annotations

import warnings

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers.models.bloom.modeling_bloom import bloom_gelu_forward

from xtl.errors import XtlError

DEFAULT_N_CTX = 4096


# --- BLOOM ---------------------------------------------------------------------
# BLOOM (bloomz-7b1, the paper's fifth model) differs from the rotary models:
# ALiBi position biases, LayerNorm with biases (one also right after the
# embedding), a GELU MLP without a gate (d_mlp = 4 d_model), biases on every
# projection, tied embeddings. TransformerLens' converter reads the weights; the
# ALiBi bias and the GELU are then replaced by Hugging Face's own formulas
# (`use_hf_bloom_numerics`), so every hook value is the HF model's.


def bloom_config(config, n_ctx: int | None) -> dict:
    """The TransformerLens config fields of a BLOOM checkpoint (`config`: its BloomConfig)."""
    if config.apply_residual_connection_post_layernorm:
        raise XtlError(
            "this BLOOM checkpoint sets apply_residual_connection_post_layernorm, which xtl does not support: "
            "its residual stream is not TransformerLens' (BLOOM and bloomz checkpoints leave it off)."
        )
    # ALiBi has no position limit; the context only sizes the masks (TransformerLens caps BLOOM at 2048).
    max_positions = getattr(config, "seq_length", None) or 2048
    return dict(
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
    )


def convert_bloom_weights(bloom, cfg: HookedTransformerConfig, config=None) -> dict[str, torch.Tensor]:
    from transformer_lens.pretrained import weight_conversions

    state_dict = weight_conversions.convert_bloom_weights(bloom, cfg)
    # TransformerLens gives every non-rotary model a learned position table; ALiBi never reads it.
    state_dict["pos_embed.W_pos"] = torch.zeros(cfg.n_ctx, cfg.d_model, dtype=cfg.dtype)
    state_dict.setdefault("unembed.b_U", torch.zeros(cfg.d_vocab_out, dtype=cfg.dtype))  # BLOOM's lm_head has no bias
    return state_dict


def bloom_gelu(x: Float[torch.Tensor, "... d_mlp"]) -> Float[torch.Tensor, "... d_mlp"]:
    """Hugging Face's BloomGelu in inference (`bloom_gelu_forward`, the tanh
    approximation with BLOOM's constants). TransformerLens' `gelu_fast` uses
    0.7978845608 for 0.79788456 and `gelu_new` sqrt(2/pi): both differ from
    BLOOM's in float64."""
    return bloom_gelu_forward(x)


def hf_alibi_bias(n_heads: int, n_ctx: int, dtype: torch.dtype) -> Float[torch.Tensor, "head 1 key"]:
    """BLOOM's ALiBi bias exactly as Hugging Face builds it: slopes (for any head
    count) and `slope * key_position` in float32, then cast to `dtype`. It does
    not depend on the query position: softmax is shift-invariant, so it equals
    the textbook `slope * (key - query)` up to rounding, and one row broadcasts
    over every query."""
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    return build_alibi_tensor(torch.ones(1, n_ctx, dtype=torch.long), n_heads, dtype)  # (n_heads, 1, n_ctx)


def use_hf_bloom_numerics(model: HookedTransformer, config=None) -> None:
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


def hf_weight_names(architecture: str, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under the names of the `...ForCausalLM` module
    (those TransformerLens' converters read)."""
    if architecture == "BloomForCausalLM" and not any(name.startswith("transformer.") for name in weights):
        # BLOOM checkpoints were saved from BloomModel: their keys have no "transformer." prefix.
        weights = {name if name.startswith("lm_head.") else "transformer." + name: w for name, w in weights.items()}
    return weights


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
            data = contiguous_as(parameter.data)
            # without init_weights the values are not weights yet (loading overwrites them): no copy
            fresh = data.contiguous() if model.cfg.init_weights else torch.empty(data.shape, dtype=data.dtype, device=data.device)
            parameter.data = view_back(fresh)

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
