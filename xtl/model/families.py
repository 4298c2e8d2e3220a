"""Model families: how each checkpoint architecture becomes a HookedTransformer.

One row of `FAMILIES` per architecture says which `config.json` keys its
translation reads, how the weights are converted (TransformerLens' own
converter where one exists, with xtl's additions where it leaves something
out), which tensors carry nothing (rotary `inv_freq` tables and the like) and
what is replaced afterwards by Hugging Face's own formulas.

A checkpoint loads only if nothing in it is left unread. `read_config` is the
one entry point of the config checks, in this order:

- `xtl.model.checkpoint_checks.check_config_values`: sizes and numbers of the
  right type and range (torch-free: `xtl.checkpoints.read_shape` calls it too);
  then `n_ctx` within the checkpoint's positions;
- `check_quantization` refuses pre-quantized checkpoints, naming the method, and
  `check_remote_model` a model defined by code shipped with the checkpoint;
- `check_config_keys` refuses, in one sentence naming the key, any config key that
  the checkpoint's Hugging Face model reads (found in its modeling source, so a
  key added by a newer transformers is caught too) when the family's
  translation does not read it and its value is not the class default;
- `WeightTree` records every tensor the conversion reads, and `check_all_read`
  refuses a checkpoint with a tensor nobody read (a dropped bias, a quantization
  scale, an expert the converter does not know).
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import einops
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from xtl.errors import XtlError
from xtl.model.checkpoint_checks import check_config_values
from xtl.model.conversion import (
    DEFAULT_N_CTX, bloom_config, convert_bloom_weights, hf_weight_names, new_hooked_transformer, use_hf_bloom_numerics,
)  # fmt: skip

# Config keys no forward pass in eval mode reads: token ids, dropout, training
# and output switches, multimodal parts a text model never builds.
INERT_KEYS = frozenset({
    "_attn_implementation", "_name_or_path", "architectures", "attention_dropout", "bos_token_id",
    "chunk_size_feed_forward", "classifier_dropout", "dtype", "embd_pdrop", "eos_token_id", "hidden_dropout",
    "id2label", "initializer_range", "is_decoder", "is_encoder_decoder", "label2id", "model_type", "num_labels",
    "output_attentions", "output_hidden_states", "output_router_logits", "pad_token_id", "problem_type",
    "resid_pdrop", "return_dict", "router_aux_loss_coef", "router_jitter_noise", "torch_dtype",
    "transformers_version", "use_cache", "get_text_config", "image_token_id", "mm_tokens_per_image",
    "vision_config", "text_config", "max_position_embeddings", "initializer_factor", "attention_probs_dropout_prob",
    "hidden_dropout_prob",
})  # fmt: skip

# Rope types whose tables do not depend on the sequence length (HF's `dynamic_rope_update` leaves them alone).
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


# --- reading weights -------------------------------------------------------------


class MissingWeight(XtlError, AttributeError):
    """A weight the conversion asks for is not in the checkpoint (an AttributeError
    too, so converters' `hasattr` probes work)."""


class WeightTree:
    """Attribute access over a flat HF state dict (`model.layers[3].mlp.up_proj.weight`),
    so TransformerLens' converters run without building the HF model. Every
    tensor handed out is recorded in `read`."""

    def __init__(self, weights: dict[str, torch.Tensor], prefix: str = "", read: set[str] | None = None):
        self._weights, self._prefix = weights, prefix
        self._read: set[str] = set() if read is None else read

    @property
    def read(self) -> set[str]:
        return self._read

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        key = self._prefix + name
        if key in self._weights:
            self._read.add(key)
            return self._weights[key]
        if not any(k.startswith(key + ".") for k in self._weights):
            raise MissingWeight(f"the checkpoint has no weight {key!r}: it does not match its declared architecture.")
        return WeightTree(self._weights, key + ".", self._read)

    def __getitem__(self, index: int):
        return self.__getattr__(str(index))


def check_all_read(weights: dict[str, torch.Tensor], read: set[str], known_empty: tuple[str, ...], what: str) -> None:
    """Refuse a checkpoint holding tensors the conversion did not read (other
    than those known to carry nothing)."""
    unread = sorted(
        name for name in weights if name not in read and not any(re.search(p, name) for p in known_empty)
    )
    if unread:
        shown = ", ".join(unread[:3]) + (f" and {len(unread) - 3} more" if len(unread) > 3 else "")
        raise XtlError(
            f"{what} holds {len(unread)} tensor(s) that xtl's conversion does not read ({shown}), so it would not "
            "compute this checkpoint's model: this variant is not supported."
        )


# --- reading the config ----------------------------------------------------------


def check_quantization(hf_config: dict, what: str) -> None:
    """Refuse a pre-quantized checkpoint (its integers are not weights until the
    method's scales are applied), naming the method."""
    quantization = hf_config.get("quantization_config") or hf_config.get("compression_config")
    if quantization:
        method = quantization.get("quant_method") or quantization.get("format") or "an unnamed method"
        if quantization.get("load_in_8bit") or quantization.get("load_in_4bit"):
            method = f"{method} ({'8' if quantization.get('load_in_8bit') else '4'}-bit)"
        raise XtlError(
            f"{what} is pre-quantized with {method!r} (its config has a quantization_config), which xtl does not "
            "dequantize: load the unquantized checkpoint, or a GGUF file of it."
        )


def check_remote_model(hf_config: dict, what: str) -> None:
    auto_map = hf_config.get("auto_map") or {}
    entry = auto_map.get("AutoModelForCausalLM") if isinstance(auto_map, dict) else None
    if entry:
        raise XtlError(
            f"{what} defines its model in code shipped with the checkpoint ({entry}), which xtl neither runs nor "
            "converts: only transformers' own architectures load."
        )


def hf_config_object(hf_config: dict, family: "Family", what: str = "this checkpoint"):
    """The checkpoint's config read by transformers' own config class (which
    fills defaults, reads legacy aliases and derives `layer_types`)."""
    import logging

    from transformers import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[family.model_type]
    clean = {k: v for k, v in hf_config.items() if k not in ("transformers_version",)}
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return config_class.from_dict(clean)
    except Exception as error:  # transformers validates configs with several exception types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise XtlError(f"the config of {what} is not a valid {config_class.__name__} ({first}).") from None
    finally:
        logger.setLevel(level)


@functools.cache
def _keys_the_hf_model_reads(modeling: str) -> frozenset[str]:
    """Config attributes that transformers' modeling code `modeling` reads."""
    import importlib

    module = importlib.import_module(modeling)
    source = inspect.getsource(module)
    keys = set(re.findall(r"config\.([a-z_][a-z_0-9]*)", source))
    keys |= set(re.findall(r"getattr\((?:self\.)?config, [\"']([a-z_0-9]+)[\"']", source))
    keys |= {"tie_word_embeddings", "rope_parameters", "head_dim"}
    return frozenset(keys - INERT_KEYS)


def check_config_keys(config, family: "Family", what: str) -> None:
    """Refuse a config whose HF model reads a key the family's translation does
    not, unless it has the class's default value."""
    defaults = type(config)().to_dict()
    given = config.to_dict()
    for key in sorted(_keys_the_hf_model_reads(modeling_module(family))):
        if key in family.reads or key not in given:
            continue
        if given[key] != defaults.get(key):
            raise XtlError(
                f"{what} sets {key}={given[key]!r}, which xtl's {family.architecture} conversion does not implement "
                f"(it implements only the default, {defaults.get(key)!r}): this variant is not supported."
            )
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        raise XtlError(
            f"{what} uses rope scaling {rope_type!r}, which xtl does not implement: xtl implements "
            f"{', '.join(STATIC_ROPE_TYPES)}."
        )


# --- families ------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """How one architecture is translated, converted and finished."""

    architecture: str
    model_type: str
    reads: frozenset[str]  # config keys the translation implements
    hooked_config: Callable  # (config, n_ctx) -> dict of HookedTransformerConfig fields
    convert: Callable  # (WeightTree, cfg, config) -> TransformerLens state dict
    known_empty: tuple[str, ...] = ()  # regexes of tensors that carry nothing
    finish: Callable | None = None  # (model, config) -> None: HF formulas after loading
    conversion: str = "TransformerLens"  # whose converter reads the weights (the README's table says it)
    # Where the HF model holds each block's values (for `xtl check-model`): the decoder layers, and per
    # TransformerLens hook (module path under a layer, "output" or "input" of that module).
    hf_layers: str = "model.layers"
    hf_sites: tuple[tuple[str, str, str], ...] = (
        ("hook_attn_out", "self_attn.o_proj", "output"),
        ("hook_mlp_out", "mlp", "output"),
        ("hook_resid_mid", "post_attention_layernorm", "input"),
    )
    modeling: str = ""  # transformers' modeling module (default: models.<model_type>.modeling_<model_type>)


_LLAMA_READS = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "rms_norm_eps", "tie_word_embeddings", "rope_parameters", "head_dim",
    "attention_bias", "mlp_bias", "sliding_window", "layer_types",
})  # fmt: skip


def _n_ctx(config, n_ctx: int | None) -> int:
    return n_ctx or min(config.max_position_embeddings or DEFAULT_N_CTX, DEFAULT_N_CTX)


def _rotary_decoder_config(config, n_ctx: int | None, architecture: str, eps: float | None = None) -> dict:
    """The TransformerLens config of a pre-norm RMSNorm decoder with rotary
    positions and a gated MLP (Llama and its kin)."""
    n_heads = config.num_attention_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    cfg = dict(
        d_model=config.hidden_size,
        d_head=d_head,
        n_heads=n_heads,
        n_key_value_heads=n_kv if (n_kv != n_heads or architecture != "LlamaForCausalLM") else None,
        d_mlp=config.intermediate_size,
        n_layers=config.num_hidden_layers,
        n_ctx=_n_ctx(config, n_ctx),
        d_vocab=config.vocab_size,
        act_fn=getattr(config, "hidden_act", None) or "silu",
        eps=config.rms_norm_eps if eps is None else eps,
        normalization_type="RMS",
        final_rms=True,
        gated_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_adjacent_pairs=False,
        rotary_base=config.rope_parameters.get("rope_theta", 10000.0),
        original_architecture=architecture,
        default_prepend_bos=False,
    )
    cfg.update(_windows(config, cfg["n_ctx"]))
    return cfg


def _windows(config, n_ctx: int) -> dict:
    """Sliding-window layers exactly where HF's model has them: every layer
    (Mistral, Mixtral, Phi-3: a `sliding_window` without `layer_types`), or
    the layers `layer_types` marks (Qwen2 from `max_window_layers`, Gemma 2/3)."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return {}
    layer_types = getattr(config, "layer_types", None)
    if layer_types is None:
        local = [True] * config.num_hidden_layers
    else:
        local = [kind == "sliding_attention" for kind in layer_types]
    if not any(local) or window >= n_ctx:
        return {}
    return dict(use_local_attn=True, window_size=window, attn_types=["local" if x else "global" for x in local])


def _heads(bias: torch.Tensor, n: int) -> torch.Tensor:
    return einops.rearrange(bias, "(n h) -> n h", n=n)


def _convert_llama(tree: WeightTree, cfg: HookedTransformerConfig, config) -> dict[str, torch.Tensor]:
    """TransformerLens' Llama converter, plus the q/k/v/o biases
    (`attention_bias`, IBM Granite Code) it zero-fills, and the MLP biases
    (`mlp_bias`) kept in xtl's own `BiasedGatedMLP`."""
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    state_dict = convert_llama_weights(tree, cfg)
    state_dict.update(_attention_biases(tree, cfg, config))
    state_dict.update(_mlp_biases(tree, cfg, config))
    return state_dict


def _attention_biases(tree: WeightTree, cfg, config) -> dict[str, torch.Tensor]:
    if not getattr(config, "attention_bias", False):
        return {}
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    gqa = "_" if cfg.n_key_value_heads is not None else ""
    state_dict = {}
    for layer in range(cfg.n_layers):
        attention = tree.model.layers[layer].self_attn
        state_dict[f"blocks.{layer}.attn.b_Q"] = _heads(attention.q_proj.bias, cfg.n_heads)
        state_dict[f"blocks.{layer}.attn.{gqa}b_K"] = _heads(attention.k_proj.bias, n_kv)
        state_dict[f"blocks.{layer}.attn.{gqa}b_V"] = _heads(attention.v_proj.bias, n_kv)
        state_dict[f"blocks.{layer}.attn.b_O"] = attention.o_proj.bias
    return state_dict


def _mlp_biases(tree: WeightTree, cfg, config) -> dict[str, torch.Tensor]:
    if not getattr(config, "mlp_bias", False):
        return {}
    state_dict = {}
    for layer in range(cfg.n_layers):
        mlp = tree.model.layers[layer].mlp
        state_dict[f"blocks.{layer}.mlp.b_gate"] = mlp.gate_proj.bias
        state_dict[f"blocks.{layer}.mlp.b_in"] = mlp.up_proj.bias
        state_dict[f"blocks.{layer}.mlp.b_out"] = mlp.down_proj.bias
    return state_dict


class BiasedGatedMLP(torch.nn.Module):
    """Hugging Face's gated MLP with biases (`mlp_bias`):
    down(act(gate(x) + b_gate) * (up(x) + b_in)) + b_out. TransformerLens'
    GatedMLP has no gate bias and adds `b_in` after the product."""

    def __init__(self, mlp: torch.nn.Module):
        super().__init__()
        self.cfg, self.act_fn = mlp.cfg, mlp.act_fn
        self.W_in, self.W_gate, self.W_out, self.b_in, self.b_out = mlp.W_in, mlp.W_gate, mlp.W_out, mlp.b_in, mlp.b_out
        self.b_gate = torch.nn.Parameter(torch.zeros_like(mlp.b_in))
        self.hook_pre, self.hook_pre_linear, self.hook_post = mlp.hook_pre, mlp.hook_pre_linear, mlp.hook_post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre_act = self.hook_pre(torch.nn.functional.linear(x, self.W_gate.T) + self.b_gate)
        pre_linear = self.hook_pre_linear(torch.nn.functional.linear(x, self.W_in.T) + self.b_in)
        post_act = self.hook_post(self.act_fn(pre_act) * pre_linear)
        return torch.nn.functional.linear(post_act, self.W_out.T, self.b_out)


def prepare_model(model: HookedTransformer, hf_config) -> None:
    """Module changes that must exist before the state dict is loaded."""
    if model.cfg.num_experts:  # TransformerLens builds the experts' nn.Linear layers in float32
        for block in model.blocks:
            block.mlp.to(model.cfg.dtype)
    if getattr(hf_config, "mlp_bias", False):
        for block in model.blocks:
            block.mlp = BiasedGatedMLP(block.mlp)


def _convert_with(converter_name: str) -> Callable:
    def convert(tree: WeightTree, cfg, config) -> dict[str, torch.Tensor]:
        from transformer_lens.pretrained import weight_conversions

        return getattr(weight_conversions, converter_name)(tree, cfg)

    convert.__name__ = f"convert_{converter_name}"
    return convert


ROTARY_EMPTY = (r"\.rotary_emb\.inv_freq$",)

FAMILIES: dict[str, Family] = {}


def _register(family: Family) -> None:
    FAMILIES[family.architecture] = family


_register(Family(
    "LlamaForCausalLM", "llama", _LLAMA_READS,
    lambda config, n_ctx: _rotary_decoder_config(config, n_ctx, "LlamaForCausalLM"),
    _convert_llama, ROTARY_EMPTY,
    conversion="TransformerLens + xtl's attention and MLP biases",
))  # fmt: skip
_register(Family(
    "MistralForCausalLM", "mistral", _LLAMA_READS,
    lambda config, n_ctx: _rotary_decoder_config(config, n_ctx, "MistralForCausalLM"),
    _convert_with("convert_mistral_weights"), ROTARY_EMPTY,
))  # fmt: skip
_register(Family(
    "Qwen2ForCausalLM", "qwen2", _LLAMA_READS | {"use_sliding_window", "max_window_layers"},
    lambda config, n_ctx: _rotary_decoder_config(config, n_ctx, "Qwen2ForCausalLM"),
    _convert_with("convert_qwen2_weights"), ROTARY_EMPTY,
))  # fmt: skip


_register(Family(
    "BloomForCausalLM", "bloom",
    frozenset({"hidden_size", "n_head", "num_hidden_layers", "vocab_size", "layer_norm_epsilon",
               "apply_residual_connection_post_layernorm", "tie_word_embeddings", "pretraining_tp"}),
    bloom_config, convert_bloom_weights, finish=use_hf_bloom_numerics,
    conversion="TransformerLens; ALiBi and GELU replaced by HF's formulas",
    hf_layers="transformer.h",
    hf_sites=(("hook_attn_out", "self_attention.dense", "output"), ("hook_mlp_out", "mlp.dense_4h_to_h", "output"),
              ("hook_resid_mid", "self_attention", "output")),  # BLOOM's attention adds the residual itself
))  # fmt: skip


def family_of(architecture: str) -> Family:
    if architecture not in FAMILIES:
        raise XtlError(
            f"architecture {architecture!r} is not supported: xtl loads {', '.join(sorted(FAMILIES))}."
        )
    return FAMILIES[architecture]


# --- Hugging Face's own rotary tables -------------------------------------------------


def modeling_module(family: Family) -> str:
    return family.modeling or f"transformers.models.{family.model_type}.modeling_{family.model_type}"


def hf_rotary_embedding(config, family: Family, **kwargs) -> torch.nn.Module:
    import importlib

    module = importlib.import_module(modeling_module(family))
    (name,) = [n for n in dir(module) if n.endswith("RotaryEmbedding") and not n.startswith("_")][:1]
    return getattr(module, name)(config, **kwargs)


def hf_rotary_tables(
    config, family: Family, n_ctx: int, dtype: torch.dtype, freq_factors: torch.Tensor | None = None, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin `(n_ctx, rotary_dim)` exactly as the HF model computes them
    (its own rotary module: every rope type, attention scaling included;
    `kwargs` such as Gemma 3's `layer_type` go to its forward)."""
    rotary = hf_rotary_embedding(config, family)
    if freq_factors is not None:
        if freq_factors.shape != rotary.inv_freq.shape:
            raise XtlError(
                f"the GGUF's rope_freqs.weight has {freq_factors.numel()} factors for {rotary.inv_freq.numel()} "
                "rotary frequencies: the file is inconsistent."
            )
        rotary.inv_freq = rotary.inv_freq / freq_factors.to(torch.float32)
    with torch.no_grad():
        cos, sin = rotary(torch.empty(0, dtype=dtype), torch.arange(n_ctx)[None], **kwargs)
    return cos[0], sin[0]


ROPE_FREQS = "rope_freqs.weight"  # llama.cpp's GGUF: per-frequency divisors (Llama 3.x's rope scaling)


def use_hf_rotary_tables(model: HookedTransformer, config=None, family: Family | None = None, *, freq_factors=None) -> None:
    """Every layer's rotary tables exactly as the HF model computes them, for
    the whole context: TransformerLens computes them in the model's dtype
    with another formula (and llama3 scaling with a third), which differs from
    HF's in the last bits, enough to flip a near-tie between two tokens. Gemma 3
    has one table per layer type (local layers their own base). `config` is
    the checkpoint's config (object or config.json dict). `freq_factors`
    (llama.cpp's `rope_freqs`) divide the inverse frequencies, as llama.cpp does."""
    cfg = model.cfg
    if config is None:  # a model built in code: plain rotary, as its config says
        config = {"architectures": ["LlamaForCausalLM"], "hidden_size": cfg.d_model, "num_attention_heads": cfg.n_heads,
                  "head_dim": cfg.rotary_dim, "rope_theta": cfg.rotary_base, "max_position_embeddings": cfg.n_ctx}
    if isinstance(config, dict):
        family = family_of((config.get("architectures") or ["?"])[0])
        config = hf_config_object(config, family)
    tables = {}
    for index, block in enumerate(model.blocks):
        layer_type = (getattr(config, "layer_types", None) or [None] * cfg.n_layers)[index]
        per_type = family.model_type == "gemma3_text"
        key = layer_type if per_type else None
        if key not in tables:
            kwargs = {"layer_type": layer_type} if per_type else {}
            tables[key] = hf_rotary_tables(config, family, cfg.n_ctx, cfg.dtype, freq_factors=freq_factors, **kwargs)
        cos, sin = tables[key]
        block.attn.rotary_cos = cos.to(block.attn.rotary_cos.device)
        block.attn.rotary_sin = sin.to(block.attn.rotary_sin.device)


# --- the conversion, start to end ----------------------------------------------------


class Translation(NamedTuple):
    """A checkpoint's config, checked and translated: its family, transformers' config object, and the
    HookedTransformerConfig."""

    family: "Family"
    config: Any
    cfg: HookedTransformerConfig


def translate(
    hf_config: dict, *, dtype: torch.dtype, device: str, n_ctx: int | None = None, what: str = "this checkpoint",
    where: str | None = None,
) -> Translation:
    """A `config.json` (as a dict) checked (`read_config`) and translated, or one sentence naming what xtl
    does not implement."""
    family, config = read_config(hf_config, n_ctx=n_ctx, what=what, where=where)
    cfg = HookedTransformerConfig(**family.hooked_config(config, n_ctx), init_weights=False, dtype=dtype, device=device)
    return Translation(family, config, cfg)


def hooked_config(
    hf_config: dict, *, dtype: torch.dtype, device: str, n_ctx: int | None = None, what: str = "this checkpoint",
    where: str | None = None,
) -> HookedTransformerConfig:
    """The HookedTransformerConfig of a `config.json` (as a dict), or one
    sentence naming what xtl does not implement (`read_config`)."""
    return translate(hf_config, dtype=dtype, device=device, n_ctx=n_ctx, what=what, where=where).cfg


def read_config(hf_config: Any, *, n_ctx: int | None = None, what: str = "this checkpoint", where: str | None = None):
    """(family, transformers config object) of a config.json dict, after every
    check of it (module docstring), each failure one sentence. `what` names the
    checkpoint, `where` the file the values come from (default: `what`)."""
    hf_config = check_config_values(hf_config, where or what)
    max_positions = hf_config.get("max_position_embeddings")
    if n_ctx is not None and max_positions and n_ctx > max_positions:
        raise XtlError(f"n_ctx {n_ctx} is more than the {max_positions} positions {what} is made for: give at most {max_positions}.")
    check_quantization(hf_config, what)
    check_remote_model(hf_config, what)
    family = family_of((hf_config.get("architectures") or ["?"])[0])
    config = hf_config_object(hf_config, family, what)
    check_config_keys(config, family, what)
    return family, config


def build_hooked_model(translation: Translation, weights: dict[str, torch.Tensor], *, what: str) -> HookedTransformer:
    """The HookedTransformer of a checkpoint (its `translate`d config and its
    weights under HF names), on the CPU, or one sentence saying why not.
    `weights` may hold llama.cpp's `rope_freqs.weight` (GGUF), which divides
    the rotary frequencies."""
    family, config, cfg = translation
    dtype = cfg.dtype
    weights = dict(weights)
    freq_factors = weights.pop(ROPE_FREQS, None)
    weights = hf_weight_names(family.architecture, weights)
    weights = {name: tensor.to(dtype) for name, tensor in tied_unembedding(weights, config).items()}
    tree = WeightTree(weights)
    state_dict = family.convert(tree, cfg, config)
    check_all_read(weights, tree.read, family.known_empty, what)
    model = new_hooked_transformer(cfg)
    prepare_model(model, config)
    load_weights(model, state_dict, family, what)
    if cfg.positional_embedding_type == "rotary":
        use_hf_rotary_tables(model, config, family, freq_factors=freq_factors)
    elif freq_factors is not None:
        raise XtlError(f"{what} holds rope_freqs.weight but its model has no rotary positions.")
    if family.finish is not None:
        family.finish(model, config)
    return model


def load_weights(model: HookedTransformer, state_dict: dict[str, torch.Tensor], family: Family, what: str) -> None:
    """Copy the converted weights into the model's parameters, as they are (no float32 round trip,
    which TransformerLens' `load_and_process_state_dict` makes of float64 and bfloat16 weights),
    and refuse a conversion that leaves a parameter unset or gives one the model does not have."""
    parameters, known = {name for name, _ in model.named_parameters()}, set(model.state_dict())
    unset, unknown = sorted(parameters - set(state_dict)), sorted(set(state_dict) - known)
    if unset or unknown:
        raise XtlError(
            f"xtl's {family.architecture} conversion of {what} "
            + (f"sets no {unset[0]}" if unset else f"gives {unknown[0]}, which the model does not have")
            + ": this is a bug in xtl, not in the checkpoint; please report it."
        )
    with torch.no_grad():
        model.load_state_dict(state_dict, strict=False)  # strict=False: buffers (masks, rotary tables) stay


def tied_unembedding(weights: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """The unembedding of a checkpoint with tied embeddings (no `lm_head.weight`
    of its own) is its embedding; an untied checkpoint must have one."""
    if "lm_head.weight" in weights or not getattr(config, "tie_word_embeddings", False):
        return weights
    embedding = next((name for name in ("model.embed_tokens.weight", "transformer.word_embeddings.weight",
                                        "gpt_neox.embed_in.weight") if name in weights), None)
    return weights if embedding is None else {**weights, "lm_head.weight": weights[embedding]}


# --- today's families ------------------------------------------------------------------
# Qwen3: QK-norm (per-head RMSNorm of queries and keys before the rotation).
# Gemma 1/2/3: RMSNorm as x * (1 + w), the embedding scaled by sqrt(d_model),
#   tied unembedding; Gemma 2/3 add norms after each sublayer, soft-capping (2),
#   alternating local/global layers, a query scale of its own; Gemma 3 QK-norm and
#   a rotary base of its own for local layers.
# Phi-3: fused q/k/v and gate/up projections. OLMo 2: norms after the sublayers
#   only, QK-norm over all heads. GPT-NeoX / Pythia: parallel attention and MLP,
#   LayerNorms with biases, partial rotary. Cohere (Aya): parallel attention and
#   MLP under one bias-free LayerNorm, interleaved rotary, a logit scale.
# Mixtral: a mixture-of-experts MLP (TransformerLens' MoE).


def _gemma_config(config, n_ctx: int | None, architecture: str) -> dict:
    cfg = _rotary_decoder_config(config, n_ctx, architecture)
    cfg["n_key_value_heads"] = config.num_key_value_heads  # the converter wants it set
    cfg["act_fn"] = getattr(config, "hidden_activation", None) or config.hidden_act
    if architecture != "GemmaForCausalLM":
        cfg.update(
            use_normalization_before_and_after=True,
            attn_scale=float(config.query_pre_attn_scalar) ** 0.5,
            attn_scores_soft_cap=config.attn_logit_softcapping or -1.0,
            output_logits_soft_cap=config.final_logit_softcapping or -1.0,
        )
    if architecture == "Gemma3ForCausalLM":
        cfg.update(use_qk_norm=True, rotary_base=config.rope_parameters["full_attention"]["rope_theta"])
    return cfg


_GEMMA_READS = _LLAMA_READS - {"mlp_bias"} | {
    "hidden_activation", "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
}  # fmt: skip


def _convert_gemma(tree: WeightTree, cfg, config) -> dict[str, torch.Tensor]:
    from transformer_lens.pretrained.weight_conversions import convert_gemma_weights

    state_dict = convert_gemma_weights(tree, cfg)
    # TransformerLens adds Gemma's 1 to the norm weights in float32; HF adds it to the weight read as
    # float32 as well, so both are the same numbers; cast to the model's dtype here.
    return {name: value.to(cfg.dtype) for name, value in state_dict.items()} | _attention_biases(tree, cfg, config)


def _olmo2_config(config, n_ctx: int | None) -> dict:
    return _rotary_decoder_config(config, n_ctx, "Olmo2ForCausalLM")


def _attention(attention: WeightTree, cfg, layer: int) -> dict[str, torch.Tensor]:
    """A layer's q/k/v/o projections (separate, bias-free) as TransformerLens keeps them."""
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    gqa = "_" if cfg.n_key_value_heads is not None else ""
    return {
        f"blocks.{layer}.attn.W_Q": einops.rearrange(attention.q_proj.weight, "(n h) m -> n m h", n=cfg.n_heads),
        f"blocks.{layer}.attn.{gqa}W_K": einops.rearrange(attention.k_proj.weight, "(n h) m -> n m h", n=n_kv),
        f"blocks.{layer}.attn.{gqa}W_V": einops.rearrange(attention.v_proj.weight, "(n h) m -> n m h", n=n_kv),
        f"blocks.{layer}.attn.b_Q": torch.zeros(cfg.n_heads, cfg.d_head, dtype=cfg.dtype),
        f"blocks.{layer}.attn.{gqa}b_K": torch.zeros(n_kv, cfg.d_head, dtype=cfg.dtype),
        f"blocks.{layer}.attn.{gqa}b_V": torch.zeros(n_kv, cfg.d_head, dtype=cfg.dtype),
        f"blocks.{layer}.attn.W_O": einops.rearrange(attention.o_proj.weight, "m (n h) -> n h m", n=cfg.n_heads),
        f"blocks.{layer}.attn.b_O": torch.zeros(cfg.d_model, dtype=cfg.dtype),
    }


def _gated_mlp(mlp: WeightTree, cfg, layer: int) -> dict[str, torch.Tensor]:
    return {
        f"blocks.{layer}.mlp.W_in": mlp.up_proj.weight.T,
        f"blocks.{layer}.mlp.W_gate": mlp.gate_proj.weight.T,
        f"blocks.{layer}.mlp.W_out": mlp.down_proj.weight.T,
        f"blocks.{layer}.mlp.b_in": torch.zeros(cfg.d_mlp, dtype=cfg.dtype),
        f"blocks.{layer}.mlp.b_out": torch.zeros(cfg.d_model, dtype=cfg.dtype),
    }


def _ends(tree: WeightTree, cfg, final_norm: bool = True) -> dict[str, torch.Tensor]:
    ends = {"embed.W_E": tree.model.embed_tokens.weight, "unembed.W_U": tree.lm_head.weight.T,
            "unembed.b_U": torch.zeros(cfg.d_vocab, dtype=cfg.dtype)}
    if final_norm:
        ends["ln_final.w"] = tree.model.norm.weight
    return ends


def _convert_olmo2(tree: WeightTree, cfg, config) -> dict[str, torch.Tensor]:
    """OLMo 2 as TransformerLens' converter reads it (that one insists on HF's
    module classes), grouped-query attention included."""
    state_dict = _ends(tree, cfg)
    for layer in range(cfg.n_layers):
        block = tree.model.layers[layer]
        state_dict |= _attention(block.self_attn, cfg, layer) | _gated_mlp(block.mlp, cfg, layer)
        state_dict[f"blocks.{layer}.attn.q_norm.w"] = block.self_attn.q_norm.weight
        state_dict[f"blocks.{layer}.attn.k_norm.w"] = block.self_attn.k_norm.weight
        state_dict[f"blocks.{layer}.ln1.w"] = block.post_attention_layernorm.weight
        state_dict[f"blocks.{layer}.ln2.w"] = block.post_feedforward_layernorm.weight
    return state_dict | _attention_biases(tree, cfg, config)


def _phi3_config(config, n_ctx: int | None) -> dict:
    cfg = _rotary_decoder_config(config, n_ctx, "Phi3ForCausalLM")
    cfg["rotary_dim"] = int(cfg["d_head"] * getattr(config, "partial_rotary_factor", 1.0))
    return cfg


def _convert_phi3(tree: WeightTree, cfg, config) -> dict[str, torch.Tensor]:
    from transformer_lens.pretrained.weight_conversions import convert_phi3_weights

    state_dict = convert_phi3_weights(tree, cfg)
    # TransformerLens writes LayerNorm biases an RMSNorm does not have (and of the wrong size), and no MLP
    # biases: Phi-3's MLP has none (zero).
    state_dict = {name: value for name, value in state_dict.items() if not re.search(r"\.ln[12]\.b$", name)}
    for layer in range(cfg.n_layers):
        state_dict[f"blocks.{layer}.mlp.b_in"] = torch.zeros(cfg.d_mlp, dtype=cfg.dtype)
        state_dict[f"blocks.{layer}.mlp.b_out"] = torch.zeros(cfg.d_model, dtype=cfg.dtype)
    return state_dict


def _neox_config(config, n_ctx: int | None) -> dict:
    n_heads = config.num_attention_heads
    d_head = config.hidden_size // n_heads
    partial = config.rope_parameters.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    return dict(
        d_model=config.hidden_size, d_head=d_head, n_heads=n_heads, d_mlp=config.intermediate_size,
        n_layers=config.num_hidden_layers, n_ctx=_n_ctx(config, n_ctx), d_vocab=config.vocab_size,
        act_fn=config.hidden_act, eps=config.layer_norm_eps, normalization_type="LN",
        parallel_attn_mlp=config.use_parallel_residual, positional_embedding_type="rotary",
        rotary_dim=int(d_head * partial), rotary_adjacent_pairs=False,
        rotary_base=config.rope_parameters.get("rope_theta", 10000.0), original_architecture="GPTNeoXForCausalLM",
        default_prepend_bos=False,
    )  # fmt: skip


def _convert_neox(tree: WeightTree, cfg, config) -> dict[str, torch.Tensor]:
    from transformer_lens.pretrained.weight_conversions import convert_neox_weights

    if not config.attention_bias:
        raise XtlError("GPT-NeoX checkpoints without attention biases (attention_bias=false) are not supported.")
    return convert_neox_weights(tree, cfg)


def _cohere_config(config, n_ctx: int | None) -> dict:
    cfg = _rotary_decoder_config(config, n_ctx, "CohereForCausalLM", eps=config.layer_norm_eps)
    cfg.update(normalization_type="LN", parallel_attn_mlp=True, rotary_adjacent_pairs=True, final_rms=False)
    return cfg


def _convert_cohere(tree: WeightTree, cfg, config) -> dict[str, torch.Tensor]:
    """Cohere (Command R, Aya-23, Aya Expanse): Llama's projections, one
    bias-free LayerNorm feeding both attention and MLP (TransformerLens' ln1 and
    ln2 both get it), the logit scale folded into the unembedding. xtl's own:
    TransformerLens has no Cohere converter."""
    zeros = torch.zeros(cfg.d_model, dtype=cfg.dtype)
    state_dict = _ends(tree, cfg) | {"ln_final.b": zeros}
    for layer in range(cfg.n_layers):
        block = tree.model.layers[layer]
        state_dict |= _attention(block.self_attn, cfg, layer) | _gated_mlp(block.mlp, cfg, layer)
        norm = block.input_layernorm.weight
        state_dict |= {f"blocks.{layer}.ln1.w": norm, f"blocks.{layer}.ln2.w": norm,
                       f"blocks.{layer}.ln1.b": zeros, f"blocks.{layer}.ln2.b": zeros}
    state_dict["unembed.W_U"] = state_dict["unembed.W_U"] * config.logit_scale
    return state_dict | _attention_biases(tree, cfg, config)


def _mixtral_config(config, n_ctx: int | None) -> dict:
    cfg = _rotary_decoder_config(config, n_ctx, "MixtralForCausalLM")
    cfg.update(num_experts=config.num_local_experts, experts_per_token=config.num_experts_per_tok,
               norm_topk_prob=True)
    return cfg


def _convert_mixtral(tree: WeightTree, cfg, config) -> dict[str, torch.Tensor]:
    """Mixtral as its checkpoints store it (`block_sparse_moe.experts.{e}.w1/w2/w3`)
    into TransformerLens' MoE. xtl's own: TransformerLens' converter reads the
    fused expert tensors of transformers 5's in-memory model, which no
    checkpoint file holds."""
    state_dict = _ends(tree, cfg)
    for layer in range(cfg.n_layers):
        block = tree.model.layers[layer]
        moe = block.block_sparse_moe
        state_dict |= _attention(block.self_attn, cfg, layer)
        state_dict[f"blocks.{layer}.ln1.w"] = block.input_layernorm.weight
        state_dict[f"blocks.{layer}.ln2.w"] = block.post_attention_layernorm.weight
        state_dict[f"blocks.{layer}.mlp.W_gate.weight"] = moe.gate.weight
        for expert in range(cfg.num_experts):
            weights = moe.experts[expert]
            state_dict[f"blocks.{layer}.mlp.experts.{expert}.W_gate.weight"] = weights.w1.weight
            state_dict[f"blocks.{layer}.mlp.experts.{expert}.W_in.weight"] = weights.w3.weight
            state_dict[f"blocks.{layer}.mlp.experts.{expert}.W_out.weight"] = weights.w2.weight
    return state_dict


_QWEN_WINDOW_READS = {"use_sliding_window", "max_window_layers"}
_POST_NORM_HF_SITES = (  # Gemma 2/3: a norm after each sublayer, and one before the MLP
    ("hook_attn_out", "post_attention_layernorm", "output"),
    ("hook_mlp_out", "post_feedforward_layernorm", "output"),
    ("hook_resid_mid", "pre_feedforward_layernorm", "input"),
)
_register(Family(
    "Qwen3ForCausalLM", "qwen3", _LLAMA_READS - {"mlp_bias"} | _QWEN_WINDOW_READS,
    lambda config, n_ctx: _rotary_decoder_config(config, n_ctx, "Qwen3ForCausalLM") | {"use_qk_norm": True},
    lambda tree, cfg, config: _convert_with("convert_qwen3_weights")(tree, cfg, config)
    | _attention_biases(tree, cfg, config),
    ROTARY_EMPTY,
))  # fmt: skip
for _architecture, _model_type, _modeling in (
    ("GemmaForCausalLM", "gemma", ""),
    ("Gemma2ForCausalLM", "gemma2", ""),
    ("Gemma3ForCausalLM", "gemma3_text", "transformers.models.gemma3.modeling_gemma3"),
):
    _register(Family(
        _architecture, _model_type, _GEMMA_READS,
        functools.partial(_gemma_config, architecture=_architecture),
        _convert_gemma, ROTARY_EMPTY, modeling=_modeling,
        **({} if _model_type == "gemma" else {"hf_sites": _POST_NORM_HF_SITES}),
    ))  # fmt: skip
_register(Family(
    "Phi3ForCausalLM", "phi3", _LLAMA_READS - {"mlp_bias", "attention_bias"} | {"partial_rotary_factor"},
    _phi3_config, _convert_phi3, ROTARY_EMPTY,
))  # fmt: skip
_register(Family(
    "Olmo2ForCausalLM", "olmo2", _LLAMA_READS - {"mlp_bias"}, _olmo2_config, _convert_olmo2, ROTARY_EMPTY,
    conversion="xtl (TransformerLens' converter needs HF's module classes)",
    hf_sites=(("hook_attn_out", "post_attention_layernorm", "output"),
              ("hook_mlp_out", "post_feedforward_layernorm", "output"), ("hook_resid_mid", "mlp", "input")),
))  # fmt: skip
_register(Family(
    "GPTNeoXForCausalLM", "gpt_neox",
    frozenset({"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "hidden_act", "layer_norm_eps", "tie_word_embeddings", "rope_parameters", "use_parallel_residual",
               "attention_bias", "partial_rotary_factor", "rotary_pct"}),
    _neox_config, _convert_neox,
    ROTARY_EMPTY + (r"\.attention\.(bias|masked_bias)$",),  # the causal mask and its fill value, as buffers
    hf_layers="gpt_neox.layers",
    hf_sites=(("hook_attn_out", "attention.dense", "output"), ("hook_mlp_out", "mlp", "output"),
              ("hook_resid_mid", "post_attention_layernorm", "input")),  # sequential blocks only
))  # fmt: skip
_register(Family(
    "CohereForCausalLM", "cohere", _LLAMA_READS - {"mlp_bias", "rms_norm_eps"} | {"layer_norm_eps", "logit_scale"},
    _cohere_config, _convert_cohere, ROTARY_EMPTY, conversion="xtl (TransformerLens has none)",
    hf_sites=(("hook_attn_out", "self_attn.o_proj", "output"), ("hook_mlp_out", "mlp", "output")),
))  # fmt: skip
_register(Family(
    "MixtralForCausalLM", "mixtral", _LLAMA_READS - {"mlp_bias", "attention_bias"}
    | {"num_local_experts", "num_experts_per_tok"},
    _mixtral_config, _convert_mixtral, ROTARY_EMPTY,
    conversion="xtl (TransformerLens' converter reads transformers 5's fused experts, not the files')",
))  # fmt: skip
