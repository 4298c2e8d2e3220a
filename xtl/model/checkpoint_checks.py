"""A checkpoint's own files, checked before xtl spends memory or runs anything
on them: each problem one sentence naming the file and the value.

- `check_config_values`: config.json is a JSON object, its sizes whole positive
  numbers within `MAX_SIZE`, the head counts dividing as attention needs (the
  first of the config checks `xtl.model.families.read_config` runs);
- `check_config_against_weights`: the sizes config.json gives are the ones the
  weights have, read from the safetensors headers (`safetensors_shapes`, a few
  kilobytes) before TransformerLens allocates anything from the config;
- `generation_eos_ids`: generation_config.json is JSON, its EOS ids token ids;
- `max_prompt_chars`: the longest prompt that can fit the context, from the
  longest token of the vocabulary, so a huge prompt is refused before it is tokenized.

These are the trust checks of the loader; which config keys and tensors a
conversion reads is the conversion's business (`xtl.model`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from xtl.errors import XtlError

MAX_SIZE = (1 << 31) - 1  # any size in config.json: at most what a tensor dimension can be

# The sizes each architecture's conversion reads: (config key, or keys tried in order).
_SIZES = {
    "rotary": (("hidden_size",), ("num_attention_heads",), ("num_hidden_layers",), ("intermediate_size",), ("vocab_size",)),
    "BloomForCausalLM": (("hidden_size", "n_embed"), ("n_head", "num_attention_heads"), ("n_layer", "num_hidden_layers"), ("vocab_size",)),
}
_OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "max_position_embeddings")
_POSITIVE_NUMBERS = ("rms_norm_eps", "rope_theta", "layer_norm_epsilon")


def read_json_object(path: Path, what: str) -> dict:
    """A JSON file holding an object, or one sentence."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XtlError(f"{str(path)!r} does not exist: copy the checkpoint's {what} into its folder.") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise XtlError(f"{str(path)!r} is not valid JSON ({error}): copy the checkpoint's {what} again.") from None
    except OSError as error:
        raise XtlError(f"{str(path)!r} cannot be read ({error.strerror or error}).") from None
    if not isinstance(data, dict):
        raise XtlError(f"{str(path)!r} holds a JSON {type(data).__name__}, not an object: copy the checkpoint's {what} again.")
    return data


def config_size(hf_config: dict, keys: tuple[str, ...], where: str) -> int:
    """The first of `keys` in the config, as a whole number in 1..MAX_SIZE."""
    key = next((k for k in keys if hf_config.get(k) is not None), None)
    if key is None:
        raise XtlError(f"{where!r} has no {keys[0]!r}: it is not a complete config.json; copy the checkpoint's config again.")
    return _size(hf_config[key], key, where)


def _size(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise XtlError(f"{where!r} has {key} = {value!r}: it must be a whole number from 1 to {MAX_SIZE:,}.")
    return value


def check_config_values(hf_config: Any, where: str) -> dict:
    """The sizes and numbers of a config.json that the conversions read (BLOOM's
    under its own key names), checked for type and range (nothing is allocated
    from it yet)."""
    if not isinstance(hf_config, dict):
        raise XtlError(f"{where!r} holds a JSON {type(hf_config).__name__}, not an object: copy the checkpoint's config.json again.")
    architectures = hf_config.get("architectures")
    architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    kind = "BloomForCausalLM" if architecture == "BloomForCausalLM" else "rotary"
    sizes = [config_size(hf_config, keys, where) for keys in _SIZES[kind]]
    for key in _OPTIONAL_SIZES:
        if hf_config.get(key) is not None:
            _size(hf_config[key], key, where)
    for key in _POSITIVE_NUMBERS:
        value = hf_config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise XtlError(f"{where!r} has {key} = {value!r}: it must be a positive number.")
    d_model, n_heads = sizes[0], sizes[1]
    if hf_config.get("head_dim") is None and d_model % n_heads:
        raise XtlError(f"{where!r} has hidden_size = {d_model}, which {n_heads} attention heads do not divide: the config is not consistent.")
    n_kv = hf_config.get("num_key_value_heads")
    if n_kv is not None and n_heads % n_kv:
        raise XtlError(f"{where!r} has {n_heads} attention heads and num_key_value_heads = {n_kv}, which does not divide them.")
    return hf_config


# --- the weights' shapes, from the safetensors headers -----------------------------------------------------


def safetensors_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """tensor name -> shape, from the headers of safetensors files (read by
    safetensors' `safe_open`, which maps the file and parses only its header:
    no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as handle:
                shapes.update({name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()})
        except SafetensorError as error:
            raise unreadable_weight_file(file, error) from None
        except OSError as error:
            raise XtlError(f"the weight file {str(file)!r} cannot be read ({error.strerror or error}).") from None
    return shapes


def unreadable_weight_file(file: Path, error: Exception) -> XtlError:
    """The sentence for a weight file safetensors cannot parse (its header or its tensors)."""
    return XtlError(
        f"the weight file {str(file)!r} is not a readable safetensors file ({error}): it may be truncated "
        "or damaged; download or copy it again."
    )


def check_config_against_weights(cfg, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """config.json's sizes, as translated (`cfg`, a HookedTransformerConfig), against the
    weights': the embedding (vocab_size x hidden_size), the number of layers and the
    first query projection, before anything is allocated from the config."""
    embedding = next((name for name in sorted(shapes) if name.endswith(("embed_tokens.weight", "word_embeddings.weight"))), None)
    if embedding is None:
        return  # no embedding to compare with: the conversion names the missing weight
    if shapes[embedding] != (cfg.d_vocab, cfg.d_model):
        raise XtlError(
            f"{where!r} gives vocab_size = {cfg.d_vocab} and hidden_size = {cfg.d_model}, but the weights' {embedding} is "
            f"{list(shapes[embedding])}: the config does not belong to these weights; copy the checkpoint's config.json again."
        )
    layers = {int(m.group(1)) for name in shapes if (m := re.search(r"(?:^|\.)(?:layers|h)\.(\d+)\.", name))}
    if layers and len(layers) != cfg.n_layers:
        raise XtlError(
            f"{where!r} gives num_hidden_layers = {cfg.n_layers}, but the weights hold {len(layers)} layers: "
            "the config does not belong to these weights; copy the checkpoint's config.json again."
        )
    query = next((name for name in sorted(shapes) if name.endswith("layers.0.self_attn.q_proj.weight")), None)
    if query is not None and shapes[query] != (cfg.n_heads * cfg.d_head, cfg.d_model):
        raise XtlError(
            f"{where!r} gives {cfg.n_heads} attention heads of {cfg.d_head} dimensions, but the weights' {query} is "
            f"{list(shapes[query])}: the config does not belong to these weights; copy the checkpoint's config.json again."
        )


# --- EOS ids and the tokenizer's longest token ----------------------------------------------------------------


def generation_eos_ids(directory: Path, tokenizer, vocab_size: int) -> tuple[int, ...]:
    """The EOS ids of generation_config.json (else the tokenizer's), each a token id of the model."""
    path = directory / "generation_config.json"
    eos = read_json_object(path, "generation_config.json").get("eos_token_id") if path.is_file() else None
    where = str(path) if eos is not None else f"the tokenizer of {str(directory)!r}"
    if eos is None:
        eos = tokenizer.eos_token_id
    return checked_eos_ids(eos, where, vocab_size)


def checked_eos_ids(eos: Any, where: str, vocab_size: int) -> tuple[int, ...]:
    """An `eos_token_id` value (None, one id or a list of ids) as a tuple of ids, each a token
    id of the model; `where` names what gave it."""
    if eos is None:
        return ()
    ids = eos if isinstance(eos, list) else [eos]
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
            raise XtlError(f"{where!r} gives eos_token_id {eos!r}: EOS ids must be token ids from 0 to {vocab_size - 1}.")
    return tuple(ids)


def longest_token_chars(tokenizer) -> int:
    """The most characters one token of the vocabulary stands for (an upper bound)."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1)


def max_prompt_chars(n_ctx: int, longest_token: int) -> int:
    """The longest prompt that could fit `n_ctx` tokens (4x margin for normalisers
    that shorten text): a longer one is refused before it is tokenized."""
    return 4 * n_ctx * max(longest_token, 16)
