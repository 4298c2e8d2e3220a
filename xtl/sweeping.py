"""Every (source layer, target layer) configuration of an instance, batched.

What `transplant()` recomputes for every configuration is computed once here
(spec, section 6):

- the source prompt's forward pass: once per instance, every read hook kept;
- the target prompt's prefix (all positions but the last): once per instance;
  its rotated keys and values are shared by every row through one matrix
  product per layer, never copied per row.

A batch holds rows (vanilla, and configurations of one or more instances).
Each row computes one position per step (the last prompt position, then each
new token) and keeps only its own keys and values, so memory grows with
(prompt length) + (rows x new tokens). A configuration writes its source
vector where the site table (`xtl.sites`) says, in the prompt step only. Rows
stop at EOS. The arithmetic lives in `xtl.engine`, which rows are pending and
where they are stored in `xtl.results`; this module plans batches and runs
them. `transplant()` stays the readable definition; the tests compare the two
row for row.

Rows share work. Until its target layer j, a configuration computes exactly
what vanilla computes, and it keeps doing so in layers 0..j of later steps as
long as its tokens equal vanilla's (any two rows of an instance with the same
tokens so far share the layers below both their target layers). Such layers
are computed once per group of rows with the same tokens (`_step_plan`), and
the other rows copy the residual and keys/values. On a row whose transplant
does not change its answer, that is about half of its layers. The copies are
the very values the row would compute, because on the CPU a row's result
does not depend on the rows computed with it (`xtl.engine.MIN_ROWS`): the
tests check the sweep with and without sharing bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer

from xtl import results
from xtl import sites as site_table
from xtl.checks import parse_memory
from xtl.engine import Engine, _padded_rows, onednn_linear
from xtl.errors import XtlError
from xtl.generation import first_token_signals, greedy_tokens, signal_dtype
from xtl.model import as_tokens, check_context, check_model_site, decode, encode, eos_token_ids, key_value_hooks, read_hook
from xtl.options import SweepOptions
from xtl.results import Row
from xtl.signals import SIGNALS, FirstTokenSignals, SequenceSignals
from xtl.sites import ATTN_OUT, MLP_OUT, RESID_MID, RESID_POST, RESID_PRE

# --- prepared instances ------------------------------------------------------------------


@dataclass
class Prepared:
    """What every row of one instance shares."""

    target_ids: list[int]
    # per layer: rotated keys and values of the target prefix, (kv_head, prefix_pos, d_head)
    prefix_keys: list[torch.Tensor]
    prefix_values: list[torch.Tensor]
    # per site: the source's last-position value at every layer, (n_layers, d_model)
    source_vectors: dict[str, torch.Tensor] = field(default_factory=dict)


class _Enough(Exception):
    """Raised by the hook that caches the last value a pass needs."""


def _values_at(model: HookedTransformer, ids: list[int], names: set[str]) -> dict[str, torch.Tensor]:
    """The values at the hooks `names` of the model's forward pass over `ids`,
    which stops as soon as the last of them is cached: the target prefix needs
    the last block's keys and values, not its attention output and MLP."""
    cache: dict[str, torch.Tensor] = {}

    def keep(tensor: torch.Tensor, hook) -> None:
        cache[hook.name] = tensor.detach()
        if len(cache) == len(names):
            raise _Enough

    try:
        with onednn_linear(model):
            model.run_with_hooks(as_tokens(model, ids), fwd_hooks=[(name, keep) for name in names], stop_at_layer=model.cfg.n_layers)
    except _Enough:
        pass
    return cache


@torch.inference_mode()
def prepare(
    model: HookedTransformer, source: str, target: str, sites: Iterable[str], prompt_format: str = "raw"
) -> Prepared:
    """One source pass and one target-prefix pass (each up to the last value it
    needs): the model's own forward pass, whose linear layers run on oneDNN on
    the CPU in float32 like the engine's products (`xtl.engine.onednn_linear`)."""
    n_layers = model.cfg.n_layers
    source_ids = encode(model, source, "source prompt", prompt_format)
    target_ids = encode(model, target, "target prompt", prompt_format)
    source_cache = _values_at(model, source_ids, {read_hook(site, layer) for site in sites for layer in range(n_layers)})
    vectors = {
        site: torch.stack([source_cache[read_hook(site, layer)][0, -1] for layer in range(n_layers)])
        for site in sites
    }
    prefix = target_ids[:-1]
    n_kv = model.cfg.n_key_value_heads or model.cfg.n_heads
    if prefix:
        hooks = [key_value_hooks(model, layer) for layer in range(n_layers)]
        prefix_cache = _values_at(model, prefix, {name for pair in hooks for name in pair})
        # (1, prefix_pos, kv_head, d_head) -> (kv_head, prefix_pos, d_head)
        keys = [prefix_cache[key][0].transpose(0, 1).contiguous() for key, _ in hooks]
        values = [prefix_cache[value][0].transpose(0, 1).contiguous() for _, value in hooks]
    else:
        empty = torch.zeros(n_kv, 0, model.cfg.d_head, dtype=model.cfg.dtype, device=model.cfg.device)
        keys, values = [empty] * n_layers, [empty] * n_layers
    return Prepared(target_ids=target_ids, prefix_keys=keys, prefix_values=values, source_vectors=vectors)


# --- the batch loop ------------------------------------------------------------------------


@dataclass
class Outputs:
    """What a batch returns per row: its new tokens and confidence signals."""

    token_ids: list[list[int]]
    signals: list[dict[str, float]]


SHARE_WORK = True  # rows with the same tokens so far share their first layers (see _Batch); False: for measuring


@dataclass
class _LayerPlan:
    """Which rows compute one layer at one step, and what the others take from
    their group's representative."""

    rows: torch.Tensor | None  # the rows that compute this layer (None: all of them)
    join: tuple[torch.Tensor, torch.Tensor] | None  # (rows, representatives): rows starting at this layer
    skip: tuple[torch.Tensor, torch.Tensor] | None  # (rows, representatives): rows taking its keys/values
    # per instance: (instance, its rows among `rows`, its rows among all rows)
    instances: list[tuple[int, slice, slice | torch.Tensor]]


@dataclass
class _StepPlan:
    layers: list[_LayerPlan]
    logit_rows: torch.Tensor | None  # the rows whose logits are computed (None: all of them)
    expand: torch.Tensor | None  # for every row, its logits' index among those (None: the identity)


def _to_device(values: np.ndarray, device) -> torch.Tensor:
    """An int64 array on `device`, without waiting for the device (pinned memory, asynchronous copy)."""
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64))
    return tensor if torch.device(device).type == "cpu" else tensor.pin_memory().to(device, non_blocking=True)


def _step_plan(depth: np.ndarray, group: np.ndarray, instance_of: np.ndarray, n_layers: int, device) -> _StepPlan:
    """Rows with the same tokens so far (`group`) compute the same values in
    their first `depth` layers; only the group's representative (the row of
    greatest depth, the first one on ties) computes those, the others start at
    layer `depth` from its residual and copy its keys and values below that.
    `depth` 0 everywhere: every row computes every layer."""
    n = len(depth)
    index = np.arange(n)
    order = np.lexsort((index, -depth, group))  # by group, then greatest depth, then row
    first = np.ones(n, dtype=bool)
    first[1:] = group[order][1:] != group[order][:-1]
    representatives = order[first]
    rep_of = representatives[np.searchsorted(group[representatives], group)]
    is_rep = rep_of == index

    # Every index array of the step goes to the device in one copy (a blocking copy
    # each would wait for the device every time); `piece` numbers them until then.
    pieces: list[np.ndarray] = []

    def piece(values: np.ndarray) -> int:
        pieces.append(np.asarray(values, dtype=np.int64))
        return len(pieces) - 1

    def copies(mask: np.ndarray) -> tuple[int, int] | None:
        return (piece(index[mask]), piece(rep_of[mask])) if mask.any() else None

    raw = []
    for layer in range(n_layers):
        computed = is_rep | (depth <= layer)
        rows = index[computed]
        instances = []
        starts = np.flatnonzero(np.r_[True, instance_of[rows][1:] != instance_of[rows][:-1]])
        for start, end in zip(starts, np.r_[starts[1:], len(rows)]):
            first_row, last_row = rows[start], rows[end - 1]
            contiguous = last_row - first_row == end - start - 1
            instances.append((
                int(instance_of[first_row]),
                slice(int(start), int(end)),
                slice(int(first_row), int(last_row) + 1) if contiguous else piece(rows[start:end]),
            ))
        raw.append((
            None if len(rows) == n else piece(rows),
            copies(~is_rep & (depth == layer)) if layer else None,  # layer 0: the same token's embedding
            copies(~is_rep & (depth > layer)),
            instances,
        ))
    logit_rows = expand = None
    if not computed.all():
        position = np.full(n, -1)
        position[computed] = np.arange(int(computed.sum()))
        logit_rows, expand = piece(index[computed]), piece(position[np.where(computed, index, rep_of)])

    if pieces:
        flat = _to_device(np.concatenate(pieces), device)
        ends = np.cumsum([len(p) for p in pieces]).tolist()
        starts = [0] + ends[:-1]
    tensor = lambda k: None if k is None else flat[starts[k] : ends[k]]
    pair = lambda ks: None if ks is None else (tensor(ks[0]), tensor(ks[1]))
    layers = [
        _LayerPlan(
            rows=tensor(rows), join=pair(join), skip=pair(skip),
            instances=[(i, part, own if isinstance(own, slice) else tensor(own)) for i, part, own in instances],
        )
        for rows, join, skip, instances in raw
    ]
    return _StepPlan(layers, tensor(logit_rows), tensor(expand))


def _sharing_depths(rows: list[Row], n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """The layers each row shares with its group (see `_Batch`): in the prompt step, and after it."""
    if not SHARE_WORK:
        zeros = np.zeros(len(rows), dtype=np.int64)
        return zeros, zeros
    prompt, later = [], []
    for row in rows:
        if row.site is None:
            prompt.append(n_layers)
            later.append(n_layers)
        else:
            prompt.append(row.target_layer)
            changes_keys = site_table.row(row.site).changes_keys_values
            later.append(min(n_layers, row.target_layer + (0 if changes_keys else 1)))
    return np.array(prompt, dtype=np.int64), np.array(later, dtype=np.int64)


Writes = dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]]  # layer -> write point -> (rows writing there, vectors)


def _write_plan(rows: list[Row], prepared: dict[int, Prepared], cfg) -> Writes:
    """layer -> write point -> (a mask of the rows writing there, the vectors they write),
    from the site table (`xtl.sites`)."""
    plan: dict[int, dict[str, list[int]]] = {}
    for index, row in enumerate(rows):
        if row.site is not None:
            point = site_table.engine_write_point(row.site)
            plan.setdefault(row.target_layer, {}).setdefault(point, []).append(index)
    writes: Writes = {}
    for layer, points in plan.items():
        for point, indices in points.items():
            mask = torch.zeros(len(rows), dtype=torch.bool, device=cfg.device)
            mask[indices] = True
            vectors = torch.zeros(len(rows), cfg.d_model, dtype=cfg.dtype, device=cfg.device)
            for index in indices:
                row = rows[index]
                vectors[index] = prepared[row.instance_index].source_vectors[row.site][row.source_layer]
            writes.setdefault(layer, {})[point] = (mask, vectors)
    return writes


def _regroup(group: np.ndarray, tokens: list[int]) -> np.ndarray:
    """The groups after one more token: rows of one group that were given the same token."""
    groups: dict[tuple[int, int], int] = {}
    return np.array([groups.setdefault((g, t), len(groups)) for g, t in zip(group.tolist(), tokens)], dtype=np.int64)


def _computing_order(rows: list[Row]) -> list[int]:
    """Within an instance: vanilla first, then by target layer, so that the rows
    computing a layer are mostly one run (see `_step_plan`)."""
    return sorted(range(len(rows)), key=lambda k: (rows[k].instance_index, rows[k].site is not None, rows[k].target_layer or 0))


class _Batch:
    """Runs the rows of one batch. Rows are ordered by instance; each row holds
    its own keys and values, from the last prompt position on.

    Rows that share their tokens so far share work: a configuration writing in
    layer j computes, until then, exactly what the vanilla row computes (and
    any other row of its instance with the same tokens and a later target
    layer), in layers 0..j-1 of the prompt step and, while its tokens stay the
    same, in layers 0..j of every later step (0..j-1 where it writes the
    residual entering layer j, which changes that layer's keys). Those layers
    are computed once per group of rows, by its representative, and the
    others copy its residual and keys/values: the same values, because a row's
    result does not depend on which rows it is computed with (see
    `xtl.engine.MIN_ROWS`; `SHARE_WORK = False` computes every row in full, and
    the tests compare the two bit for bit)."""

    def __init__(
        self, engine: Engine, prepared: dict[int, Prepared], rows: list[Row], max_new_tokens: int,
        logit_rows: int | None = None,
    ):
        """`logit_rows`: how many rows of logits a step may reduce at most (default: one per row;
        `xtl.scoring.ScoreBatch`: one per forked option), which sizes the log-softmax's workspace."""
        self.engine, self.model, self.cfg = engine, engine.model, engine.cfg
        self.prepared, self.max_new_tokens = prepared, max_new_tokens
        self.order = _computing_order(rows)  # outputs are given back in the order of `rows`
        self.rows = rows = [rows[k] for k in self.order]
        cfg, device = self.cfg, self.cfg.device
        self.last_position = torch.tensor([len(prepared[r.instance_index].target_ids) - 1 for r in rows], device=device)
        # Each row's own keys/values: (row, kv_head, slot, d_head), the layout the products read.
        shape = (len(rows), engine.n_kv, max_new_tokens, cfg.d_head)
        # (slots are written before they are read)
        self.own_keys = [torch.empty(shape, dtype=cfg.dtype, device=device) for _ in range(cfg.n_layers)]
        self.own_values = [torch.empty(shape, dtype=cfg.dtype, device=device) for _ in range(cfg.n_layers)]
        self.writes = _write_plan(rows, prepared, cfg)
        # The log-softmax's workspace: one buffer for the batch's steps.
        logit_rows = logit_rows or len(rows)
        rows = _padded_rows(min(logit_rows, engine.logit_rows or logit_rows))
        self.workspace = torch.empty(rows, cfg.d_vocab, dtype=signal_dtype(cfg.dtype), device=device)

    def _step(
        self,
        resid: Float[torch.Tensor, "row d_model"],
        slot: int,
        positions: Int[torch.Tensor, "row"],
        writes: Writes,
        plan: _StepPlan,
    ) -> Float[torch.Tensor, "logit_row d_model"]:
        """One position for every row (its keys/values stored at `slot`), all
        layers; the last residual of `plan.logit_rows`."""
        engine, cfg = self.engine, self.cfg

        def write(point: str, value: torch.Tensor, here: dict, rows: torch.Tensor | None) -> torch.Tensor:
            if point not in here:
                return value
            mask, vectors = here[point]
            if rows is not None:
                mask, vectors = mask.index_select(0, rows), vectors.index_select(0, rows)
            return torch.where(mask[:, None], vectors, value)

        for layer, lp in enumerate(plan.layers):
            here, rows = writes.get(layer, {}), lp.rows
            # (index_select / index_copy_: advanced indexing copies several times slower)
            if lp.join is not None:
                resid.index_copy_(0, lp.join[0], resid.index_select(0, lp.join[1]))
            x = write(RESID_PRE, resid if rows is None else resid.index_select(0, rows), here, rows)
            q, k, v = engine.qkv(layer, x)
            at = positions if rows is None else positions.index_select(0, rows)
            q, k = engine.rotate(layer, q, at), engine.rotate(layer, k, at)
            own_keys, own_values = self.own_keys[layer], self.own_values[layer]
            if rows is None:
                own_keys[:, :, slot] = k
                own_values[:, :, slot] = v
            else:
                own_keys[:, :, slot].index_copy_(0, rows, k)
                own_values[:, :, slot].index_copy_(0, rows, v)
            z = torch.empty(x.shape[0], cfg.n_heads * cfg.d_head, dtype=cfg.dtype, device=cfg.device)
            keys_so_far, values_so_far = own_keys[:, :, : slot + 1], own_values[:, :, : slot + 1]
            for instance, part, own in lp.instances:
                prepared = self.prepared[instance]
                if isinstance(own, slice):
                    keys, values = keys_so_far[own], values_so_far[own]
                else:
                    keys, values = keys_so_far.index_select(0, own), values_so_far.index_select(0, own)
                z[part] = engine.attend(
                    layer, q[part], prepared.prefix_keys[layer], prepared.prefix_values[layer], keys, values,
                    position=len(prepared.target_ids) - 1 + slot,
                )
            attn_out = write(ATTN_OUT, engine.attn_out(layer, z), here, rows)
            resid_mid = write(RESID_MID, x + attn_out, here, rows)
            mlp_out = write(MLP_OUT, engine.mlp(layer, x if engine.parallel else resid_mid), here, rows)
            out = write(RESID_POST, resid_mid + mlp_out, here, rows)
            if rows is None:
                resid = out
            else:
                resid.index_copy_(0, rows, out)
            if lp.skip is not None:
                for kept in (own_keys[:, :, slot], own_values[:, :, slot]):
                    kept.index_copy_(0, lp.skip[0], kept.index_select(0, lp.skip[1]))
        return resid if plan.logit_rows is None else resid.index_select(0, plan.logit_rows)

    def _logits(self, last: Float[torch.Tensor, "logit_row d_model"]):
        """(logits, how many of their rows are real) of every `Engine.logit_rows` rows of `last`
        (with padding rows, see `Engine.logits`), each reduced while in the cache."""
        size = self.engine.logit_rows or last.shape[0]
        for start in range(0, last.shape[0], size):
            rows = last[start : start + size]
            yield self.engine.logits(rows), rows.shape[0]

    def _choose(self, last: Float[torch.Tensor, "logit_row d_model"]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's greedy token and its log-probability."""
        pieces = [[v[:n] for v in greedy_tokens(logits, self.workspace)] for logits, n in self._logits(last)]
        chosen, logprob = (torch.cat(column) for column in zip(*pieces))
        return chosen, logprob

    def _choose_first(self, last: Float[torch.Tensor, "logit_row d_model"]) -> tuple[torch.Tensor, torch.Tensor, FirstTokenSignals]:
        """`_choose`, and the first-token signals of each row."""
        pieces = []
        for logits, n in self._logits(last):
            chosen, logprob = greedy_tokens(logits, self.workspace)
            pieces.append([v[:n] for v in (chosen, logprob, *first_token_signals(logits, chosen))])
        chosen, logprob, *first = (torch.cat(column) for column in zip(*pieces))
        return chosen, logprob, FirstTokenSignals(*first)

    def _prompt_step(self) -> tuple[torch.Tensor, _StepPlan, np.ndarray, np.ndarray, np.ndarray]:
        """The last prompt position, every row writing at its target layer: (the last residual
        of the step's logit rows, the step's plan, and per row: the layers it shares with its
        group in later steps, its instance, its group, i.e. rows with the same tokens so far:
        the prompt's, per instance)."""
        cfg, device = self.cfg, self.cfg.device
        prompt_depth, depth = _sharing_depths(self.rows, cfg.n_layers)
        instance_of = np.array([r.instance_index for r in self.rows], dtype=np.int64)
        group = instance_of.copy()
        last_tokens = torch.tensor([self.prepared[r.instance_index].target_ids[-1] for r in self.rows], device=device)
        plan = _step_plan(prompt_depth, group, instance_of, cfg.n_layers, device)
        last = self._step(self.engine.embed(last_tokens), 0, self.last_position, self.writes, plan)
        return last, plan, depth, instance_of, group

    def _keep_rows(self, keep: Int[torch.Tensor, "kept"]) -> None:
        """From now on the rows are `keep` (indices of the current rows, in their new order)."""
        for layer in range(self.cfg.n_layers):
            self.own_keys[layer] = self.own_keys[layer].index_select(0, keep)
            self.own_values[layer] = self.own_values[layer].index_select(0, keep)

    def _in_given_order(self, values: list) -> list:
        """Per-row `values` of the computing order, back in the order the rows were given in."""
        given = [0] * len(values)
        for position, k in enumerate(self.order):
            given[k] = position
        return [values[p] for p in given]

    @torch.inference_mode()
    def run(self) -> Outputs:
        cfg, device, n_rows = self.cfg, self.cfg.device, len(self.rows)
        last, plan, depth, instance_of, group = self._prompt_step()
        positions = self.last_position
        chosen, logprob, first = self._choose_first(last)

        # Greedy decoding; tokens and signals stay on the device, rows at EOS leave the batch.
        stop = set(eos_token_ids(self.model))
        tokens = torch.zeros(n_rows, self.max_new_tokens, dtype=torch.long, device=device)
        lengths = torch.zeros(n_rows, dtype=torch.long, device=device)
        wide = logprob.dtype
        sum_logprob = torch.zeros(n_rows, dtype=wide, device=device)
        min_logprob = torch.full((n_rows,), float("inf"), dtype=wide, device=device)
        alive = torch.arange(n_rows, device=device)  # original index of each current row

        def expand(x: torch.Tensor) -> torch.Tensor:
            """Per row, from the values of the rows whose logits were computed."""
            return x if plan.expand is None else x[plan.expand]

        first = FirstTokenSignals(*(expand(signal) for signal in first))
        for step in range(self.max_new_tokens):
            next_ids, logprob = expand(chosen), expand(logprob)
            tokens[alive, step] = next_ids
            lengths[alive] += 1
            sum_logprob[alive] += logprob
            min_logprob[alive] = torch.minimum(min_logprob[alive], logprob)
            if step == self.max_new_tokens - 1:
                break
            chosen_host = next_ids.tolist()  # the step's one host sync
            group = _regroup(group, chosen_host)
            finished = np.array([t in stop for t in chosen_host])
            if finished.all():
                break
            if finished.any():
                kept = np.flatnonzero(~finished)
                keep = _to_device(kept, device)
                alive, next_ids, positions = alive[keep], next_ids[keep], positions[keep]
                instance_of, group, depth = instance_of[kept], group[kept], depth[kept]
                self._keep_rows(keep)
            positions = positions + 1
            plan = _step_plan(depth, group, instance_of, cfg.n_layers, device)
            chosen, logprob = self._choose(self._step(self.engine.embed(next_ids), step + 1, positions, {}, plan))

        lengths_host = lengths.tolist()
        token_ids = [row[:n] for row, n in zip(tokens.tolist(), lengths_host)]
        columns = SequenceSignals((sum_logprob / lengths).tolist(), min_logprob.tolist()) + tuple(v.tolist() for v in first)
        signals = [dict(zip(SIGNALS, values)) for values in zip(*columns)]
        return Outputs(token_ids=self._in_given_order(token_ids), signals=self._in_given_order(signals))


# --- the sweep ---------------------------------------------------------------------------


def _budget_rows(engine: Engine, options: SweepOptions) -> int:
    """How many rows one batch may hold, after what the engine itself holds."""
    cfg, max_new_tokens = engine.cfg, options.max_new_tokens
    element = torch.empty((), dtype=cfg.dtype).element_size()
    wide = torch.empty((), dtype=signal_dtype(cfg.dtype)).element_size()
    per_row = (
        2 * cfg.n_layers * max_new_tokens * engine.n_kv * cfg.d_head * element  # own keys and values
        + cfg.d_vocab * (element + 2 * wide)  # logits, and their log-softmax for the signals
        + (4 * cfg.d_mlp + 8 * cfg.d_model) * element  # activations of one layer
        + cfg.n_heads * (cfg.n_ctx + max_new_tokens) * element * 3  # attention scores and pattern
    )
    memory_budget = parse_memory(options.memory_budget)
    if memory_budget is None:
        if str(cfg.device).startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(torch.device(cfg.device))
            memory_budget = int(free * 0.6)
        else:
            memory_budget = 2 << 30
    rows = max(2, (memory_budget - engine.nbytes) // per_row)
    default_cap = 2048 if str(cfg.device).startswith("cuda") else 512
    return int(min(rows, options.max_batch_rows or default_cap))


def _check(model: HookedTransformer, instances: list, options: SweepOptions, steps: int | None = None) -> None:
    """What can be refused before anything runs: sites the engine cannot write, layers, prompts
    (each with `steps` positions after it: `max_new_tokens`, or when scoring the longest option)."""
    for site in options.sites:
        site_table.engine_write_point(site)
        check_model_site(model, site)
    options.pairs(model.cfg.n_layers)
    if not instances:
        raise XtlError("there are no instances to sweep: give at least one (source, target) pair.")
    seen = set()
    for instance in instances:
        if instance.id in seen:
            raise XtlError(f"instance id {instance.id!r} appears twice: every instance needs its own id.")
        seen.add(instance.id)
        encode(model, instance.source, f"source prompt of {instance.id}", options.prompt_format)
        length = len(encode(model, instance.target, f"target prompt of {instance.id}", options.prompt_format))
        check_context(model, length, steps or options.max_new_tokens, f"target prompt of {instance.id}")


class _Instances:
    """The prepared instances of a sweep's batches: each prepared when a batch first needs it,
    and dropped after the last batch that does."""

    def __init__(self, model: HookedTransformer, instances: list, options: SweepOptions, batches: list[list[Row]]):
        self.model, self.instances, self.options = model, instances, options
        self.last_use = {row.instance_index: number for number, batch in enumerate(batches) for row in batch}
        self.prepared: dict[int, Prepared] = {}

    def prepare(self, rows: list[Row]) -> dict[int, Prepared]:
        for index in dict.fromkeys(row.instance_index for row in rows):
            if index not in self.prepared:
                item = self.instances[index]
                self.prepared[index] = prepare(self.model, item.source, item.target, self.options.sites, self.options.prompt_format)
        return self.prepared

    def finish(self, number: int) -> int:
        """Drop the instances batch `number` was the last to need; how many are finished."""
        for index in [i for i in self.prepared if self.last_use[i] == number]:
            del self.prepared[index]
        return sum(1 for last in self.last_use.values() if last <= number)


def sweep(
    model: HookedTransformer,
    instances: Sequence,
    *,
    sites: Sequence[str] | str = ("ffn",),
    configs: str | Sequence[tuple[int, int]] = "all",
    max_new_tokens: int = 20,
    out: str | os.PathLike | None = None,
    memory_budget: str | int | None = None,
    max_batch_rows: int | None = None,
    progress: bool | None = None,
    prompt_format: str = "raw",
    on_rows: Callable[[int], None] | None = None,
    load_result: bool = True,
    options: SweepOptions | None = None,
    mode: str = "generate",
) -> pd.DataFrame | None:
    """Run every configuration (site x (source_layer, target_layer)) of every
    instance, plus its vanilla generation, and return the results table.

    `instances` are objects with `.id`, `.source`, `.target` (and optionally
    `.benchmark`, `.split`, `.lang`, `.gold`, `.is_correct(text)`), such as
    `xtl.datasets.load(...)` returns. `configs` is "all", a layer spec (see
    `parse_layers`) or a list of (source_layer, target_layer) pairs. With `out`,
    rows are stored in that run directory as they finish, and a rerun resumes.
    `memory_budget` ("auto", bytes, or "8GiB") and `max_batch_rows` bound the
    batch size. `progress`: None shows a bar on a terminal only. `prompt_format`
    "raw" (default) takes the prompts as they are, "chat" wraps each one as a user
    turn of the model's chat template; it is part of the run's settings and binds a resume.
    `mode="score"` scores each instance's options (`xtl.datasets.option_texts`)
    teacher-forced after the prompt instead of generating (`xtl.scoring`: the
    columns it adds; `correct` = the best-scored option is the gold);
    `max_new_tokens` is then unused. A run directory holds one mode.
    `options` (an `xtl.options.SweepOptions`) gives those seven at once, instead.
    For workers sharing a run directory: `on_rows(n)` is called after each stored
    batch of n rows, and `load_result=False` returns None instead of reading the
    whole run back.
    """
    options = _options(options, sites, configs, max_new_tokens, prompt_format, memory_budget, max_batch_rows, mode)
    instances = list(instances)
    scored = _score_options(model, instances, options)  # None in generate mode
    _check(model, instances, options, scored and max(len(ids) for option_ids, _ in scored for ids in option_ids))
    engine = Engine(model)  # refuses a model it cannot compute exactly, before anything is written
    settings = results.sweep_settings(model, options)
    run = results.RunDir.open(out, settings) if out is not None else results.Run(settings)
    configs = [(site, i, j) for site in options.sites for i, j in options.pairs(model.cfg.n_layers)]
    pending = run.pending(instances, configs)
    size = _budget_rows(engine, options) if scored is None else _score_budget_rows(engine, options, scored)
    finished = 0  # instances finished in earlier shares
    # this writer's share of the pending rows, a few instances at a time (writers of one run share them out;
    # `closing`: its leases are given back at once if the sweep stops with an error)
    shares = contextlib.closing(run.shares(instances, pending, size))
    with _Progress(len(pending), len({row.instance_index for row in pending}), progress) as bar, shares as shares:
        for share in shares:
            batches = [share[start : start + size] for start in range(0, len(share), size)]
            prepared = _Instances(model, instances, options, batches)
            for number, rows in enumerate(batches):
                if scored is not None:
                    run.append(_score_records(model, engine, prepared.prepare(rows), rows, scored, run, instances))
                else:
                    outputs = _Batch(engine, prepared.prepare(rows), rows, options.max_new_tokens).run()
                    run.append([
                        run.record(instances[row.instance_index], row, ids, decode(model, ids), **signals)
                        for row, ids, signals in zip(rows, outputs.token_ids, outputs.signals)
                    ])  # fmt: skip
                bar.update(len(rows), finished + prepared.finish(number))
                if on_rows is not None:
                    on_rows(len(rows))
            finished += len(prepared.last_use)
    return run.table() if load_result else None


# --- scoring mode (`xtl.scoring`): the same rows, options forced instead of tokens generated ----------


def _score_options(model: HookedTransformer, instances: list, options: SweepOptions) -> list | None:
    """Per instance: (each option's continuation tokens, the gold's index); None in generate mode."""
    if options.mode != "score":
        return None
    from xtl.scoring import instance_options  # (xtl.scoring builds on this module)

    return [instance_options(model, item, options.prompt_format) for item in instances]


def _score_budget_rows(engine: Engine, options: SweepOptions, scored: list) -> int:
    """`_budget_rows` for forced options: a row forks into one row per option, each as long as the longest."""
    longest = max(len(ids) for option_ids, _ in scored for ids in option_ids)
    most = max(len(option_ids) for option_ids, _ in scored)
    return max(1, _budget_rows(engine, dataclasses.replace(options, max_new_tokens=longest)) // most)


def _score_records(model: HookedTransformer, engine: Engine, prepared: dict, rows: list, scored: list, run, instances: list) -> list[dict]:
    """The records of one batch in scoring mode (`xtl.scoring.ScoreBatch`)."""
    from xtl.scoring import ScoreBatch, Scores

    logprobs = ScoreBatch(engine, prepared, rows, [scored[row.instance_index][0] for row in rows]).run()
    records = []
    for row, values in zip(rows, logprobs):
        option_ids, gold = scored[row.instance_index]
        scores = Scores.of(option_ids, values, gold)
        chosen = list(scores.option_token_ids[scores.option_choice])
        records.append(run.record(instances[row.instance_index], row, chosen, decode(model, chosen), scores=scores))
    return records


def _options(options: SweepOptions | None, *values: Any) -> SweepOptions:
    """`options`, or the options given one by one (not both)."""
    if options is None:
        return SweepOptions(*values)
    if values != tuple(f.default for f in dataclasses.fields(SweepOptions)):
        raise XtlError("give a sweep's options either as options=SweepOptions(...) or one by one, not both.")
    return options


class _Progress:
    """The sweep's bar: configurations, and instances finished per second."""

    def __init__(self, total_rows: int, total_instances: int, enabled: bool | None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_rows, unit="config", desc="sweep", disable=(None if enabled is None else not enabled), dynamic_ncols=True)
        self.total_instances, self.started = total_instances, time.perf_counter()

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()

    def update(self, rows: int, finished_instances: int) -> None:
        elapsed = time.perf_counter() - self.started
        self.bar.set_postfix_str(f"{finished_instances}/{self.total_instances} instances, {finished_instances / elapsed:.2f} inst/s")
        self.bar.update(rows)
