"""Every (source layer, target layer) configuration of an instance, batched.

What `transplant()` recomputes for every configuration is computed once here
(spec, section 6):

- the source prompt's forward pass: once per instance, every read hook kept;
- the target prompt's prefix (all positions but the last): once per instance;
  its rotated keys and values are shared by every row through one matrix
  product per layer, never copied per row;
- the last prompt position below the target layer: the vanilla row of the
  instance computes it, and a configuration starting at layer j takes the
  vanilla row's residual stream and keys/values below j.

A batch holds rows (vanilla, and configurations of one or more instances).
Each row keeps only its own keys and values, from the last prompt position on,
so memory grows with (prompt length) + (rows x new tokens). Rows stop at EOS.
`transplant()` stays the readable definition; the tests compare the two row
for row.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer

from xtl import results
from xtl.errors import XtlError
from xtl.generation import check_max_new_tokens
from xtl.model import (
    SITES,
    as_tokens,
    check_layer_index,
    check_prompt_format,
    check_site,
    decode,
    encode,
    eos_token_ids,
    read_hook,
)

# --- configurations --------------------------------------------------------------


def parse_layers(spec: str | Sequence, n_layers: int) -> list[tuple[int, int]]:
    """The (source_layer, target_layer) pairs a layer spec names.

    "all"          every pair (n_layers^2)
    "0,2,5-7"      every pair among those layers
    "0-31:0"       SOURCES:TARGETS, every source into every target named
    "3:5;7:7"      several SOURCES:TARGETS groups, separated by ';'
    A list of (i, j) pairs is taken as is.
    """
    if not isinstance(spec, str):
        pairs = []
        for pair in spec:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise XtlError(f"configuration {pair!r} is not a (source_layer, target_layer) pair.")
            source = check_layer_index(pair[0], n_layers, "source layer")
            pairs.append((source, check_layer_index(pair[1], n_layers, "target layer")))
        if not pairs:
            raise XtlError("no configurations given: name at least one (source_layer, target_layer) pair.")
        return sorted(set(pairs))
    text = spec.strip().lower()
    if text == "all":
        return [(i, j) for i in range(n_layers) for j in range(n_layers)]
    pairs = set()
    for group in filter(None, (g.strip() for g in text.split(";"))):
        if ":" in group:
            sources, targets = group.split(":", 1)
            pairs.update((i, j) for i in _layer_list(sources, n_layers) for j in _layer_list(targets, n_layers))
        else:
            layers = _layer_list(group, n_layers)
            pairs.update((i, j) for i in layers for j in layers)
    if not pairs:
        raise XtlError(f"layer spec {spec!r} names no configuration: use 'all', '0,2,5-7', or 'SOURCES:TARGETS'.")
    return sorted(pairs)


def _layer_list(text: str, n_layers: int) -> list[int]:
    layers: list[int] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        if item == "all":
            layers.extend(range(n_layers))
            continue
        bounds = item.split("-")
        try:
            numbers = [int(b) for b in bounds]
        except ValueError:
            raise XtlError(
                f"layer {item!r} is not a layer number or range: use numbers 0..{n_layers - 1}, ranges like 2-5, or 'all'."
            ) from None
        if len(numbers) == 1:
            layers.append(check_layer_index(numbers[0], n_layers, "layer"))
        elif len(numbers) == 2 and numbers[0] <= numbers[1]:
            low, high = (check_layer_index(number, n_layers, "layer") for number in numbers)
            layers.extend(range(low, high + 1))
        else:
            raise XtlError(f"layer range {item!r} is not of the form LOW-HIGH with LOW <= HIGH.")
    return layers


# --- rows and prepared instances -------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One generation: vanilla (site None) or one configuration of one instance."""

    instance: int  # index into the sweep's instances
    site: str | None
    source_layer: int | None
    target_layer: int | None


@dataclass
class Prepared:
    """What every row of one instance shares."""

    target_ids: list[int]
    # per layer: rotated keys and values of the target prefix, (kv_head, prefix_pos, d_head)
    prefix_keys: list[torch.Tensor]
    prefix_values: list[torch.Tensor]
    # per site: the source's last-position value at every layer, (n_layers, d_model)
    source_vectors: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.inference_mode()
def prepare(
    model: HookedTransformer, source: str, target: str, sites: Iterable[str], prompt_format: str = "raw"
) -> Prepared:
    """One source pass and one target-prefix pass."""
    n_layers = model.cfg.n_layers
    source_ids = encode(model, source, "source prompt", prompt_format)
    target_ids = encode(model, target, "target prompt", prompt_format)
    read_names = {read_hook(site, layer) for site in sites for layer in range(n_layers)}
    _, source_cache = model.run_with_cache(
        as_tokens(model, source_ids), names_filter=lambda n: n in read_names, stop_at_layer=n_layers
    )
    vectors = {
        site: torch.stack([source_cache[read_hook(site, layer)][0, -1] for layer in range(n_layers)])
        for site in sites
    }
    prefix = target_ids[:-1]
    n_kv = model.cfg.n_key_value_heads or model.cfg.n_heads
    if prefix:
        wanted = {f"blocks.{layer}.attn.{name}" for layer in range(n_layers) for name in ("hook_rot_k", "hook_v")}
        _, prefix_cache = model.run_with_cache(
            as_tokens(model, prefix), names_filter=lambda n: n in wanted, stop_at_layer=n_layers
        )
        # (1, prefix_pos, kv_head, d_head) -> (kv_head, prefix_pos, d_head)
        keys = [prefix_cache[f"blocks.{l}.attn.hook_rot_k"][0].transpose(0, 1).contiguous() for l in range(n_layers)]
        values = [prefix_cache[f"blocks.{l}.attn.hook_v"][0].transpose(0, 1).contiguous() for l in range(n_layers)]
    else:
        empty = torch.zeros(n_kv, 0, model.cfg.d_head, dtype=model.cfg.dtype, device=model.cfg.device)
        keys, values = [empty] * n_layers, [empty] * n_layers
    return Prepared(target_ids=target_ids, prefix_keys=keys, prefix_values=values, source_vectors=vectors)


_SCORE_ELEMENTS = 1 << 24  # attention scores computed at once, per layer

# --- the batched engine ------------------------------------------------------------------


class _Batch:
    """Runs the rows of one batch: rows are ordered by instance, and every
    instance present has its vanilla row first (rows entering at layer j copy
    its state below j)."""

    def __init__(self, model: HookedTransformer, prepared: dict[int, Prepared], rows: list[Row], max_new_tokens: int):
        self.model, self.cfg = model, model.cfg
        self.prepared, self.rows, self.max_new_tokens = prepared, rows, max_new_tokens
        cfg = self.cfg
        self.n_kv = cfg.n_key_value_heads or cfg.n_heads
        self.group = cfg.n_heads // self.n_kv
        device = cfg.device
        self.instance_of = torch.tensor([r.instance for r in rows], device=device)
        self.last_position = torch.tensor([len(prepared[r.instance].target_ids) - 1 for r in rows], device=device)
        vanilla_index = {r.instance: k for k, r in enumerate(rows) if r.site is None}
        self.vanilla_of = torch.tensor([vanilla_index[r.instance] for r in rows], device=device)
        # Each row's own keys/values, from the last prompt position on: (row, slot, kv_head, d_head).
        shape = (len(rows), max_new_tokens, self.n_kv, cfg.d_head)
        self.own_keys = [torch.zeros(shape, dtype=cfg.dtype, device=device) for _ in range(cfg.n_layers)]
        self.own_values = [torch.zeros(shape, dtype=cfg.dtype, device=device) for _ in range(cfg.n_layers)]
        self.w_out = [
            block.attn.W_O.reshape(cfg.n_heads * cfg.d_head, cfg.d_model).T.contiguous() for block in model.blocks
        ]
        # The value each row writes, and where: (row, d_model); NaN-free zeros for vanilla.
        self.write_vectors = torch.stack(
            [
                prepared[r.instance].source_vectors[r.site][r.source_layer]
                if r.site is not None
                else torch.zeros(cfg.d_model, dtype=cfg.dtype, device=device)
                for r in rows
            ]
        )

    # Rows are ordered by instance; `groups` are (instance, slice) runs of the current rows.
    @staticmethod
    def _groups(instance_of: torch.Tensor) -> list[tuple[int, slice]]:
        values, counts = torch.unique_consecutive(instance_of, return_counts=True)
        groups, start = [], 0
        for value, count in zip(values.tolist(), counts.tolist()):
            groups.append((value, slice(start, start + count)))
            start += count
        return groups

    def _rotate(self, attn, x: Float[torch.Tensor, "row head d_head"], positions: Int[torch.Tensor, "row"]):
        """TransformerLens' rotary embedding, with a position per row."""
        rotary_dim = self.cfg.rotary_dim
        x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
        cos = attn.rotary_cos[positions][:, None, :]
        sin = attn.rotary_sin[positions][:, None, :]
        return torch.cat([x_rot * cos + attn.rotate_every_two(x_rot) * sin, x_pass], dim=-1)

    def _layer(
        self,
        layer: int,
        resid_pre: Float[torch.Tensor, "row d_model"],
        rows: torch.Tensor | slice,
        slot: int,
        positions: Int[torch.Tensor, "row"],
    ) -> Float[torch.Tensor, "row d_model"]:
        """Attention output at `layer` for one position per row (the rows `rows` of
        the batch, their keys/values stored at `slot`)."""
        block, cfg = self.model.blocks[layer], self.cfg
        n = resid_pre.shape[0]
        normalized = block.ln1(resid_pre[:, None, :])
        q, k, v = block.attn.calculate_qkv_matrices(normalized, normalized, normalized)
        q = self._rotate(block.attn, q[:, 0], positions)  # (row, head, d_head)
        k = self._rotate(block.attn, k[:, 0], positions)  # (row, kv_head, d_head)
        self.own_keys[layer][rows, slot] = k
        self.own_values[layer][rows, slot] = v[:, 0]
        if slot == 0:
            own_k, own_v = k[:, None], v[:, 0][:, None]  # (row, 1, kv_head, d_head)
        else:
            own_k, own_v = self.own_keys[layer][rows, : slot + 1], self.own_values[layer][rows, : slot + 1]
        instance_of = self.instance_of[rows]
        z = torch.empty(n, self.n_kv, self.group, cfg.d_head, dtype=q.dtype, device=q.device)
        q = q.reshape(n, self.n_kv, self.group, cfg.d_head)
        scale = block.attn.attn_scale
        for instance, group_rows in self._groups(instance_of):
            prepared = self.prepared[instance]
            prefix_k, prefix_v = prepared.prefix_keys[layer], prepared.prefix_values[layer]
            # Rows in chunks, so the score buffer (rows x heads x keys) stays bounded too.
            per_chunk = max(1, _SCORE_ELEMENTS // (cfg.n_heads * (prefix_k.shape[1] + slot + 1)))
            for start in range(group_rows.start, group_rows.stop, per_chunk):
                part = slice(start, min(start + per_chunk, group_rows.stop))
                z[part] = self._attend(q[part], own_k[part], own_v[part], prefix_k, prefix_v, scale)
        return F.linear(z.reshape(n, 1, cfg.n_heads * cfg.d_head), self.w_out[layer], block.attn.b_O)[:, 0]

    def _attend(self, qg, own_k, own_v, prefix_k, prefix_v, scale):
        """z for rows `qg` (r, kv_head, group, d_head): their shared prefix
        (kv_head, prefix_pos, d_head) and their own keys/values (r, slot, kv_head, d_head)."""
        d_head = self.cfg.d_head
        r = qg.shape[0]
        # Shared prefix: all rows are queries of one matrix product per kv head.
        q_by_head = qg.permute(1, 0, 2, 3).reshape(self.n_kv, r * self.group, d_head)
        prefix_scores = (q_by_head @ prefix_k.transpose(1, 2)).reshape(self.n_kv, r, self.group, -1)
        prefix_scores = prefix_scores.permute(1, 0, 2, 3)  # (r, kv_head, group, prefix_pos)
        own_scores = torch.einsum("rkgd,rskd->rkgs", qg, own_k)
        scores = torch.cat([prefix_scores, own_scores], dim=-1) / scale
        pattern = F.softmax(scores, dim=-1)
        n_prefix = prefix_k.shape[1]
        prefix_pattern = pattern[..., :n_prefix].permute(1, 0, 2, 3).reshape(self.n_kv, r * self.group, n_prefix)
        z_prefix = (prefix_pattern @ prefix_v).reshape(self.n_kv, r, self.group, d_head).permute(1, 0, 2, 3)
        return z_prefix + torch.einsum("rkgs,rskd->rkgd", pattern[..., n_prefix:], own_v)

    def _mlp(self, layer: int, resid_mid: Float[torch.Tensor, "row d_model"]) -> Float[torch.Tensor, "row d_model"]:
        block = self.model.blocks[layer]
        return block.apply_mlp(block.ln2(resid_mid[:, None, :]))[:, 0]

    def _logits(self, resid: Float[torch.Tensor, "row d_model"]) -> Float[torch.Tensor, "row vocab"]:
        return self.model.unembed(self.model.ln_final(resid[:, None, :]))[:, 0]

    @torch.inference_mode()
    def run(self) -> list[list[int]]:
        model, cfg, rows = self.model, self.cfg, self.rows
        device = cfg.device
        n_rows = len(rows)
        target_layer = torch.tensor(
            [-1 if r.target_layer is None else r.target_layer for r in rows], device=device
        )
        site_attn = torch.tensor([r.site in ("attn", "attn-paper") for r in rows], device=device)
        site_ffn = torch.tensor([r.site == "ffn" for r in rows], device=device)
        last_tokens = torch.tensor([self.prepared[r.instance].target_ids[-1] for r in rows], device=device)

        # The last prompt position. Vanilla rows run from layer 0; a configuration
        # enters at its target layer with the vanilla row's state.
        resid = torch.zeros(n_rows, cfg.d_model, dtype=cfg.dtype, device=device)
        vanilla = target_layer < 0
        resid[vanilla] = model.embed(last_tokens[vanilla][:, None])[:, 0]
        for layer in range(cfg.n_layers):
            entering = (target_layer == layer).nonzero()[:, 0]
            if len(entering):
                source_rows = self.vanilla_of[entering]
                resid[entering] = resid[source_rows]
                for below in range(layer):
                    self.own_keys[below][entering, 0] = self.own_keys[below][source_rows, 0]
                    self.own_values[below][entering, 0] = self.own_values[below][source_rows, 0]
            active = (target_layer <= layer).nonzero()[:, 0]
            writes_here = target_layer[active] == layer
            attn_out = self._layer(layer, resid[active], active, 0, self.last_position[active])
            attn_write = writes_here & site_attn[active]
            attn_out[attn_write] = self.write_vectors[active][attn_write]
            resid_mid = resid[active] + attn_out
            mlp_out = self._mlp(layer, resid_mid)
            mlp_write = writes_here & site_ffn[active]
            mlp_out[mlp_write] = self.write_vectors[active][mlp_write]
            resid[active] = resid_mid + mlp_out
        logits = self._logits(resid)

        # Greedy decoding, all rows together; a row that hits EOS leaves the batch.
        stop = set(eos_token_ids(model))
        outputs: list[list[int]] = [[] for _ in rows]
        alive = torch.arange(n_rows, device=device)  # original index of each current row
        positions = self.last_position.clone()
        for step in range(self.max_new_tokens):
            next_ids = logits.argmax(dim=-1)
            finished = []
            for index, token in zip(alive.tolist(), next_ids.tolist()):
                outputs[index].append(token)
                finished.append(token in stop)
            if step == self.max_new_tokens - 1 or all(finished):
                break
            if any(finished):
                keep = (~torch.tensor(finished, device=device)).nonzero()[:, 0]
                alive, next_ids, positions = alive[keep], next_ids[keep], positions[keep]
                self._compact(keep)
            positions = positions + 1
            resid = model.embed(next_ids[:, None])[:, 0]
            for layer in range(cfg.n_layers):
                attn_out = self._layer(layer, resid, slice(None), step + 1, positions)
                resid_mid = resid + attn_out
                resid = resid_mid + self._mlp(layer, resid_mid)
            logits = self._logits(resid)
        return outputs

    def _compact(self, keep: torch.Tensor) -> None:
        """Keep only the rows still generating."""
        for layer in range(self.cfg.n_layers):
            self.own_keys[layer] = self.own_keys[layer][keep]
            self.own_values[layer] = self.own_values[layer][keep]
        self.instance_of = self.instance_of[keep]


# --- the sweep ---------------------------------------------------------------------------


def _budget_rows(model: HookedTransformer, max_new_tokens: int, memory_budget: int | None, max_batch_rows: int | None) -> int:
    """How many rows one batch may hold."""
    cfg = model.cfg
    element = torch.empty((), dtype=cfg.dtype).element_size()
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    per_row = (
        2 * cfg.n_layers * max_new_tokens * n_kv * cfg.d_head * element  # own keys and values
        + cfg.d_vocab * 4  # logits
        + (4 * cfg.d_mlp + 8 * cfg.d_model) * element  # activations of one layer
    )
    if memory_budget is None:
        if str(cfg.device).startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(torch.device(cfg.device))
            memory_budget = int(free * 0.6)
        else:
            memory_budget = 2 << 30
    rows = max(2, memory_budget // per_row)
    default_cap = 2048 if str(cfg.device).startswith("cuda") else 512
    return int(min(rows, max_batch_rows or default_cap))


def parse_memory(text: str | int | None) -> int | None:
    """'auto' / None, a number of bytes, or '8GiB', '512MB', ..."""
    if text is None or text == "auto":
        return None
    if isinstance(text, int):
        return text
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
    value = text.strip().lower().replace(" ", "")
    number = value.rstrip("kmgib")
    unit = value[len(number):]
    try:
        amount = float(number)
    except ValueError:
        amount = -1
    if unit not in units or amount <= 0:
        raise XtlError(f"memory budget {text!r} is not understood: use 'auto' or a size like 8GiB, 512MiB, 2GB.")
    return int(amount * units[unit])


def _check_instances(model: HookedTransformer, instances: list, max_new_tokens: int, prompt_format: str) -> None:
    if not instances:
        raise XtlError("there are no instances to sweep: give at least one (source, target) pair.")
    seen = set()
    for instance in instances:
        if instance.id in seen:
            raise XtlError(f"instance id {instance.id!r} appears twice: every instance needs its own id.")
        seen.add(instance.id)
        encode(model, instance.source, f"source prompt of {instance.id}", prompt_format)
        length = len(encode(model, instance.target, f"target prompt of {instance.id}", prompt_format))
        if length + max_new_tokens > model.cfg.n_ctx:
            raise XtlError(
                f"instance {instance.id}: its target prompt ({length} tokens) plus {max_new_tokens} new tokens "
                f"exceeds the model's context of {model.cfg.n_ctx} tokens."
            )


def _plan(pending: list[tuple[int, bool, list[Row]]], max_rows: int) -> list[list[tuple[int, bool, list[Row]]]]:
    """Pack (instance, record vanilla?, configuration rows) into batches of at most
    `max_rows` rows, every batch entry carrying its instance's vanilla row."""
    batches, current, size = [], [], 0
    for instance, vanilla_pending, rows in pending:
        first = True
        while first or rows:
            space = max_rows - size - 1
            if space < 1 or (space < len(rows) and current and space < max_rows // 4):
                batches.append(current)
                current, size = [], 0
                continue
            take, rows = rows[:space], rows[space:]
            current.append((instance, vanilla_pending and first, take))
            size += 1 + len(take)
            first = False
    if current:
        batches.append(current)
    return batches


def sweep(
    model: HookedTransformer,
    instances: Sequence,
    *,
    sites: Sequence[str] | str = ("ffn",),
    configs: str | Sequence[tuple[int, int]] = "all",
    max_new_tokens: int = 20,
    out: str | None = None,
    memory_budget: str | int | None = None,
    max_batch_rows: int | None = None,
    progress: bool | None = None,
    prompt_format: str = "raw",
) -> pd.DataFrame:
    """Run every configuration (site x (source_layer, target_layer)) of every
    instance, plus its vanilla generation, and return the results table.

    `instances` are objects with `.id`, `.source`, `.target` (and optionally
    `.benchmark`, `.split`, `.lang`, `.gold`, `.is_correct(text)`), such as
    `xtl.benchmarks.load(...)` returns. `configs` is "all", a layer spec (see
    `parse_layers`) or a list of (source_layer, target_layer) pairs. With `out`,
    rows are stored in that run directory as they finish, and a rerun resumes.
    `memory_budget` ("auto", bytes, or "8GiB") and `max_batch_rows` bound the
    batch size. `progress`: None shows a bar on a terminal only. `prompt_format`
    "raw" (default) takes the prompts as they are, "chat" wraps each one as a user
    turn of the model's chat template; it is part of the run's settings.
    """
    sites = [sites] if isinstance(sites, str) else list(dict.fromkeys(sites))
    if not sites:
        raise XtlError(f"no site given: choose one or more of {', '.join(SITES)}.")
    for site in sites:
        check_site(site)
    pairs = parse_layers(configs, model.cfg.n_layers)
    check_max_new_tokens(max_new_tokens)
    budget = parse_memory(memory_budget)
    if max_batch_rows is not None and (not isinstance(max_batch_rows, int) or max_batch_rows < 2):
        raise XtlError(f"max_batch_rows must be a whole number of at least 2, not {max_batch_rows!r}.")
    instances = list(instances)
    check_prompt_format(prompt_format)
    _check_instances(model, instances, max_new_tokens, prompt_format)

    info = getattr(model, "xtl", None)
    dtype_name = str(model.cfg.dtype).removeprefix("torch.")
    settings = {
        "model": info.name if info else "model",
        "model_fingerprint": info.fingerprint if info else _fingerprint(model),
        "architecture": info.architecture if info else model.cfg.original_architecture,
        "n_layers": model.cfg.n_layers,
        "dtype": dtype_name,
        "sites": sorted(sites),
        "configs": "all" if pairs == parse_layers("all", model.cfg.n_layers) else [list(p) for p in pairs],
        "max_new_tokens": max_new_tokens,
        "prompt_format": prompt_format,
    }
    run_id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    store = results.RunDir.open(out, {**settings, "run_id": run_id}) if out is not None else None
    done = store.done_keys() if store else set()

    pending = []
    for index, instance in enumerate(instances):
        rows = [
            Row(index, site, i, j)
            for site in sites
            for (i, j) in pairs
            if (instance.id, site, i, j) not in done
        ]
        vanilla_pending = (instance.id, None, None, None) not in done
        if rows or vanilla_pending:
            pending.append((index, vanilla_pending, rows))
    batches = _plan(pending, _budget_rows(model, max_new_tokens, budget, max_batch_rows))
    last_use = {}
    for number, batch in enumerate(batches):
        for instance, _, _ in batch:
            last_use[instance] = number

    from tqdm.auto import tqdm

    total = sum(len(rows) + int(vanilla) for _, vanilla, rows in pending)
    bar = tqdm(
        total=total,
        unit="config",
        desc="sweep",
        disable=(None if progress is None else not progress),
        dynamic_ncols=True,
    )
    started, finished_instances = time.perf_counter(), set()
    records: list[dict] = []
    prepared: dict[int, Prepared] = {}
    try:
        for number, batch in enumerate(batches):
            rows: list[Row] = []
            recorded: list[bool] = []
            for instance, vanilla_pending, config_rows in batch:
                if instance not in prepared:
                    item = instances[instance]
                    prepared[instance] = prepare(model, item.source, item.target, sites, prompt_format)
                rows.append(Row(instance, None, None, None))
                recorded.append(vanilla_pending)
                rows.extend(config_rows)
                recorded.extend([True] * len(config_rows))
            outputs = _Batch(model, prepared, rows, max_new_tokens).run()
            batch_records = [
                _record(settings, run_id, instances[row.instance], row, ids, decode(model, ids))
                for row, ids, keep in zip(rows, outputs, recorded)
                if keep
            ]
            if store is not None and batch_records:
                store.append(batch_records)
            if store is None:
                records.extend(batch_records)
            for instance, _, _ in batch:
                if last_use[instance] == number:
                    prepared.pop(instance, None)
                    finished_instances.add(instance)
            elapsed = time.perf_counter() - started
            bar.set_postfix_str(f"{len(finished_instances)}/{len(pending)} instances, {len(finished_instances) / elapsed:.2f} inst/s")
            bar.update(len(batch_records))
    finally:
        bar.close()
    if store is not None:
        return results.load(store.path)
    return results.to_frame(records)


def _record(settings: dict, run_id: str, instance, row: Row, token_ids: list[int], text: str) -> dict:
    is_correct = getattr(instance, "is_correct", None)
    correct = is_correct(text) if is_correct is not None else None
    return {
        "run_id": run_id,
        "model": settings["model"],
        "model_fingerprint": settings["model_fingerprint"],
        "n_layers": settings["n_layers"],
        "dtype": settings["dtype"],
        "max_new_tokens": settings["max_new_tokens"],
        "benchmark": getattr(instance, "benchmark", "pairs"),
        "split": getattr(instance, "split", "-"),
        "lang": getattr(instance, "lang", "-"),
        "instance_id": instance.id,
        "source": instance.source,
        "target": instance.target,
        "gold": getattr(instance, "gold", None),
        "site": row.site,
        "source_layer": row.source_layer,
        "target_layer": row.target_layer,
        "token_ids": list(token_ids),
        "text": text,
        "correct": correct,
    }


def _fingerprint(model: HookedTransformer) -> str:
    from xtl.model import fingerprint

    return fingerprint(model)
