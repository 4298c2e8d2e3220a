"""A short identity of a loaded model: its config and weights, tokenizer, chat template and EOS ids.
Torch is imported only to fingerprint weights: `text_fingerprint` serves torch-free modules too
(`xtl.results`' instance fingerprint)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def fingerprint(model: HookedTransformer) -> str:
    """16 hex digits identifying a model's config and weights.

    Every parameter's name, shape and dtype, plus 4096 evenly strided values of
    each (read in place, not copied): a different checkpoint, dtype or
    architecture changes it."""
    import torch

    digest = hashlib.sha256()
    cfg = model.cfg
    for field in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_key_value_heads", "rotary_base"):
        digest.update(f"{field}={getattr(cfg, field, None)};".encode())
    for name, tensor in sorted(model.state_dict().items()):
        if not name.endswith(("W_E", "W_U", "w", "b", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_gate",
                              "_W_K", "_W_V", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U", "_b_K", "_b_V")):
            continue  # buffers (masks, rotary tables) follow from the config
        step = max(1, tensor.numel() // 4096)
        # the values at flat positions 0, step, 2 step, ... (row-major), without flattening a strided weight
        positions = torch.arange(0, tensor.numel(), step, device=tensor.device)[:4096]
        sample = torch.take(tensor.detach(), positions).to(torch.float64).cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint_parts(model: HookedTransformer, tokenizer, eos_ids: tuple[int, ...]) -> dict[str, str]:
    """The fingerprint of each part of what makes a row, by the name a refused
    resume says: weights and config, tokenizer (vocabulary, normaliser,
    pre-tokeniser, added tokens), chat template, EOS ids. (The prompt format is
    a setting of the run, and part of each instance's fingerprint.)"""
    return {
        "weights and config": fingerprint(model),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "chat template": text_fingerprint(getattr(tokenizer, "chat_template", None)),
        "EOS ids": text_fingerprint(list(eos_ids)),
    }


def tokenizer_fingerprint(tokenizer) -> str:
    """16 hex digits of everything the tokenizer makes text into ids with: its
    vocabulary and merges, normaliser, pre-tokeniser, post-processor, added and
    special tokens (all in the fast tokenizer's own serialisation)."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    added = {str(k): str(v) for k, v in sorted(getattr(tokenizer, "added_tokens_decoder", {}).items())}
    special = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    flags = {name: repr(getattr(tokenizer, name, None)) for name in ("add_bos_token", "add_eos_token", "clean_up_tokenization_spaces", "padding_side")}
    digest.update(json.dumps([added, special, flags], sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def text_fingerprint(text: Any) -> str:
    """16 hex digits of a JSON-able value (a chat template, EOS ids, an instance's content)."""
    return hashlib.sha256(json.dumps(text, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def combined_fingerprint(parts: dict[str, str]) -> str:
    """The model fingerprint: 16 hex digits of all its parts' fingerprints (`fingerprint_parts`)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
