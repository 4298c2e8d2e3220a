"""Loading models, and everything that knows TransformerLens hook names and model quirks.

`load_model` turns a Hugging Face checkpoint (a local directory, or an official
name already in the local Hugging Face cache), a GGUF file, or the embedded
default model `SmolLM2-135M-Instruct` into a `HookedTransformer`, fully
offline. It does not go through `HookedTransformer.from_pretrained`, which in
TransformerLens 3.9 refuses local paths and guesses the architecture from the
name (any path containing "llama" is taken for Llama). Instead:

1. the config is read by transformers' own config class from the checkpoint's
   `config.json`, and translated by the architecture's row of
   `xtl.model.families` (which refuses any key it does not implement);
2. the weights are read from the `*.safetensors` files the index names (never
   pickle), or dequantized from a `.gguf` file by Hugging Face transformers' GGUF
   support (a GGUF file holds tensors and metadata only: no code runs on load),
   and converted with TransformerLens' own converters for that architecture
   where they exist (xtl's own otherwise); a tensor the conversion does not
   read refuses the checkpoint;
3. no weight processing is applied. `fold_ln` and `fold_value_biases` would
   only change rounding, but `center_writing_weights` changes the values at
   `hook_attn_out` / `hook_mlp_out` / `hook_resid_mid` and `center_unembed`
   changes the logits, so all four are off: every hook value is the Hugging
   Face model's value.

The model's `.tokenizer` is the checkpoint's own tokenizer, untouched, and
`model.xtl` (a `ModelInfo`) carries its name, fingerprint and EOS ids.

One module per job:

    hooks         hook names of the site table's points (`xtl.sites`) and of keys/values
    tokens        prompts to token ids and back, chat template, context check
    checkpoints   where a model's files are; reading safetensors and GGUF
    families      one row per architecture: config keys read, conversion, HF's formulas; the strict checks
    conversion    weight names, BLOOM numerics, HF layouts
    checking      `check_model`: the checkpoint against its own HF model
    loading       `load_model`, the tokenizer, the device
    fingerprints  a short identity of weights and config, tokenizer, chat template and EOS ids
    checkpoint_checks  a checkpoint's files checked before memory is spent or code runs: config
                  values and sizes against the safetensors headers, EOS ids, prompt length bound
"""

import importlib

# Every public name, and the submodule that defines it: imported on first use, so
# that finding a checkpoint (`xtl.checkpoints`, re-exported here) does not import torch.
_EXPORTS = {
    "conversion": ("bloom_gelu", "hf_alibi_bias", "new_hooked_transformer", "use_hf_layouts"),
    "families": ("hooked_config", "use_hf_rotary_tables"),
    "fingerprints": ("fingerprint",),
    "hooks": ("check_layer", "check_model_site", "key_value_hooks", "read_hook", "write_hook"),
    "loading": ("DTYPES", "ModelInfo", "load_model"),
    "tokens": ("as_tokens", "chat_text", "check_context", "decode", "encode", "eos_token_ids"),
}  # fmt: skip
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
# where a model's files are: torch-free
_ALSO = dict.fromkeys(("EMBEDDED_GGUF", "embedded_model_path", "resolve_model"), "xtl.checkpoints")


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(f"xtl.model.{_HOME[name]}"), name)
    elif name in _ALSO:
        value = getattr(importlib.import_module(_ALSO[name]), name)
    else:
        raise AttributeError(f"module 'xtl.model' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME) | set(_ALSO))


__all__ = sorted(_HOME)
