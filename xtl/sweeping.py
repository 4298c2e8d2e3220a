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
vector where the site table of `xtl.model` says, in the prompt step only. Rows
stop at EOS. The arithmetic lives in `xtl.engine`; this module plans batches,
runs them and keeps records. `transplant()` stays the readable definition; the
tests compare the two row for row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer

from xtl import results
from xtl.checks import check_max_batch_rows, parse_layers, parse_memory
from xtl.engine import WRITE_POINTS, Engine
from xtl.errors import XtlError
from xtl.generation import SIGNALS, check_max_new_tokens, first_token_signals, signal_dtype, token_logprobs
from xtl.model import SITES, as_tokens, check_layer_index, check_prompt_format, check_site, decode, encode, eos_token_ids, read_hook, write_hook

# --- configurations --------------------------------------------------------------


def write_point(site: str, layer: int) -> str:
    """Where in block `layer` the site writes, from the site table (`xtl.model.write_hook`)."""
    hook = write_hook(site, layer)
    point = hook.removeprefix(f"blocks.{layer}.")
    if point not in WRITE_POINTS:
        raise XtlError(
            f"site {site!r} writes at {hook}, which xtl.sweep's batched engine does not implement "
            f"(it writes at {', '.join(WRITE_POINTS)}): run it with xtl.transplant."
        )
    return point


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
        key_hook = "hook_rot_k" if model.cfg.positional_embedding_type == "rotary" else "hook_k"
        wanted = {f"blocks.{layer}.attn.{name}" for layer in range(n_layers) for name in (key_hook, "hook_v")}
        _, prefix_cache = model.run_with_cache(
            as_tokens(model, prefix), names_filter=lambda n: n in wanted, stop_at_layer=n_layers
        )
        # (1, prefix_pos, kv_head, d_head) -> (kv_head, prefix_pos, d_head)
        keys = [prefix_cache[f"blocks.{l}.attn.{key_hook}"][0].transpose(0, 1).contiguous() for l in range(n_layers)]
        values = [prefix_cache[f"blocks.{l}.attn.hook_v"][0].transpose(0, 1).contiguous() for l in range(n_layers)]
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


class _Batch:
    """Runs the rows of one batch. Rows are ordered by instance; each row holds
    its own keys and values, from the last prompt position on."""

    def __init__(self, engine: Engine, prepared: dict[int, Prepared], rows: list[Row], max_new_tokens: int):
        self.engine, self.model, self.cfg = engine, engine.model, engine.cfg
        self.prepared, self.rows, self.max_new_tokens = prepared, rows, max_new_tokens
        cfg, device = self.cfg, self.cfg.device
        self.instance_of = [r.instance for r in rows]
        self.last_position = torch.tensor([len(prepared[r.instance].target_ids) - 1 for r in rows], device=device)
        # Each row's own keys/values: (row, kv_head, slot, d_head), the layout the products read.
        shape = (len(rows), engine.n_kv, max_new_tokens, cfg.d_head)
        # (slots are written before they are read)
        self.own_keys = [torch.empty(shape, dtype=cfg.dtype, device=device) for _ in range(cfg.n_layers)]
        self.own_values = [torch.empty(shape, dtype=cfg.dtype, device=device) for _ in range(cfg.n_layers)]
        self.writes = self._write_plan()

    def _write_plan(self) -> dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """layer -> write point -> (which rows write there, the vectors they write),
        from the site table (`xtl.model.write_hook`)."""
        cfg, device = self.cfg, self.cfg.device
        plan: dict[int, dict[str, list[int]]] = {}
        for index, row in enumerate(self.rows):
            if row.site is not None:
                point = write_point(row.site, row.target_layer)
                plan.setdefault(row.target_layer, {}).setdefault(point, []).append(index)
        writes: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        for layer, points in plan.items():
            for point, indices in points.items():
                mask = torch.zeros(len(self.rows), dtype=torch.bool, device=device)
                mask[indices] = True
                vectors = torch.zeros(len(self.rows), cfg.d_model, dtype=cfg.dtype, device=device)
                for index in indices:
                    row = self.rows[index]
                    vectors[index] = self.prepared[row.instance].source_vectors[row.site][row.source_layer]
                writes.setdefault(layer, {})[point] = (mask, vectors)
        return writes

    def _groups(self) -> list[tuple[int, slice]]:
        """(instance, rows) runs of the current rows."""
        groups, start = [], 0
        for index in range(1, len(self.instance_of) + 1):
            if index == len(self.instance_of) or self.instance_of[index] != self.instance_of[start]:
                groups.append((self.instance_of[start], slice(start, index)))
                start = index
        return groups

    def _step(
        self,
        resid: Float[torch.Tensor, "row d_model"],
        slot: int,
        positions: Int[torch.Tensor, "row"],
        writes: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]],
    ) -> Float[torch.Tensor, "row vocab"]:
        """One position for every row (its keys/values stored at `slot`), all layers."""
        engine, cfg = self.engine, self.cfg
        groups = self._groups()

        def write(point: str, value: torch.Tensor, here: dict) -> torch.Tensor:
            if point not in here:
                return value
            mask, vectors = here[point]
            return torch.where(mask[:, None], vectors, value)

        for layer in range(cfg.n_layers):
            here = writes.get(layer, {})
            resid = write("hook_resid_pre", resid, here)
            q, k, v = engine.qkv(layer, resid)
            q, k = engine.rotate(layer, q, positions), engine.rotate(layer, k, positions)
            own_keys, own_values = self.own_keys[layer], self.own_values[layer]
            own_keys[:, :, slot] = k
            own_values[:, :, slot] = v
            z = torch.empty(resid.shape[0], cfg.n_heads * cfg.d_head, dtype=cfg.dtype, device=cfg.device)
            for instance, rows in groups:
                prepared = self.prepared[instance]
                z[rows] = engine.attend(
                    layer, q[rows], prepared.prefix_keys[layer], prepared.prefix_values[layer],
                    own_keys[rows, :, : slot + 1], own_values[rows, :, : slot + 1],
                    position=len(prepared.target_ids) - 1 + slot,
                )
            attn_out = write("hook_attn_out", engine.attn_out(layer, z), here)
            resid_mid = write("hook_resid_mid", resid + attn_out, here)
            mlp_out = write("hook_mlp_out", engine.mlp(layer, resid_mid), here)
            resid = write("hook_resid_post", resid_mid + mlp_out, here)
        return engine.logits(resid)

    @torch.inference_mode()
    def run(self) -> Outputs:
        cfg, device, n_rows = self.cfg, self.cfg.device, len(self.rows)
        # The last prompt position, every row from layer 0, each writing at its target layer.
        last_tokens = torch.tensor([self.prepared[r.instance].target_ids[-1] for r in self.rows], device=device)
        positions = self.last_position
        logits = self._step(self.engine.embed(last_tokens), 0, positions, self.writes)

        # Greedy decoding; tokens and signals stay on the device, rows at EOS leave the batch.
        stop = torch.tensor(sorted(eos_token_ids(self.model)), dtype=torch.long, device=device)
        tokens = torch.zeros(n_rows, self.max_new_tokens, dtype=torch.long, device=device)
        lengths = torch.zeros(n_rows, dtype=torch.long, device=device)
        wide = signal_dtype(logits.dtype)
        sum_logprob = torch.zeros(n_rows, dtype=wide, device=device)
        min_logprob = torch.full((n_rows,), float("inf"), dtype=wide, device=device)
        alive = torch.arange(n_rows, device=device)  # original index of each current row
        next_ids = logits.argmax(dim=-1)
        first = first_token_signals(logits, next_ids)
        for step in range(self.max_new_tokens):
            if step:
                next_ids = logits.argmax(dim=-1)
            logprob = token_logprobs(logits, next_ids)
            tokens[alive, step] = next_ids
            lengths[alive] += 1
            sum_logprob[alive] += logprob
            min_logprob[alive] = torch.minimum(min_logprob[alive], logprob)
            if step == self.max_new_tokens - 1:
                break
            finished = torch.isin(next_ids, stop)
            n_finished = int(finished.sum())  # the step's one host sync
            if n_finished == len(next_ids):
                break
            if n_finished:
                keep = (~finished).nonzero()[:, 0]
                kept = keep.tolist()
                alive, next_ids, positions = alive[keep], next_ids[keep], positions[keep]
                self.instance_of = [self.instance_of[k] for k in kept]
                for layer in range(cfg.n_layers):
                    self.own_keys[layer] = self.own_keys[layer][keep]
                    self.own_values[layer] = self.own_values[layer][keep]
            positions = positions + 1
            logits = self._step(self.engine.embed(next_ids), step + 1, positions, {})

        lengths_host = lengths.tolist()
        token_ids = [row[:n] for row, n in zip(tokens.tolist(), lengths_host)]
        mean = (sum_logprob / lengths).tolist()
        columns = {
            "mean_logprob": mean,
            "min_logprob": min_logprob.tolist(),
            "first_logprob": first[0].tolist(),
            "first_margin": first[1].tolist(),
            "first_entropy": first[2].tolist(),
        }
        signals = [{name: values[k] for name, values in columns.items()} for k in range(n_rows)]
        return Outputs(token_ids=token_ids, signals=signals)


# --- the sweep ---------------------------------------------------------------------------


def _budget_rows(engine: Engine, max_new_tokens: int, memory_budget: int | None, max_batch_rows: int | None) -> int:
    """How many rows one batch may hold, after what the engine itself holds."""
    cfg = engine.cfg
    element = torch.empty((), dtype=cfg.dtype).element_size()
    wide = torch.empty((), dtype=signal_dtype(cfg.dtype)).element_size()
    per_row = (
        2 * cfg.n_layers * max_new_tokens * engine.n_kv * cfg.d_head * element  # own keys and values
        + cfg.d_vocab * (element + 2 * wide)  # logits, and their log-softmax for the signals
        + (4 * cfg.d_mlp + 8 * cfg.d_model) * element  # activations of one layer
        + cfg.n_heads * (cfg.n_ctx + max_new_tokens) * element * 3  # attention scores and pattern
    )
    if memory_budget is None:
        if str(cfg.device).startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(torch.device(cfg.device))
            memory_budget = int(free * 0.6)
        else:
            memory_budget = 2 << 30
    rows = max(2, (memory_budget - engine.nbytes) // per_row)
    default_cap = 2048 if str(cfg.device).startswith("cuda") else 512
    return int(min(rows, max_batch_rows or default_cap))


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


def _plan(pending: list[tuple[int, bool, list[Row]]], max_rows: int) -> list[list[tuple[Row, bool]]]:
    """Pack (instance, record vanilla?, configuration rows) into batches of at
    most `max_rows` rows, in instance order: (row, record it?) pairs. An
    instance whose vanilla row is already stored needs none (rows do not
    depend on each other)."""
    flat = []
    for instance, vanilla_pending, rows in pending:
        if vanilla_pending:
            flat.append((Row(instance, None, None, None), True))
        flat.extend((row, True) for row in rows)
    return [flat[start : start + max_rows] for start in range(0, len(flat), max_rows)]


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
    on_rows: Callable[[int], None] | None = None,
    load_result: bool = True,
) -> pd.DataFrame | None:
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
    turn of the model's chat template; it is part of the run's settings and binds a resume.
    For workers sharing a run directory: `on_rows(n)` is called after each stored
    batch of n rows, and `load_result=False` returns None instead of reading the
    whole run back.
    """
    sites = [sites] if isinstance(sites, str) else list(dict.fromkeys(sites))
    if not sites:
        raise XtlError(f"no site given: choose one or more of {', '.join(SITES)}.")
    for site in sites:
        check_site(site)
        write_point(site, 0)
    pairs = parse_layers(configs, model.cfg.n_layers)
    check_max_new_tokens(max_new_tokens)
    budget = parse_memory(memory_budget)
    max_batch_rows = check_max_batch_rows(max_batch_rows)
    instances = list(instances)
    check_prompt_format(prompt_format)
    _check_instances(model, instances, max_new_tokens, prompt_format)
    engine = Engine(model)  # refuses a model it cannot compute exactly, before anything is written

    info = getattr(model, "xtl", None)
    settings = results.Settings(
        model=info.name if info else "model",
        model_fingerprint=info.fingerprint if info else _fingerprint(model),
        architecture=info.architecture if info else model.cfg.original_architecture,
        n_layers=model.cfg.n_layers,
        dtype=str(model.cfg.dtype).removeprefix("torch."),
        sites=tuple(sites),
        configs="all" if pairs == parse_layers("all", model.cfg.n_layers) else tuple(pairs),
        max_new_tokens=max_new_tokens,
        prompt_format=prompt_format,
    )
    fingerprints = [results.instance_fingerprint(item, settings.prompt_format) for item in instances]
    store = results.RunDir.open(out, settings) if out is not None else None
    settings, run_id = (store.settings, store.run_id) if store else (settings, settings.run_id)
    done = store.done() if store else {}
    if done:
        stored = {key[0]: fp for key, fp in done.items() if fp is not None}
        for item, fp in zip(instances, fingerprints):
            if stored.get(item.id, fp) != fp:
                raise XtlError(
                    f"instance {item.id!r} is already in {str(store.path)!r} with other content (its source, target, "
                    "gold, scorer or prompt format changed): sweep the changed instances into another --out, or give them new ids."
                )

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
    batches = _plan(pending, _budget_rows(engine, max_new_tokens, budget, max_batch_rows))
    last_use = {}
    for number, batch in enumerate(batches):
        for row, _ in batch:
            last_use[row.instance] = number

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
            rows = [row for row, _ in batch]
            for row in rows:
                if row.instance not in prepared:
                    item = instances[row.instance]
                    prepared[row.instance] = prepare(model, item.source, item.target, sites, prompt_format)
            outputs = _Batch(engine, prepared, rows, max_new_tokens).run()
            batch_records = [
                results.record(
                    settings, run_id, instances[row.instance], row.site, row.source_layer, row.target_layer,
                    ids, decode(model, ids), fingerprint=fingerprints[row.instance], **signals,
                )
                for (row, keep), ids, signals in zip(batch, outputs.token_ids, outputs.signals)
                if keep
            ]
            if store is not None and batch_records:
                store.append(batch_records)
            if store is None:
                records.extend(batch_records)
            for instance in {row.instance for row in rows}:
                if last_use[instance] == number:
                    prepared.pop(instance, None)
                    finished_instances.add(instance)
            elapsed = time.perf_counter() - started
            bar.set_postfix_str(f"{len(finished_instances)}/{len(pending)} instances, {len(finished_instances) / elapsed:.2f} inst/s")
            bar.update(len(batch_records))
            if on_rows is not None:
                on_rows(len(batch_records))
    finally:
        bar.close()
    if store is not None:
        return results.load(store.path) if load_result else None
    return results.to_frame(records)


def _fingerprint(model: HookedTransformer) -> str:
    from xtl.model import fingerprint

    return fingerprint(model)
