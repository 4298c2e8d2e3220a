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
from typing import Callable, Sequence

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.hook_points import HookPoint

from xtl.checks import check_max_new_tokens, check_mode
from xtl.errors import XtlError
from xtl.model import (
    as_tokens, check_context, check_layer, check_model_site, decode, encode, eos_token_ids, read_hook, write_hook,
)  # fmt: skip
from xtl.signals import FirstTokenSignals
from xtl.sites import Site


@dataclass(frozen=True)
class Generation:
    """A generated answer: the new tokens only (EOS included when it was hit),
    and its confidence signals (`xtl.signals`: these fields are `SIGNALS`, in order)."""

    token_ids: tuple[int, ...]
    text: str
    mean_logprob: float
    min_logprob: float
    first_logprob: float
    first_margin: float
    first_entropy: float


def signal_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the signals are computed in: float32, or float64 for float64 models."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def token_logprobs(
    logits: Float[torch.Tensor, "row vocab"],
    token_ids: Int[torch.Tensor, "row"],
    workspace: Float[torch.Tensor, "row_or_more vocab"] | None = None,
) -> Float[torch.Tensor, "row"]:
    """log p(token) under the full-vocabulary softmax.

    The log-sum-exp is computed as `torch.logsumexp` computes it (the same
    operations, so the same values), into `workspace` when one is given: the
    sweep reuses one buffer for every step instead of allocating a tensor of
    the logits' size each time (over 32 MiB, every allocation is a fresh
    mapping whose pages fault in)."""
    wide = logits.to(signal_dtype(logits.dtype))
    return _logprobs(wide, wide.gather(1, token_ids[:, None])[:, 0], wide.amax(dim=-1, keepdim=True), workspace)


def greedy_tokens(
    logits: Float[torch.Tensor, "row vocab"], workspace: Float[torch.Tensor, "row_or_more vocab"] | None = None
) -> tuple[Int[torch.Tensor, "row"], Float[torch.Tensor, "row"]]:
    """(each row's greedy token, its log-probability): `logits.argmax(-1)` and
    `token_logprobs` of it, the same values, with one pass for the maximum
    and its index (the first one on ties, as argmax)."""
    wide = logits.to(signal_dtype(logits.dtype))
    maxes, chosen = wide.max(dim=-1, keepdim=True)
    return chosen[:, 0], _logprobs(wide, maxes[:, 0].clone(), maxes, workspace)


def _logprobs(wide, chosen_logits, maxes, workspace):
    return chosen_logits - _log_sum_exp(wide, maxes, workspace)


def _log_sum_exp(wide, maxes, workspace):
    maxes.masked_fill_(maxes.abs() == float("inf"), 0)
    shifted = torch.sub(wide, maxes) if workspace is None else torch.sub(wide, maxes, out=workspace[: wide.shape[0]])
    return shifted.exp_().sum(dim=-1).log_().add_(maxes[:, 0])


def log_normalizers(
    logits: Float[torch.Tensor, "row vocab"], workspace: Float[torch.Tensor, "row_or_more vocab"] | None = None
) -> tuple[Float[torch.Tensor, "row vocab"], Float[torch.Tensor, "row"]]:
    """(the logits in the signal dtype, each row's log-sum-exp): log p(t) of row r
    is `wide[r, t] - lse[r]`, the very value `token_logprobs` computes, for any
    number of tokens per row."""
    wide = logits.to(signal_dtype(logits.dtype))
    return wide, _log_sum_exp(wide, wide.amax(dim=-1, keepdim=True), workspace)


def first_token_signals(logits: Float[torch.Tensor, "row vocab"], token_ids: Int[torch.Tensor, "row"]) -> FirstTokenSignals:
    """Per row: log-probability of the chosen token, top-1 minus top-2 logit, entropy in nats."""
    wide = logits.to(signal_dtype(logits.dtype))
    logprobs = wide.log_softmax(dim=-1)
    top = wide.topk(2, dim=-1).values
    entropy = -(logprobs.exp() * logprobs).sum(dim=-1)
    return FirstTokenSignals(logprobs.gather(1, token_ids[:, None])[:, 0], top[:, 0] - top[:, 1], entropy)


def generate(
    model: HookedTransformer,
    prompt: str,
    *,
    max_new_tokens: int = 20,
    prompt_format: str = "raw",
    mode: str = "generate",
    option_texts: Sequence[str] | None = None,
    gold_option: int | None = None,
):
    """Vanilla greedy generation from `prompt` (`prompt_format` raw or chat, see `xtl.model.encode`).
    `mode="score"`: instead, the teacher-forced scores of `option_texts` after the
    prompt (`xtl.scoring.Scores`, see `xtl.scoring.score`)."""
    if _scoring(mode, option_texts):
        from xtl.scoring import score

        return score(model, prompt, option_texts, gold_option=gold_option, prompt_format=prompt_format)
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    prompt_ids = encode(model, prompt, prompt_format=prompt_format)
    check_context(model, len(prompt_ids), max_new_tokens)
    return greedy_decode(model, prompt_ids, prompt_hooks=[], max_new_tokens=max_new_tokens)


def transplant(
    model: HookedTransformer,
    source: str,
    target: str,
    *,
    site: Site,
    source_layer: int,
    target_layer: int,
    max_new_tokens: int = 20,
    prompt_format: str = "raw",
    mode: str = "generate",
    option_texts: Sequence[str] | None = None,
    gold_option: int | None = None,
):
    """Generate from `target` with the last-position activation of `source` at
    `source_layer` written into `target_layer` (site `ffn`, `attn` or `attn-paper`,
    see the spec). `prompt_format` "chat" wraps source and target alike as one
    user turn of the model's chat template (see `xtl.model.encode`).

    `mode="score"`: instead of generating, force each of `option_texts` (continuation
    texts, e.g. ["(1)", "(2)", "(3)"]) after the transplanted prompt and return
    their scores (`xtl.scoring.Scores`; `gold_option` the gold's index, if known)."""
    if _scoring(mode, option_texts):
        from xtl.scoring import score

        return score(
            model, target, option_texts, source=source, site=site, source_layer=source_layer,
            target_layer=target_layer, gold_option=gold_option, prompt_format=prompt_format,
        )
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    target_ids = encode(model, target, "target prompt", prompt_format)
    check_context(model, len(target_ids), max_new_tokens, "target prompt")
    hooks = transplant_hooks(
        model, source, site=site, source_layer=source_layer, target_layer=target_layer, prompt_format=prompt_format
    )
    return greedy_decode(model, target_ids, prompt_hooks=hooks, max_new_tokens=max_new_tokens)


def transplant_hooks(
    model: HookedTransformer,
    source: str,
    *,
    site: Site,
    source_layer: int,
    target_layer: int,
    prompt_format: str = "raw",
) -> list[tuple[str, Callable]]:
    """The prompt pass's hooks of one transplant, for `run_with_hooks`: the
    last-position value of `source` at `source_layer` written into `target_layer`.
    Every check of the transplant's settings is here (the site for this model,
    the layers, the source prompt), before the source pass; generate and score
    modes both take their hooks from this function."""
    check_model_site(model, site)
    source_layer = check_layer(model, source_layer, "source_layer")
    target_layer = check_layer(model, target_layer, "target_layer")
    source_ids = encode(model, source, "source prompt", prompt_format)
    vector = source_activation(model, source_ids, site=site, layer=source_layer)

    def write_last_position(activation: Float[torch.Tensor, "batch pos d_model"], *, hook: HookPoint):
        activation[:, -1, :] = vector
        return activation

    return [(write_hook(site, target_layer), write_last_position)]


def _scoring(mode: str, option_texts) -> bool:
    if check_mode(mode) == "score" and option_texts is None:
        raise XtlError('mode="score" needs the continuations to score: give option_texts=[...] (e.g. ["(1)", "(2)", "(3)"]).')
    if mode == "generate" and option_texts is not None:
        raise XtlError('option_texts are scored only in mode="score"; generate mode takes none.')
    return mode == "score"


@torch.inference_mode()
def source_activation(
    model: HookedTransformer, source_ids: list[int], *, site: Site, layer: int
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
    logprobs: list[float] = []
    while True:
        last = logits[:, -1]
        next_id = int(last[0].argmax())
        chosen = torch.tensor([next_id], device=last.device)
        if not new_ids:
            first = FirstTokenSignals(*(float(value[0]) for value in first_token_signals(last, chosen)))
        logprobs.append(float(token_logprobs(last, chosen)[0]))
        new_ids.append(next_id)
        if next_id in stop or len(new_ids) == max_new_tokens:
            break
        token = as_tokens(model, [next_id])
        logits = model(token, past_kv_cache=kv_cache, attention_mask=torch.ones_like(token))
    return Generation(
        token_ids=tuple(new_ids),
        text=decode(model, new_ids),
        mean_logprob=sum(logprobs) / len(logprobs),
        min_logprob=min(logprobs),
        **first._asdict(),
    )
