"""The paper's PilotSets on the embedded SmolLM2-135M-Instruct in scoring mode:
the study `studies/smollm2-pilot-score.toml` (XNLI, XCOPA, GlobalOpinionQA, two
languages each, sites ffn and attn-paper, layers 0,10,20,29) with more
instances than notebook 04, timed, and what it shows with 95% paired
bootstrap intervals: the effect of transplanting at all (the mean over every
configuration against vanilla, no configuration chosen), the gold-free
selectors against vanilla, and the upper bound.

    python benchmarks/pilot_scoring.py --limit 25 --out benchmarks/results/2026-12-07-cpu-smollm2-pilot-score.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import pandas as pd  # noqa: E402
from _reporting import Report, main  # noqa: E402

from xtl import analysis, results, selection  # noqa: E402
from xtl.study import plan, read_study, run_jobs  # noqa: E402


def _markdown(frame: pd.DataFrame, fmt: str) -> str:
    """A Markdown table (floats with `fmt`)."""
    cell = lambda v: format(v, fmt) if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def run(args) -> str:
    say = Report("The PilotSets on SmolLM2-135M-Instruct in scoring mode")
    say.header()
    study = read_study(REPO / "studies" / "smollm2-pilot-score.toml", out=args.runs, data_dir=args.data_dir, limit=args.limit)
    jobs = plan(study)
    started = time.perf_counter()
    run_jobs(jobs, progress=False)
    seconds = time.perf_counter() - started
    df = pd.concat([results.load(job.out) for job in jobs], ignore_index=True)
    say(f"- study: studies/smollm2-pilot-score.toml, limit {args.limit} instances per language; "
        f"{len(df)} rows ({df['instance_id'].nunique()} instances) in {seconds:.0f} s "
        f"({len(df) / seconds:.1f} rows/s; the model load included once per sweep)")
    say("- metric: the gold margin (gold option's log-probability minus the best other option's, nats); "
        "intervals: 95% paired bootstrap over instances, 2000 resamples")
    say()
    say("## Accuracy by option (the best-scored option is the gold): vanilla and the mean over configurations")
    say()
    avg = analysis.average_performance(df)
    say(_markdown(avg[avg["lang"] == analysis.POOLED][["site", "benchmark", "n", "vanilla", "average"]], ".3f"))
    say()
    say("## The effect of transplanting at all (mean over every configuration minus vanilla), gold margin")
    say()
    effects = analysis.average_effect(df, "gold_margin")
    say(_markdown(effects[["site", "benchmark", "lang", "n", "vanilla", "average", "effect", "ci_low", "ci_high"]], "+.3f"))
    say()
    say("## Gold-free selection against vanilla (pooled over languages), gold margin of the chosen row")
    say()
    chosen = selection.evaluate(df, metric="gold_margin")
    chosen = chosen[chosen["lang"] == analysis.POOLED]
    say(_markdown(chosen[["site", "benchmark", "selector", "n", "accuracy", "difference", "ci_low", "ci_high", "beats"]], "+.3f"))
    say()
    say("## The same selectors by accuracy by option")
    say()
    chosen = selection.evaluate(df)
    chosen = chosen[chosen["lang"] == analysis.POOLED]
    say(_markdown(chosen[["site", "benchmark", "selector", "n", "accuracy", "difference", "ci_low", "ci_high", "beats"]], ".3f"))
    return say.text()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=25)
    parser.add_argument("--runs", default="/tmp/xtl-pilot-score")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "xtransplant"))
    main(parser, run)
