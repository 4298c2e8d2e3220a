"""One transplant: the readable reference definition.

    source prompt S ──forward──▶ blocks.{i}.<read hook>[-1]          (one d_model vector)
    target prompt T ──forward, with blocks.{j}.<write hook>[-1] := that vector──▶ KV cache
    greedy decoding from that KV cache, no hooks, until EOS or max_new_tokens

The write happens in the prompt pass only: the decoding steps run without
hooks, and see the transplant only through the keys and values it changed.
`xtl.sweep` computes the same thing for many configurations at once and is
tested against this module, row for row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.hook_points import HookPoint

from xtl.errors import XtlError
from xtl.model import as_tokens, check_layer, check_site, decode, encode, eos_token_ids, read_hook, write_hook


@dataclass(frozen=True)
class Generation:
    """A generated answer: the new tokens only (EOS included when it was hit)."""

    token_ids: tuple[int, ...]
    text: str


def check_max_new_tokens(max_new_tokens: int) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise XtlError(f"max_new_tokens must be a positive whole number, not {max_new_tokens!r}.")
    return max_new_tokens


def generate(
    model: HookedTransformer, prompt: str, *, max_new_tokens: int = 20, prompt_format: str = "raw"
) -> Generation:
    """Vanilla greedy generation from `prompt` (`prompt_format` raw or chat, see `xtl.model.encode`)."""
    check_max_new_tokens(max_new_tokens)
    ids = encode(model, prompt, prompt_format=prompt_format)
    return greedy_decode(model, ids, prompt_hooks=[], max_new_tokens=max_new_tokens)


def transplant(
    model: HookedTransformer,
    source: str,
    target: str,
    *,
    site: str,
    source_layer: int,
    target_layer: int,
    max_new_tokens: int = 20,
    prompt_format: str = "raw",
) -> Generation:
    """Generate from `target` with the last-position activation of `source` at
    `source_layer` written into `target_layer` (site `ffn`, `attn` or `attn-paper`,
    see the spec). `prompt_format` "chat" wraps source and target alike as one
    user turn of the model's chat template (see `xtl.model.encode`)."""
    check_site(site)
    check_layer(model, source_layer, "source_layer")
    check_layer(model, target_layer, "target_layer")
    check_max_new_tokens(max_new_tokens)
    source_ids = encode(model, source, "source prompt", prompt_format)
    target_ids = encode(model, target, "target prompt", prompt_format)

    vector = source_activation(model, source_ids, site=site, layer=source_layer)

    def write_last_position(activation: Float[torch.Tensor, "batch pos d_model"], *, hook: HookPoint):
        activation[:, -1, :] = vector
        return activation

    return greedy_decode(
        model,
        target_ids,
        prompt_hooks=[(write_hook(site, target_layer), write_last_position)],
        max_new_tokens=max_new_tokens,
    )


@torch.inference_mode()
def source_activation(
    model: HookedTransformer, source_ids: list[int], *, site: str, layer: int
) -> Float[torch.Tensor, "d_model"]:
    """The value the site reads at `layer`, last position of the source prompt."""
    name = read_hook(site, layer)
    _, cache = model.run_with_cache(as_tokens(model, source_ids), names_filter=name, stop_at_layer=layer + 1)
    return cache[name][0, -1].clone()


@torch.inference_mode()
def greedy_decode(
    model: HookedTransformer, prompt_ids: list[int], *, prompt_hooks: list, max_new_tokens: int
) -> Generation:
    """Greedy decoding; `prompt_hooks` are active during the prompt pass only."""
    stop = set(eos_token_ids(model))
    kv_cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch_size=1)
    tokens = as_tokens(model, prompt_ids)
    # An explicit mask: with a KV cache TransformerLens would otherwise build one
    # from the tokenizer and mask every generated pad-token id, which HF does not.
    logits = model.run_with_hooks(
        tokens, past_kv_cache=kv_cache, attention_mask=torch.ones_like(tokens), fwd_hooks=prompt_hooks
    )
    new_ids: list[int] = []
    while True:
        next_id = int(logits[0, -1].argmax())
        new_ids.append(next_id)
        if next_id in stop or len(new_ids) == max_new_tokens:
            break
        token = as_tokens(model, [next_id])
        logits = model(token, past_kv_cache=kv_cache, attention_mask=torch.ones_like(token))
    return Generation(token_ids=tuple(new_ids), text=decode(model, new_ids))
