"""Scoring mode: teacher-forced log-probabilities of each option's continuation.

    source prompt S ──forward──▶ blocks.{i}.<read hook>[-1]          (one d_model vector)
    target prompt T ──forward, with blocks.{j}.<write hook>[-1] := that vector──▶ KV cache
    for each option o: its tokens forced after T from that KV cache, no hooks:
        log p(o) = sum over its tokens of log softmax(logits)[token]

The prompt pass is the one of generate mode (the same tokens, the same write at
the last prompt position only); the continuation's positions are not written
and see the transplant only through attention. Log-probabilities are natural
logs of the full-vocabulary softmax, computed in float32 (float64 for float64
models). `score` below is the readable reference; `xtl.sweep(mode="score")`
computes the same with the batched engine (`ScoreBatch`) and is tested against
it row for row.

The options of an instance come from its benchmark (`xtl.datasets.option_texts`):
XNLI "(1)" "(2)" "(3)", XCOPA "(1)" "(2)", GlobalOpinionQA "(A)" "(B)" ...,
XQuAD and the facts one entry, the gold answer text. An option's tokens are
those the checkpoint's tokenizer gives the prompt text followed by a space
(none when the prompt text ends in whitespace, as a chat template's assistant
turn does) and the option, after the prompt's own tokens (`continuation_ids`).

The columns a scoring row adds (`Scores`, stored by `xtl.results`):

- `option_token_ids`: each option's continuation exactly as scored;
- `option_logprobs`: the summed log-probability of each;
- `option_choice`: the argmax (the first on ties); `option_choice_norm`: the
  argmax of the per-token mean (length-normalised);
- `gold_option`: the gold's index (null without a gold); `gold_logprob`: its
  log-probability; `gold_margin`: gold minus the best other option (null with
  one option).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from xtl.sites import Site
from xtl.errors import XtlError
from xtl.generation import log_normalizers, token_logprobs, transplant_hooks
from xtl.sweeping import _Batch, _regroup, _step_plan, _to_device
from xtl.model import as_tokens, chat_text, check_context, encode


@dataclass(frozen=True)
class Scores:
    """The teacher-forced scores of one configuration (or vanilla) of one instance."""

    option_token_ids: tuple[tuple[int, ...], ...]
    option_logprobs: tuple[float, ...]
    option_choice: int
    option_choice_norm: int
    gold_option: int | None
    gold_logprob: float | None
    gold_margin: float | None

    @classmethod
    def of(cls, option_token_ids: Sequence[Sequence[int]], option_logprobs: Sequence[float], gold_option: int | None) -> "Scores":
        """The derived columns from each option's tokens and summed log-probability."""
        logprobs = [float(x) for x in option_logprobs]
        norm = [lp / len(ids) for lp, ids in zip(logprobs, option_token_ids)]
        gold_logprob = gold_margin = None
        if gold_option is not None:
            gold_logprob = logprobs[gold_option]
            others = [lp for k, lp in enumerate(logprobs) if k != gold_option]
            gold_margin = gold_logprob - max(others) if others else None
        return cls(
            option_token_ids=tuple(tuple(int(t) for t in ids) for ids in option_token_ids),
            option_logprobs=tuple(logprobs),
            option_choice=_argmax(logprobs),
            option_choice_norm=_argmax(norm),
            gold_option=gold_option,
            gold_logprob=gold_logprob,
            gold_margin=gold_margin,
        )

    def columns(self) -> dict:
        return {
            "option_token_ids": [list(ids) for ids in self.option_token_ids],
            "option_logprobs": list(self.option_logprobs),
            "option_choice": self.option_choice,
            "option_choice_norm": self.option_choice_norm,
            "gold_option": self.gold_option,
            "gold_logprob": self.gold_logprob,
            "gold_margin": self.gold_margin,
        }


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for k, value in enumerate(values):
        if value > values[best] or (math.isnan(values[best]) and not math.isnan(value)):
            best = k
    return best


def continuation_ids(model: HookedTransformer, target: str, option: str, prompt_format: str = "raw") -> list[int]:
    """The tokens of `option` as scored after the target prompt's own tokens
    (`xtl.model.encode`): those the tokenizer gives the prompt text + separator
    + option after the prompt's tokens, or, when the two do not split there
    (a token spanning the boundary), the separator + option tokenized alone."""
    return option_ids(model, target, [option], prompt_format)[0]


def option_ids(
    model: HookedTransformer, target: str, options: Sequence[str], prompt_format: str = "raw",
    target_ids: list[int] | None = None,
) -> list[list[int]]:
    """`continuation_ids` of each option, the target prompt encoded once (`target_ids`, when
    the caller has them: `encode(model, target, "target prompt", prompt_format)`)."""
    if isinstance(options, str) or not options:
        raise XtlError(f"options must be a non-empty list of continuation texts, got {options!r:.60}.")
    for option in options:
        if not isinstance(option, str) or not option.strip():
            raise XtlError(f"option {option!r} is empty: an option to score needs some text.")
    if target_ids is None:
        target_ids = encode(model, target, "target prompt", prompt_format)
    chat = prompt_format == "chat"
    text = chat_text(model, target) if chat else target
    separator = "" if text[-1:].isspace() else " "
    continuations = []
    for option in options:
        whole = list(model.tokenizer(text + separator + option, add_special_tokens=not chat).input_ids)
        if whole[: len(target_ids)] == target_ids and len(whole) > len(target_ids):
            continuations.append(whole[len(target_ids) :])
        else:
            continuations.append(list(model.tokenizer(separator + option, add_special_tokens=False).input_ids))
    return continuations


@torch.inference_mode()
def score(
    model: HookedTransformer,
    target: str,
    options: Sequence[str],
    *,
    source: str | None = None,
    site: Site | None = None,
    source_layer: int | None = None,
    target_layer: int | None = None,
    gold_option: int | None = None,
    prompt_format: str = "raw",
) -> Scores:
    """The reference scoring: each option's tokens forced after `target`, with
    (when `site` is given) the last-position value of `source` at `source_layer`
    written into `target_layer` in the prompt pass only; `site` None: vanilla.
    `xtl.transplant(..., mode="score", option_texts=...)` calls this."""
    if gold_option is not None and not (isinstance(gold_option, int) and 0 <= gold_option < len(options)):
        raise XtlError(f"gold_option {gold_option!r} is not an index of the {len(options)} options (0 to {len(options) - 1}).")
    target_ids = encode(model, target, "target prompt", prompt_format)
    continuations = option_ids(model, target, options, prompt_format, target_ids)
    check_context(model, len(target_ids), max(len(ids) for ids in continuations), "target prompt")
    hooks = []
    if site is not None:
        if source is None:
            raise XtlError("a transplant needs the source prompt: give source=... with site=....")
        hooks = transplant_hooks(
            model, source, site=site, source_layer=source_layer, target_layer=target_layer, prompt_format=prompt_format
        )
    logprobs = [forced_logprob(model, target_ids, ids, prompt_hooks=hooks) for ids in continuations]
    return Scores.of(continuations, logprobs, gold_option)


def forced_logprob(model: HookedTransformer, prompt_ids: list[int], continuation: list[int], *, prompt_hooks: list) -> float:
    """The summed log-probability of `continuation` after `prompt_ids`; `prompt_hooks`
    are active during the prompt pass only (as in `xtl.generation.greedy_decode`)."""
    kv_cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch_size=1)
    tokens = as_tokens(model, prompt_ids)
    logits = model.run_with_hooks(
        tokens, past_kv_cache=kv_cache, attention_mask=torch.ones_like(tokens), fwd_hooks=prompt_hooks
    )
    total = 0.0
    for step, token_id in enumerate(continuation):
        total += float(token_logprobs(logits[:, -1], torch.tensor([token_id], device=logits.device))[0])
        if step + 1 < len(continuation):
            token = as_tokens(model, [token_id])
            logits = model(token, past_kv_cache=kv_cache, attention_mask=torch.ones_like(token))
    return total


# --- the batched engine ------------------------------------------------------------------


def instance_options(model: HookedTransformer, instance, prompt_format: str = "raw") -> tuple[list[list[int]], int | None]:
    """(each option's continuation tokens, the gold's index) of one instance (`xtl.datasets.option_texts`)."""
    from xtl.datasets import option_texts

    texts, gold = option_texts(instance)
    return option_ids(model, instance.target, texts, prompt_format), gold


class ScoreBatch(_Batch):
    """The sweep's batch in scoring mode: the rows of `xtl.sweeping._Batch`
    (vanilla and configurations, the prompt step shared as in generate mode),
    each forked after its prompt step into one row per option that still has
    tokens to force. Forked rows with the same tokens so far share their first
    layers as generate mode's rows do (`xtl.sweeping._step_plan`): the options
    of one configuration share its prompt step, and "(1)", "(2)", "(3)" their
    common first token's work below the write."""

    def __init__(self, engine, prepared, rows, options: list[list[list[int]]]):
        longest, n_entries = max(len(ids) for opts in options for ids in opts), sum(len(opts) for opts in options)
        super().__init__(engine, prepared, rows, longest, logit_rows=n_entries)
        self.options = [options[k] for k in self.order]

    def _forced(self, last: torch.Tensor, expand: torch.Tensor | None, rows: np.ndarray, token_ids: list[int]) -> list[float]:
        """log p(token_ids[e]) at the logits of batch row rows[e], for each entry e."""
        logit_row = rows if expand is None else expand.cpu().numpy()[rows]
        wanted = torch.tensor(token_ids, dtype=torch.long, device=last.device)
        out = [0.0] * len(rows)
        size = self.engine.logit_rows or last.shape[0]
        for start in range(0, last.shape[0], size):
            block = last[start : start + size]
            wide, lse = log_normalizers(self.engine.logits(block), self.workspace)
            entries = np.flatnonzero((logit_row >= start) & (logit_row < start + block.shape[0]))
            if not len(entries):
                continue
            at = torch.as_tensor(logit_row[entries] - start, dtype=torch.long, device=last.device)
            values = (wide[at, wanted[torch.as_tensor(entries, device=last.device)]] - lse[at]).tolist()
            for entry, value in zip(entries.tolist(), values):
                out[entry] = value
        return out

    @torch.inference_mode()
    def run(self) -> list[list[float]]:
        """Each row's summed log-probability of each of its options, in the order the rows were given."""
        cfg, device = self.cfg, self.cfg.device
        last, plan, depth, instance_of, group = self._prompt_step()
        positions = self.last_position

        # One entry per (row, option): the row it forks from, its tokens, its running sum.
        origin = np.array([r for r, opts in enumerate(self.options) for _ in opts], dtype=np.int64)
        tokens = [ids for opts in self.options for ids in opts]
        totals = self._forced(last, plan.expand, origin, [ids[0] for ids in tokens])
        alive, rows_of = np.arange(len(tokens)), origin
        for step in range(1, max(len(ids) for ids in tokens)):
            going = np.array([len(tokens[e]) > step for e in alive])
            alive, take = alive[going], rows_of[going]
            keep = _to_device(take, device)
            self._keep_rows(keep)
            positions = positions.index_select(0, keep) + 1
            instance_of, depth = instance_of[take], depth[take]
            fed = [tokens[e][step - 1] for e in alive]
            group = _regroup(group[take], fed)
            plan = _step_plan(depth, group, instance_of, cfg.n_layers, device)
            last = self._step(self.engine.embed(torch.tensor(fed, device=device)), step, positions, {}, plan)
            rows_of = np.arange(len(alive))
            for e, value in zip(alive.tolist(), self._forced(last, plan.expand, rows_of, [tokens[e][step] for e in alive])):
                totals[e] += value
        per_row, start = [], 0
        for opts in self.options:
            per_row.append(totals[start : start + len(opts)])
            start += len(opts)
        return self._in_given_order(per_row)
