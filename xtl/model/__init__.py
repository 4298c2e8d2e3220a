"""Loading models, and everything that knows TransformerLens hook names and model quirks.

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

One module per job:

    hooks         hook names of the site table's points (`xtl.sites`) and of keys/values
    tokens        prompts to token ids and back, chat template, context check
    checkpoints   where a model's files are; reading safetensors and GGUF
    conversion    config translation, weight names, BLOOM numerics, HF layouts, rotary tables
    loading       `load_model`, the tokenizer, the device
    fingerprints  a short identity of config and weights
"""

from xtl.checks import PROMPT_FORMATS, check_layer_index, check_prompt, check_prompt_format  # noqa: F401
from xtl.model.checkpoints import (  # noqa: F401
    EMBEDDED_GGUF, EMBEDDED_INSTALL, EMBEDDED_MODEL, EMBEDDED_PACKAGE, Checkpoint, embedded_model_path,
    is_embedded_name, read_gguf_config, read_gguf_weights, read_safetensors, resolve_checkpoint, resolve_model,
)  # fmt: skip
from xtl.model.conversion import (  # noqa: F401
    DEFAULT_N_CTX, SUPPORTED_ARCHITECTURES, bloom_gelu, hf_alibi_bias, hooked_config, new_hooked_transformer,
    use_hf_bloom_numerics, use_hf_layouts, use_hf_rotary_tables,
)  # fmt: skip
from xtl.model.fingerprints import fingerprint  # noqa: F401
from xtl.model.hooks import check_layer, key_value_hooks, read_hook, write_hook  # noqa: F401
from xtl.model.loading import DTYPES, ModelInfo, check_device, load_model, load_tokenizer  # noqa: F401
from xtl.model.tokens import as_tokens, chat_text, check_context, decode, encode, eos_token_ids  # noqa: F401
from xtl.sites import Site, check_site  # noqa: F401


def __getattr__(name: str):
    if name == "SITES":  # the site table's names as they are now (`xtl.sites`)
        from xtl import sites

        return sites.names()
    raise AttributeError(f"module 'xtl.model' has no attribute {name!r}")
