"""Scoring speed: `xtl.sweep(mode="score")` against generation and a batched
Hugging Face teacher-forced baseline, side by side in one run, on the same
weights and configurations:

(a) the scoring sweep: every option's continuation forced after the
    transplanted prompt (XNLI: "(1)", "(2)", "(3)");
(b) the generating sweep on the same configurations (greedy, `--max-new-tokens`,
    20 as the paper);
(c) what a user writes without xtl: the weights as a Hugging Face
    `LlamaForCausalLM`, every (configuration, option) a row holding prompt +
    option, forward hooks writing the source vector at the row's target layer
    at the last prompt position, one forward pass per batch of rows, the
    log-softmax of the logits gathered at the option's tokens. Its scores are
    compared with (a)'s row for row.

Default workload: the embedded SmolLM2-135M-Instruct (float32, CPU), the first
4 XNLI Swahili PilotSet instances (English source), site ffn, every (i, j)
among layers 0,6,12,18,24,29 (36 configurations, and vanilla).

    python benchmarks/scoring_speed.py --out benchmarks/results/2026-12-07-cpu-scoring-speed.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import xtl  # noqa: E402
from xtl import datasets  # noqa: E402
from xtl.checks import parse_layers  # noqa: E402

from _reporting import Report, main  # noqa: E402
from sweep_speed import hf_model  # noqa: E402


@torch.inference_mode()
def hf_teacher_forced(hf, tokenizer, instances, configs, options: dict, batch_rows: int) -> dict:
    """{(instance id, i, j): [summed log-probability of each option]}; (None, None): vanilla."""
    layers = hf.model.layers
    scores = {}
    for item in instances:
        captured = {}
        handles = [layer.mlp.register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o[0, -1].clone()))
                   for n, layer in enumerate(layers)]
        hf(torch.tensor([tokenizer(item.source).input_ids]))
        for handle in handles:
            handle.remove()
        prompt = tokenizer(item.target).input_ids
        last = len(prompt) - 1
        option_ids = options[item.id]
        rows = [(config, k) for config in [(None, None), *configs] for k in range(len(option_ids))]
        width = len(prompt) + max(len(ids) for ids in option_ids)
        for start in range(0, len(rows), batch_rows):
            chunk = rows[start : start + batch_rows]
            # right-padded: the prompt positions are the same in every row
            input_ids = torch.tensor([(prompt + option_ids[k] + [0] * width)[:width] for _, k in chunk])
            plan = {}
            for r, ((i, j), _) in enumerate(chunk):
                if i is not None:
                    plan.setdefault(j, ([], []))
                    plan[j][0].append(r)
                    plan[j][1].append(captured[i])
            handles = []
            for j, (index, vectors) in plan.items():
                index, stacked = torch.tensor(index), torch.stack(vectors)

                def write(module, inputs, output, index=index, stacked=stacked):
                    output = output.clone()
                    output[index, last] = stacked
                    return output

                handles.append(layers[j].mlp.register_forward_hook(write))
            try:
                logits = hf(input_ids=input_ids).logits
            finally:
                for handle in handles:
                    handle.remove()
            logprobs = logits.float().log_softmax(-1)
            for r, ((i, j), k) in enumerate(chunk):
                ids = option_ids[k]
                value = sum(float(logprobs[r, last + t, token]) for t, token in enumerate(ids))
                scores.setdefault((item.id, i, j), [0.0] * len(option_ids))[k] = value
    return scores


def run(args) -> str:
    torch.set_num_threads(args.threads)
    say = Report("Scoring speed: xtl.sweep(mode=\"score\") vs generation vs batched HF teacher forcing")
    say.header()
    model = xtl.load_model(args.model, dtype="float32")
    items = datasets.load("xnli", args.lang, data_dir=args.data_dir)[: args.instances]
    configs = parse_layers(args.layers, model.cfg.n_layers)
    say(f"- workload: {model.xtl.name} ({model.cfg.n_layers} layers), XNLI {args.lang} PilotSet, {len(items)} instances, "
        f"site ffn, {len(configs)} configurations + vanilla (layers {args.layers}), 3 options each; "
        f"generation: {args.max_new_tokens} new tokens")
    say()

    started = time.perf_counter()
    scored = xtl.sweep(model, items, sites=["ffn"], configs=configs, mode="score", progress=False)
    t_score = time.perf_counter() - started
    started = time.perf_counter()
    generated = xtl.sweep(model, items, sites=["ffn"], configs=configs, max_new_tokens=args.max_new_tokens, progress=False)
    t_generate = time.perf_counter() - started

    hf = hf_model(model)
    options = {
        row.instance_id: [list(ids) for ids in row.option_token_ids]
        for row in scored[scored["site"].isna()].itertuples()
    }
    started = time.perf_counter()
    baseline = hf_teacher_forced(hf, model.tokenizer, items, configs, options, args.batch_rows)
    t_hf = time.perf_counter() - started

    worst, choices_equal = 0.0, 0
    for row in scored.itertuples():
        key = (row.instance_id, None, None) if not isinstance(row.site, str) else (row.instance_id, int(row.source_layer), int(row.target_layer))
        theirs = baseline[key]
        worst = max(worst, max(abs(a - b) for a, b in zip(row.option_logprobs, theirs)))
        choices_equal += row.option_choice == max(range(len(theirs)), key=theirs.__getitem__)
    n_rows = len(scored)

    say("| path | seconds | rows/s | ratio to (a) |")
    say("| --- | ---: | ---: | ---: |")
    for name, seconds in (("(a) xtl.sweep mode=score", t_score), (f"(b) xtl.sweep generate, {args.max_new_tokens} tokens", t_generate),
                          (f"(c) HF teacher-forced, forward hooks, {args.batch_rows} rows a batch", t_hf)):
        say(f"| {name} | {seconds:.1f} | {n_rows / seconds:.1f} | {seconds / t_score:.2f} |")
    say()
    say(f"- rows compared, (a) against (c): {n_rows} rows x 3 options; largest |difference| of an option's "
        f"log-probability {worst:.2e} (float32); the same best option in {choices_equal} of {n_rows} rows")
    vanilla = generated[generated["site"].isna()]
    say(f"- what each measures on these instances: generation's 0/1 accuracy (greedy answer): vanilla "
        f"{vanilla['correct'].mean():.2f}, mean over configurations {generated[generated['site'].notna()]['correct'].mean():.2f}; "
        f"scoring: vanilla mean gold margin {scored[scored['site'].isna()]['gold_margin'].mean():+.3f} nats, "
        f"over configurations {scored[scored['site'].notna()]['gold_margin'].mean():+.3f}")
    return say.text()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "xtransplant"))
    parser.add_argument("--lang", default="sw")
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--layers", default="0,6,12,18,24,29")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--batch-rows", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    main(parser, run)
