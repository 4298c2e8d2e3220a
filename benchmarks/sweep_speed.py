"""Sweep speed: the naive loop (one `xtl.transplant()` per configuration) against
`xtl.sweep`, side by side in one run, outputs checked identical.

Default workload (CPU): a Llama-architecture model with random weights, 8 layers,
d_model 512, vocabulary 32000; the first 5 XNLI Swahili pilot instances (English
source); site ffn; all 64 configurations; 20 new tokens. Then the peak memory of
the same sweep for one instance at prompt lengths ~128 and ~1024 tokens.

    python benchmarks/sweep_speed.py                      # CPU default, prints a report
    python benchmarks/sweep_speed.py --out benchmarks/results/2026-11-26-cpu.md
    python benchmarks/sweep_speed.py --preset 7b --device cuda --naive-sample 16

With `--preset 7b` (32 layers, d_model 4096, bf16, 1 instance, 1024 configurations)
the naive loop's time is estimated from `--naive-sample` configurations, and those
are checked identical to the sweep's rows. The data comes from ../shared (or
--data-dir); the tokenizer is tiny-llama's from ../shared/models.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
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
from xtl import benchmarks  # noqa: E402
from xtl.model import ModelInfo, fingerprint, hooked_config, new_hooked_transformer, use_hf_rotary_tables  # noqa: E402

PRESETS = {
    "cpu": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, num_key_value_heads=8,
                intermediate_size=1376, vocab_size=32000, dtype="float32", instances=5),
    "7b": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
               intermediate_size=11008, vocab_size=32000, dtype="bfloat16", instances=1),
}


def build_model(preset: str, device: str, seed: int = 0):
    """A Llama-shaped HookedTransformer with random weights (cost does not depend on their values)."""
    from transformers import AutoTokenizer

    spec = PRESETS[preset]
    config = {"architectures": ["LlamaForCausalLM"], "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
              "max_position_embeddings": 4096, "hidden_act": "silu",
              **{k: v for k, v in spec.items() if k not in ("dtype", "instances")}}
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec["dtype"]]
    cfg = hooked_config(config, dtype=dtype, device=device, n_ctx=2048)
    cfg.init_weights = True
    cfg.initializer_range = 0.02
    torch.manual_seed(seed)
    model = new_hooked_transformer(cfg)
    use_hf_rotary_tables(model)
    model.to(device, print_details=False).eval()
    model.tokenizer = AutoTokenizer.from_pretrained(SHARED / "models" / "tiny-llama")
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


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def run(args) -> str:
    device = args.device
    spec = PRESETS[args.preset]
    model = build_model(args.preset, device)
    instances = benchmarks.load("xnli", "sw", split="sample", data_dir=args.data_dir)[: args.instances or spec["instances"]]
    n = model.cfg.n_layers
    configs = [(i, j) for i in range(n) for j in range(n)]
    lines = []
    say = lambda text="": (print(text, flush=True), lines.append(text))

    say(f"# Sweep speed: naive loop vs xtl.sweep ({args.preset})")
    say()
    say(f"- date: {dt.datetime.now().isoformat(timespec='seconds')}")
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none"
    say(f"- machine: {platform.node()}; {os.cpu_count()} CPU cores ({cpu}); torch threads {torch.get_num_threads()}; GPU: {gpu}")
    say(f"- software: python {platform.python_version()}, torch {torch.__version__}, xtl {xtl.__version__}")
    say(f"- model: Llama architecture, random weights, {n} layers, d_model {model.cfg.d_model}, "
        f"d_mlp {model.cfg.d_mlp}, vocab {model.cfg.d_vocab}, {str(model.cfg.dtype).removeprefix('torch.')}, device {device}")
    lengths = [len(xtl.model.encode(model, i.target)) for i in instances]
    say(f"- workload: {len(instances)} XNLI sw pilot instances (English source; target prompts of {min(lengths)}-{max(lengths)} tokens), "
        f"site ffn, {len(configs)} configurations each + vanilla, {args.max_new_tokens} new tokens")
    say()

    # (b) the sweep; warm-up on one configuration first
    xtl.sweep(model, instances[:1], sites=["ffn"], configs=[(0, 0)], max_new_tokens=2, progress=False)
    _sync(device)
    with PeakMemory(device) as sweep_memory:
        start = time.perf_counter()
        frame = xtl.sweep(model, instances, sites=["ffn"], configs="all", max_new_tokens=args.max_new_tokens, progress=False)
        _sync(device)
        sweep_seconds = time.perf_counter() - start
    rows = {(r.instance_id, r.source_layer, r.target_layer): list(r.token_ids)
            for r in frame[frame.site.notna()].astype(object).itertuples()}

    # (a) the naive loop: one xtl.transplant() per configuration (all, or a sample)
    sample = configs if args.naive_sample is None else random.Random(0).sample(configs, args.naive_sample)
    mismatches = 0
    with PeakMemory(device) as naive_memory:
        start = time.perf_counter()
        for item in instances:
            for i, j in sample:
                answer = xtl.transplant(model, item.source, item.target, site="ffn", source_layer=i, target_layer=j,
                                        max_new_tokens=args.max_new_tokens)
                mismatches += list(answer.token_ids) != rows[(item.id, i, j)]
        _sync(device)
        naive_seconds = time.perf_counter() - start
    naive_configs = len(instances) * len(sample)
    total_configs = len(instances) * len(configs)
    naive_full = naive_seconds * total_configs / naive_configs

    say("| path | configurations | seconds | configurations / s | peak memory (rise) |")
    say("| --- | ---: | ---: | ---: | ---: |")
    estimated = "" if naive_configs == total_configs else f" (estimated from {naive_configs} sampled)"
    say(f"| (a) naive loop, xtl.transplant() each | {total_configs} | {naive_full:.2f}{estimated} | {total_configs / naive_full:.2f} | {mib(naive_memory.rise)} |")
    say(f"| (b) xtl.sweep | {total_configs} (+{len(instances)} vanilla) | {sweep_seconds:.2f} | {total_configs / sweep_seconds:.2f} | {mib(sweep_memory.rise)} |")
    say()
    say(f"**speed ratio (b over a): {naive_full / sweep_seconds:.1f}x**; seconds per instance with the sweep: {sweep_seconds / len(instances):.2f}")
    say(f"outputs identical: {'yes' if mismatches == 0 else 'NO'} ({naive_configs} configurations compared token for token, {mismatches} differ)")
    say()

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
            item = benchmarks.Instance(id=f"len{goal}", benchmark="xnli", split="sample", lang="sw", source=base.source,
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
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=SHARED / "data" / "xtransplant")
    parser.add_argument("--instances", type=int, help="number of XNLI sw instances (default: 5 for cpu, 1 for 7b)")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--naive-sample", type=int, help="time the naive loop on this many sampled configurations per instance")
    parser.add_argument("--skip-memory", action="store_true", help="skip the prompt-length memory measurement")
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    args = parser.parse_args()
    report = run(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
