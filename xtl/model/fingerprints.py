"""A short identity of a loaded model's config and weights."""

from __future__ import annotations

import hashlib

import torch
from transformer_lens import HookedTransformer


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
