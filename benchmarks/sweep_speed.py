"""Sweep speed: `xtl.sweep` against the two things a user would do without it,
side by side in one run, on the same weights:

(a) the naive loop: one `xtl.transplant()` per configuration (timed on a sample
    of configurations, its rows checked identical to the sweep's);
(b) batched Hugging Face generation: the weights as a `LlamaForCausalLM`, every
    configuration a row with its full prompt (padded left, attention mask),
    forward hooks that write the source vector at the row's target layer in the
    prompt pass only, greedy `generate`, rows batched; its rows are compared
    with xtl's.

On the CPU in float32 it also times (b') the same batched HF path with its
linear layers on oneDNN, the kernel the sweep's products run on there
(`xtl.engine.ONEDNN`), to show how much of the ratio is the kernel and how
much the work the sweep does not do.

It also times (c') the sweep with its work sharing off (`xtl.sweeping.SHARE_WORK
= False`: every row computes every layer; rows with the same tokens so far
otherwise share their first layers) and checks that its rows and signals are
the same bit for bit. (c), (c'), (b) and (b') are timed in `--repeats` rounds, one
after the other in each round, so that a round's ratio compares runs seconds
apart (the speed of a shared machine drifts by 10-20% over minutes); the
fastest of each is reported, with every round's ratio. Timings run without the
memory sampler; peak memory comes from one more run of each.

It reports seconds per instance, configurations per second, peak memory, the
ratios, the FLOPs of (b), (c') and (c) (computed from the shapes; for (c), less
the row-layers it shared) with the rate each ran at, and a floor for (c'): its
FLOPs at the fastest matrix-product throughput measured on this machine (of
PyTorch's `@` and, on the CPU, oneDNN). Then the bf16
numerics (rows and first tokens of a bf16 sweep equal to bf16 `transplant()`
on sampled configurations) and the peak memory against prompt length.

Default workload (CPU): a Llama-architecture model with random weights, 8 layers,
d_model 512, vocabulary 32000; the first 5 XNLI Swahili pilot instances (English
source); site ffn; all 64 configurations; 20 new tokens.

    python benchmarks/sweep_speed.py                      # CPU default, prints a report
    python benchmarks/sweep_speed.py --out benchmarks/results/2026-11-27-cpu-sweep-speed.md
    python benchmarks/sweep_speed.py --preset 7b --device cuda

With `--preset 7b` (32 layers, d_model 4096, bf16, 1 instance, 1024 configurations)
the random model is built directly on the device. The data comes from ../shared
(or --data-dir); the tokenizer is tiny-llama's from ../shared/models.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XTL_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

import xtl  # noqa: E402
import xtl.engine  # noqa: E402
from xtl import datasets  # noqa: E402
from xtl import sweeping  # noqa: E402
from xtl.engine import Engine  # noqa: E402
from xtl.signals import SIGNALS  # noqa: E402
from xtl.model import ModelInfo, fingerprint, hooked_config, new_hooked_transformer, use_hf_rotary_tables  # noqa: E402

import _reporting  # noqa: E402
from _reporting import Report  # noqa: E402

PRESETS = {
    "cpu": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, num_key_value_heads=8,
                intermediate_size=1376, vocab_size=32000, dtype="float32", instances=5,
                hf_batch_rows=32),
    "7b": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
               intermediate_size=11008, vocab_size=32000, dtype="bfloat16", instances=1,
               hf_batch_rows=256),
}


def build_model(preset: str, device: str, seed: int = 0, dtype: str | None = None):
    """A Llama-shaped HookedTransformer with random weights (cost does not depend on
    their values), built on `device`."""
    from transformers import AutoTokenizer

    spec = PRESETS[preset]
    config = {"architectures": ["LlamaForCausalLM"], "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
              "max_position_embeddings": 4096, "hidden_act": "silu",
              **{k: v for k, v in spec.items() if k not in ("dtype", "instances", "hf_batch_rows")}}
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype or spec["dtype"]]
    cfg = hooked_config(config, dtype=dtype, device=device, n_ctx=2048)
    torch.manual_seed(seed)
    with torch.device(device):
        model = new_hooked_transformer(cfg)
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith(("ln1.w", "ln2.w", "ln_final.w")):
                    parameter.fill_(1.0)
                elif name.rsplit(".", 1)[-1].lstrip("_").startswith("W_"):
                    parameter.normal_(0.0, 0.02, generator=generator)
                else:
                    parameter.zero_()
    use_hf_rotary_tables(model, config)
    model.to(device, print_details=False).eval()
    model.tokenizer = AutoTokenizer.from_pretrained(SHARED / "models" / "tiny-llama", trust_remote_code=False)
    model.xtl = ModelInfo(name=f"random-llama-{preset}", path=None, architecture="LlamaForCausalLM",
                          fingerprint=fingerprint(model), eos_token_ids=(1,))
    return model


class PeakMemory:
    """Peak memory over a block: CUDA allocator peak, or sampled process RSS on CPU
    (reported as the rise above the RSS at the start of the block)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            _release_freed_memory()
            self.start = self.peak = _rss()
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.rise = torch.cuda.max_memory_allocated() - self.start
        else:
            self.running = False
            self.thread.join()
            self.rise = max(self.peak, _rss()) - self.start


def timed(fn, device: str):
    """(seconds of one call of fn, fn's result). Timed without the memory
    sampler, whose thread would compete for the GIL."""
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def _release_freed_memory() -> None:
    """Hand the memory freed so far back to the OS (glibc's malloc_trim), so that
    the RSS rises with what the next block allocates, not only with what it
    allocates beyond memory an earlier block freed but the process kept."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def hf_model(model):
    """The same weights as a Hugging Face LlamaForCausalLM, on the same device."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.cfg
    config = LlamaConfig(
        vocab_size=cfg.d_vocab, hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_key_value_heads or cfg.n_heads, head_dim=cfg.d_head,
        max_position_embeddings=cfg.n_ctx, rms_norm_eps=cfg.eps, rope_theta=cfg.rotary_base, hidden_act=cfg.act_fn,
        tie_word_embeddings=False, bos_token_id=model.tokenizer.bos_token_id, eos_token_id=list(model.xtl.eos_token_ids),
        pad_token_id=model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0,
    )
    with torch.device("meta"):
        hf = LlamaForCausalLM(config)
    heads = lambda w: w.permute(0, 2, 1).reshape(-1, cfg.d_model)  # (head, d_model, d_head) -> (head*d_head, d_model)
    state = {"model.embed_tokens.weight": model.embed.W_E, "lm_head.weight": model.unembed.W_U.T,
             "model.norm.weight": model.ln_final.w}
    for i, block in enumerate(model.blocks):
        attn, mlp, p = block.attn, block.mlp, f"model.layers.{i}."
        grouped = cfg.n_key_value_heads is not None
        state.update({
            p + "self_attn.q_proj.weight": heads(attn.W_Q),
            p + "self_attn.k_proj.weight": heads(attn._W_K if grouped else attn.W_K),
            p + "self_attn.v_proj.weight": heads(attn._W_V if grouped else attn.W_V),
            p + "self_attn.o_proj.weight": attn.W_O.reshape(-1, cfg.d_model).T,
            p + "mlp.gate_proj.weight": mlp.W_gate.T, p + "mlp.up_proj.weight": mlp.W_in.T,
            p + "mlp.down_proj.weight": mlp.W_out.T,
            p + "input_layernorm.weight": block.ln1.w, p + "post_attention_layernorm.weight": block.ln2.w,
        })
    hf.load_state_dict({k: v.detach().contiguous() for k, v in state.items()}, assign=True)
    with torch.device(cfg.device):
        hf.model.rotary_emb = type(hf.model.rotary_emb)(config=config)
    return hf.to(cfg.device).eval()


@torch.inference_mode()
def hf_batched(hf, tokenizer, instances, configs, max_new_tokens: int, batch_rows: int, eos: tuple[int, ...]):
    """What a user writes without xtl: every configuration a row with its full
    prompt, a forward hook per layer writing the source vector at the row's target
    layer (last prompt position, prompt pass only), greedy generate, rows batched."""
    layers = hf.model.layers
    device = hf.device
    rows = {}
    for item in instances:
        # the source vectors: mlp output at the last source position, every layer
        captured = {}
        handles = [layer.mlp.register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o[0, -1].clone()))
                   for n, layer in enumerate(layers)]
        hf(torch.tensor([tokenizer(item.source).input_ids], device=device))
        for handle in handles:
            handle.remove()
        target_ids = tokenizer(item.target).input_ids
        for start in range(0, len(configs), batch_rows):
            chunk = configs[start:start + batch_rows]
            n = len(chunk)
            # pad left (all rows of one instance share a length here, as a user's batch would)
            input_ids = torch.tensor([target_ids] * n, device=device)
            attention_mask = torch.ones_like(input_ids)
            plan = {}
            for r, (i, j) in enumerate(chunk):
                plan.setdefault(j, ([], []))
                plan[j][0].append(r)
                plan[j][1].append(captured[i])
            handles = []
            for j, (row_index, vectors) in plan.items():
                index = torch.tensor(row_index, device=device)
                stacked = torch.stack(vectors)

                def write(module, inputs, output, index=index, stacked=stacked):
                    if output.shape[1] > 1:  # the prompt pass only
                        output = output.clone()
                        output[index, -1] = stacked.to(output.dtype)
                        return output
                handles.append(layers[j].mlp.register_forward_hook(write))
            try:
                out = hf.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                  do_sample=False, eos_token_id=list(eos), pad_token_id=hf.config.pad_token_id)
            finally:
                for handle in handles:
                    handle.remove()
            for (i, j), generated in zip(chunk, out[:, len(target_ids):].tolist()):
                ids = []
                for token in generated:
                    ids.append(token)
                    if token in eos:
                        break
                rows[(item.id, i, j)] = ids
    return rows


def matmul_throughput(dtype, device: str) -> dict[str, float]:
    """FLOP/s of a large matrix product in `dtype` on this machine (best of 3),
    by kernel: PyTorch's `@`, and on the CPU in float32 also oneDNN (the
    engine's kernel there, `xtl.engine.ONEDNN`)."""
    n = 2048
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    kernels = {"@": lambda: a @ b}
    if xtl.engine.onednn_for(dtype, device):
        kernels["oneDNN"] = lambda: xtl.engine.onednn_product(a, b)
    rates = {}
    for name, product in kernels.items():
        best = float("inf")
        for _ in range(3):
            _sync(device)
            start = time.perf_counter()
            product()
            _sync(device)
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * n**3 / best
    return rates


def _per_layer(cfg) -> int:
    """Multiply-adds of one position through one block's projections."""
    kv = cfg.n_key_value_heads or cfg.n_heads
    return cfg.d_model * (cfg.n_heads * cfg.d_head + 2 * kv * cfg.d_head) + cfg.n_heads * cfg.d_head * cfg.d_model \
        + (3 if cfg.gated_mlp else 2) * cfg.d_model * cfg.d_mlp


def _position_flops(cfg, context: int, logits: bool = True) -> float:
    """FLOPs of one position through all layers (projections, attention over
    `context` positions) and, with `logits`, the unembedding."""
    attention = 2 * 2 * cfg.n_heads * cfg.d_head * context * cfg.n_layers
    return 2 * _per_layer(cfg) * cfg.n_layers + attention + (2 * cfg.d_model * cfg.d_vocab if logits else 0)


def sweep_flops(model, prompt_lengths: list[int], source_lengths: list[int], rows_per_instance: int, new_tokens: int) -> float:
    """The FLOPs a sweep cannot avoid: the source and target-prefix passes once per
    instance (projections), then every row's positions (prompt's last + new tokens)
    through all layers, attention over its context, and the logits."""
    cfg = model.cfg
    total = 0.0
    for prompt, source in zip(prompt_lengths, source_lengths):
        total += 2 * _per_layer(cfg) * cfg.n_layers * (prompt - 1 + source)
        total += rows_per_instance * sum(_position_flops(cfg, prompt + step) for step in range(new_tokens))
    return total


def hf_flops(model, prompt_lengths: list[int], source_lengths: list[int], rows_per_instance: int, new_tokens: int) -> float:
    """The FLOPs of the batched HF baseline: per instance a source pass (with its
    logits at every position), then every row's whole prompt (causal attention),
    its logits at the last position, and the new tokens."""
    cfg = model.cfg
    total = 0.0
    for prompt, source in zip(prompt_lengths, source_lengths):
        total += sum(_position_flops(cfg, position + 1) for position in range(source))
        total += rows_per_instance * sum(_position_flops(cfg, position + 1, logits=position == prompt - 1)
                                         for position in range(prompt))
        total += rows_per_instance * sum(_position_flops(cfg, prompt + step) for step in range(1, new_tokens))
    return total


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def run(args) -> str:
    device = args.device
    spec = PRESETS[args.preset]
    model = build_model(args.preset, device)
    instances = datasets.load("xnli", "sw", split="sample", data_dir=args.data_dir)[: args.instances or spec["instances"]]
    n = model.cfg.n_layers
    configs = [(i, j) for i in range(n) for j in range(n)]
    dtype_name = str(model.cfg.dtype).removeprefix("torch.")

    say = Report(f"Sweep speed: xtl.sweep vs batched Hugging Face generate vs the naive loop ({args.preset})")
    say.header(gpu=torch.cuda.get_device_name(0) if device.startswith("cuda") else "none")
    say(f"- model: Llama architecture, random weights, {n} layers, d_model {model.cfg.d_model}, "
        f"d_mlp {model.cfg.d_mlp}, vocab {model.cfg.d_vocab}, {dtype_name}, device {device}")
    lengths = [len(xtl.model.encode(model, i.target)) for i in instances]
    source_lengths = [len(xtl.model.encode(model, i.source)) for i in instances]
    say(f"- workload: {len(instances)} XNLI sw pilot instances (English source; target prompts of {min(lengths)}-{max(lengths)} tokens), "
        f"site ffn, {len(configs)} configurations each + vanilla, {args.max_new_tokens} new tokens")
    say()
    total_configs = len(instances) * len(configs)

    # xtl.sweep; warm-up on one configuration first. Engine.qkv is wrapped to count the
    # row-layers computed (rows with the same tokens so far share their first layers).
    xtl.sweep(model, instances[:1], sites=["ffn"], configs=[(0, 0)], max_new_tokens=2, progress=False)
    _sync(device)
    computed = []
    qkv = Engine.qkv
    Engine.qkv = lambda self, layer, x: (computed.append(x.shape[0]), qkv(self, layer, x))[1]
    run_sweep = lambda: xtl.sweep(model, instances, sites=["ffn"], configs="all", max_new_tokens=args.max_new_tokens,
                                  max_batch_rows=args.max_batch_rows, progress=False)
    # (b) batched Hugging Face generate with hooks, same weights
    hf = hf_model(model)
    hf_rows_per_batch = args.hf_batch_rows or spec["hf_batch_rows"]
    hf_batched(hf, model.tokenizer, instances[:1], configs[:2], 2, hf_rows_per_batch, model.xtl.eos_token_ids)  # warm-up
    run_hf = lambda hf=hf: hf_batched(hf, model.tokenizer, instances, configs, args.max_new_tokens, hf_rows_per_batch,
                                model.xtl.eos_token_ids)
    # (b') the same, its nn.Linear layers on oneDNN as the sweep's products (CPU, float32):
    # how much of the ratio is the kernel, and how much the work the sweep does not do.
    onednn_too = xtl.engine.onednn_for(model.cfg.dtype, device)

    def run_hf_onednn(hf=hf):
        with xtl.engine.onednn_linear(model):
            return hf_batched(hf, model.tokenizer, instances, configs, args.max_new_tokens, hf_rows_per_batch,
                              model.xtl.eos_token_ids)

    # Rounds: (c), (c') and (b) one after the other, so that each round's ratio compares
    # runs a few seconds apart (this machine's speed drifts); the fastest of each is reported.
    rounds, frames, work = [], {}, {}
    try:
        for _ in range(args.repeats):
            seconds = {}
            for share in (True, False):
                sweeping.SHARE_WORK = share
                computed.clear()
                seconds[share], frames[share] = timed(run_sweep, device)
                work[share] = sum(computed)
            sweeping.SHARE_WORK = True
            seconds["hf"], hf_rows = timed(run_hf, device)
            if onednn_too:
                seconds["hf_onednn"], hf_onednn_rows = timed(run_hf_onednn, device)
            rounds.append(seconds)
        with PeakMemory(device) as sweep_memory:
            run_sweep()
    finally:
        Engine.qkv, sweeping.SHARE_WORK = qkv, True
    with PeakMemory(device) as hf_memory:
        run_hf()
    del hf, run_hf, run_hf_onednn
    sweep_seconds, full_seconds, hf_seconds = (min(r[key] for r in rounds) for key in (True, False, "hf"))
    frame, full_frame = frames[True], frames[False]
    shared_work, full_work = work[True], work[False]
    rows = {(r.instance_id, r.source_layer, r.target_layer): list(r.token_ids)
            for r in frame[frame.site.notna()].astype(object).itertuples()}
    columns = ["instance_id", "site", "source_layer", "target_layer", "token_ids", *SIGNALS]
    full_same = frame[columns].astype(object).values.tolist() == full_frame[columns].astype(object).values.tolist()
    hf_agree = sum(hf_rows[key] == rows[key] for key in hf_rows)
    if onednn_too:
        hf_onednn_seconds = min(r["hf_onednn"] for r in rounds)
        hf_onednn_agree = sum(hf_onednn_rows[key] == rows[key] for key in hf_onednn_rows)
    hf_first = sum(hf_rows[key][:1] == rows[key][:1] for key in hf_rows)

    # (a) the naive loop: one xtl.transplant() per sampled configuration
    sample = configs if args.naive_sample is None else random.Random(0).sample(configs, args.naive_sample)
    mismatches = 0
    start = time.perf_counter()
    for item in instances:
        for i, j in sample:
            answer = xtl.transplant(model, item.source, item.target, site="ffn", source_layer=i, target_layer=j,
                                    max_new_tokens=args.max_new_tokens)
            mismatches += list(answer.token_ids) != rows[(item.id, i, j)]
    _sync(device)
    naive_seconds = time.perf_counter() - start
    naive_configs = len(instances) * len(sample)
    naive_full = naive_seconds * total_configs / naive_configs

    rates = matmul_throughput(model.cfg.dtype, device)
    throughput = max(rates.values())
    rates_text = ", ".join(f"{name} {rate / 1e9:.0f}" for name, rate in rates.items())
    flops = sweep_flops(model, lengths, source_lengths, len(configs) + 1, args.max_new_tokens)
    floor = flops / throughput
    baseline_flops = hf_flops(model, lengths, source_lengths, len(configs), args.max_new_tokens)

    per = lambda seconds: seconds / len(instances)
    say("| path | configurations | seconds | seconds / instance | configurations / s | peak memory (rise) |")
    say("| --- | ---: | ---: | ---: | ---: | ---: |")
    estimated = "" if naive_configs == total_configs else f" (estimated from {naive_configs} sampled)"
    say(f"| (a) naive loop, xtl.transplant() each | {total_configs} | {naive_full:.2f}{estimated} | {per(naive_full):.2f} | {total_configs / naive_full:.2f} | |")
    say(f"| (b) batched HF generate + hooks ({hf_rows_per_batch} rows a batch) | {total_configs} | {hf_seconds:.2f} | {per(hf_seconds):.2f} | {total_configs / hf_seconds:.2f} | {mib(hf_memory.rise)} |")
    if onednn_too:
        say(f"| (b') the same, its linear layers on oneDNN like the sweep's products | {total_configs} | {hf_onednn_seconds:.2f} | {per(hf_onednn_seconds):.2f} | {total_configs / hf_onednn_seconds:.2f} | |")
    say(f"| (c) xtl.sweep | {total_configs} (+{len(instances)} vanilla) | {sweep_seconds:.2f} | {per(sweep_seconds):.2f} | {total_configs / sweep_seconds:.2f} | {mib(sweep_memory.rise)} |")
    say(f"| (c') xtl.sweep computing every row in full (`sweeping.SHARE_WORK = False`) | {total_configs} (+{len(instances)} vanilla) | {full_seconds:.2f} | {per(full_seconds):.2f} | {total_configs / full_seconds:.2f} | |")
    say(f"| floor of (c'): {flops / 1e12:.3f} TFLOP at {throughput / 1e9:.0f} GFLOP/s (the fastest measured {dtype_name} matrix product) | | {floor:.2f} | {per(floor):.2f} | | |")
    say()
    say(f"**xtl.sweep vs batched HF: {hf_seconds / sweep_seconds:.1f}x faster**; vs the naive loop: {naive_full / sweep_seconds:.1f}x; "
        f"(c') vs batched HF: {hf_seconds / full_seconds:.1f}x; (c') time / its floor: {full_seconds / floor:.2f}x"
        + (f"; vs (b'), HF on the sweep's kernel: {hf_onednn_seconds / sweep_seconds:.1f}x" if onednn_too else ""))
    # (c) skips the row-layers that rows of a group share (their projections and attention)
    decode_layers = len(instances) * (len(configs) + 1) * args.max_new_tokens * 2 * _per_layer(model.cfg) * n
    shared_flops = flops - (1 - shared_work / full_work) * decode_layers
    say(f"- work: (b) computes {baseline_flops / 1e12:.3f} TFLOP, {baseline_flops / flops:.1f}x the FLOPs of (c') "
        f"(every row's whole prompt, where the sweep passes each prompt once) and about "
        f"{baseline_flops / shared_flops:.1f}x those of (c) ({shared_flops / 1e12:.3f} TFLOP); GFLOP/s: "
        f"(b) {baseline_flops / hf_seconds / 1e9:.0f}, "
        + (f"(b') {baseline_flops / hf_onednn_seconds / 1e9:.0f}, " if onednn_too else "")
        + f"(c') {flops / full_seconds / 1e9:.0f}, (c) {shared_flops / sweep_seconds / 1e9:.0f}, "
        f"a large product: {rates_text}")
    say("- xtl.sweep vs batched HF in each round (seconds (b) / (c), runs seconds apart): "
        + ", ".join(f"{r['hf'] / r[True]:.1f}x ({r['hf']:.1f} / {r[True]:.2f})" for r in rounds))
    if onednn_too:
        say("- xtl.sweep vs (b') in each round: " + ", ".join(f"{r['hf_onednn'] / r[True]:.1f}x" for r in rounds))
    say(f"- rows with the same tokens so far shared their first layers: the sweep computed {shared_work / full_work:.0%} "
        f"of the row-layers of (c'); its rows and signals equal (c')'s bit for bit: {'yes' if full_same else 'NO'}")
    say(f"- batched HF rows equal to xtl's: {hf_agree}/{len(hf_rows)} (first tokens: {hf_first}/{len(hf_rows)})"
        + (f"; (b')'s: {hf_onednn_agree}/{len(hf_onednn_rows)}" if onednn_too else ""))
    say(f"- naive-loop rows equal to xtl's: {naive_configs - mismatches}/{naive_configs}")
    say()

    if args.bf16_sample:
        say("## bf16 numerics: sweep rows against bf16 transplant()")
        say()
        low = build_model(args.preset, device, dtype="bfloat16") if dtype_name != "bfloat16" else model
        picked = random.Random(1).sample(configs, args.bf16_sample)
        item = instances[0]
        start = time.perf_counter()
        low_frame = xtl.sweep(low, [item], sites=["ffn"], configs=picked, max_new_tokens=args.max_new_tokens, progress=False)
        _sync(device)
        low_seconds = time.perf_counter() - start
        low_rows = {(r.source_layer, r.target_layer): list(r.token_ids) for r in low_frame[low_frame.site.notna()].astype(object).itertuples()}
        same = first = 0
        for i, j in picked:
            answer = list(xtl.transplant(low, item.source, item.target, site="ffn", source_layer=i, target_layer=j,
                                         max_new_tokens=args.max_new_tokens).token_ids)
            same += answer == low_rows[(i, j)]
            first += answer[:1] == low_rows[(i, j)][:1]
        say(f"- bf16 sweep rows equal to bf16 transplant(): {same}/{len(picked)}; first tokens: {first}/{len(picked)} "
            f"(instance {item.id}, {len(picked)} sampled configurations; bf16 sweep of them: {low_seconds:.2f} s)")
        say("- float32 (and float64) sweeps reproduce transplant() row for row (the tests check it); bf16 does not promise it:")
        say("  the batched products sum in another order than the one-prompt forward pass, and bf16 rounding turns that into other tokens at near-ties.")
        say()
        if low is not model:
            del low

    if not args.skip_memory:
        say("## Peak memory against prompt length (one instance, all configurations)")
        say()
        say("| target prompt tokens | sweep peak memory (rise) | own keys/values of all rows | shared prefix keys/values | what copying the prefix per configuration would need |")
        say("| ---: | ---: | ---: | ---: | ---: |")
        base = instances[0]
        element = torch.empty((), dtype=model.cfg.dtype).element_size()
        kv = model.cfg.n_key_value_heads or model.cfg.n_heads
        for goal in (128, 1024):
            words = base.target.split()
            target = " ".join(words * (1 + goal // max(1, len(xtl.model.encode(model, base.target)))))
            ids = xtl.model.encode(model, target)[:goal]
            target = model.tokenizer.decode(ids[1:] if ids[0] == model.tokenizer.bos_token_id else ids)
            length = len(xtl.model.encode(model, target))
            item = datasets.Instance(id=f"len{goal}", benchmark="xnli", split="sample", lang="sw", source=base.source,
                                       target=target, gold=None, scorer=None)
            with PeakMemory(device) as memory:
                xtl.sweep(model, [item], sites=["ffn"], configs="all", max_new_tokens=args.max_new_tokens, progress=False)
            rows_count = len(configs) + 1
            own = 2 * n * rows_count * args.max_new_tokens * kv * model.cfg.d_head * element
            prefix = 2 * n * (length - 1) * kv * model.cfg.d_head * element
            say(f"| {length} | {mib(memory.rise)} | {mib(own)} | {mib(prefix)} | {mib(prefix * len(configs))} |")
        say()
        say("The rows' own keys/values depend on configurations x new tokens only; the prefix is stored once "
            "per instance, so going from ~128 to ~1024 prompt tokens adds only the prefix, never configurations x prompt length.")
    return say.text()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=SHARED / "data" / "xtransplant")
    parser.add_argument("--instances", type=int, help="number of XNLI sw instances (default: 5 for cpu, 1 for 7b)")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds timing xtl.sweep (with and without sharing) and the batched HF baseline; "
                             "the fastest of each is reported, with each round's ratio (default 3)")
    parser.add_argument("--naive-sample", type=int, default=8,
                        help="time the naive loop on this many sampled configurations per instance (default 8)")
    parser.add_argument("--hf-batch-rows", type=int,
                        help="rows per batch of the batched HF baseline (default: its fastest measured, 32 for cpu "
                             "(16: the same, 64: 7-11%% slower) and 256 for 7b on an H200 (128: 1.3x slower))")
    parser.add_argument("--max-batch-rows", type=int, help="xtl.sweep's max_batch_rows (default: its own)")
    parser.add_argument("--bf16-sample", type=int, default=8, help="configurations sampled for the bf16 numerics (0: skip)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the prompt-length memory measurement")
    _reporting.main(parser, run)


if __name__ == "__main__":
    main()
