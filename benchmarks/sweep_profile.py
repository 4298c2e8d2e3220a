"""Where one sweep's time goes: torch.profiler over `xtl.sweep` on the default
CPU workload of `sweep_speed.py` (8 layers, d_model 512, vocabulary 32000,
float32, 5 XNLI sw instances, all 64 ffn configurations, 20 new tokens).

It reports the self time of the largest operators, and what the engine is
meant not to do: copies of weights or of keys/values (`copy_`, `clone`,
`contiguous` and their shapes), and reads of a device value by the host
(`item`, `nonzero`, `_local_scalar_dense`), besides the one `.tolist()` of
the chosen tokens per decoding step.

    python benchmarks/sweep_profile.py --out benchmarks/results/2026-11-27-cpu-sweep-profile.md
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _reporting  # noqa: E402
import sweep_speed  # noqa: E402
from _reporting import Report  # noqa: E402

import xtl  # noqa: E402
from xtl import datasets  # noqa: E402


def run(args) -> str:
    model = sweep_speed.build_model("cpu", "cpu")
    instances = datasets.load("xnli", "sw", split="sample", data_dir=args.data_dir)[: args.instances]
    xtl.sweep(model, instances[:1], sites=["ffn"], configs=[(0, 0)], max_new_tokens=2, progress=False)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        xtl.sweep(model, instances, sites=["ffn"], configs="all", max_new_tokens=args.max_new_tokens, progress=False)
        seconds = time.perf_counter() - start
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    say = Report("Where a sweep's time goes (torch.profiler, CPU)")
    say.header()
    say(f"- workload: {len(instances)} XNLI sw instances, site ffn, 64 configurations each + vanilla, "
        f"{args.max_new_tokens} new tokens; the sweep took {seconds:.2f} s under the profiler")
    say(f"- self CPU time of all operators: {total:.2f} s")
    say()
    say("| operator | calls | self CPU s | share |")
    say("| --- | ---: | ---: | ---: |")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        say(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e6:.3f} | {e.self_cpu_time_total / 1e6 / total:.1%} |")
    say()
    watched = ("aten::copy_", "aten::clone", "aten::contiguous", "aten::item", "aten::_local_scalar_dense", "aten::nonzero")
    say("Copies and host reads, by input shape (the largest 12):")
    say()
    say("| operator | input shapes | calls | self CPU s |")
    say("| --- | --- | ---: | ---: |")
    by_shape = collections.Counter()
    calls = collections.Counter()
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key in watched:
            key = (e.key, str(e.input_shapes))
            by_shape[key] += e.self_cpu_time_total / 1e6
            calls[key] += e.count
    for (name, shapes), value in by_shape.most_common(12):
        say(f"| `{name}` | `{shapes[:80]}` | {calls[(name, shapes)]} | {value:.4f} |")
    say()
    for name in watched:
        found = [e for e in events if e.key == name]
        say(f"- `{name}`: {sum(e.count for e in found)} calls, {sum(e.self_cpu_time_total for e in found) / 1e6:.3f} s")
    return say.text()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=sweep_speed.SHARED / "data" / "xtransplant")
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--top", type=int, default=20)
    _reporting.main(parser, run)


if __name__ == "__main__":
    main()
