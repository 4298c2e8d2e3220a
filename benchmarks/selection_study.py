"""Instance-aware selection measured on a real model: PilotSet -> held-out split.

Sweeps the fact pairs of `benchmarks/data/selection_facts.jsonl` (English source,
fr/de/es target; questions alternate between the `sample` split, the PilotSet,
and the `unseen` split, so no question is in both) on a real model, then:

- `xtl.selection.evaluate(unseen, train=sample)`: vanilla, the best fixed pair
  chosen on the PilotSet, every selector the rows allow, and the upper bound;
- `xtl.selection.evaluate_top_k`: the same when only the k best PilotSet pairs
  may be tried.

Prompts are wrapped in the checkpoint's chat template (one user turn, generation
prompt added) unless `--raw`. Writes a Markdown summary and the two tables as CSV
to `--out` (default benchmarks/results/).

    PYTHONPATH=. python benchmarks/selection_study.py --model /path/to/smollm2 \
        --site attn-paper --layers 0,3,6,9,12,15,18,21,24,27
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import pandas as pd

import xtl
from xtl import datasets, selection

HERE = Path(__file__).resolve().parent


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table (floats with 3 decimals), without the optional tabulate package."""

    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    head = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--pairs", type=Path, default=HERE / "data" / "selection_facts.jsonl")
    parser.add_argument("--site", action="append", dest="sites", default=None)
    parser.add_argument("--layers", default="all")
    parser.add_argument("--limit", type=int, default=None, help="first N instances per split")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--raw", action="store_true", help="the prompts as they are (no chat template)")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/xtl-selection-runs"))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    sites = args.sites or ["attn-paper"]

    started = time.perf_counter()
    model = xtl.load_model(args.model)
    loaded = time.perf_counter() - started
    tables, seconds = {}, {}
    for split in ("sample", "unseen"):
        items = datasets.load_pairs(args.pairs, split=split)[: args.limit]
        t0 = time.perf_counter()
        tables[split] = xtl.sweep(
            model, items, sites=sites, configs=args.layers, max_new_tokens=args.max_new_tokens,
            out=str(args.runs / split), progress=False, prompt_format="raw" if args.raw else "chat",
        )  # fmt: skip
        seconds[split] = time.perf_counter() - t0

    table = selection.evaluate(tables["unseen"], train=tables["sample"])
    top_k = selection.evaluate_top_k(tables["unseen"], tables["sample"])
    pooled = table[table["lang"] == "pooled"]
    pooled_k = top_k[top_k["lang"] == "pooled"]

    stamp = datetime.datetime.now(datetime.timezone.utc)
    name = f"selection_{Path(str(args.model)).name}_{stamp:%Y-%m-%d}"
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / f"{name}.csv", index=False)
    top_k.to_csv(args.out / f"{name}_top_k.csv", index=False)

    n_configs = tables["unseen"][tables["unseen"]["site"].notna()][["site", "source_layer", "target_layer"]]
    lines = [
        f"# Instance-aware selection on {Path(str(args.model)).name}",
        "",
        f"- date: {stamp:%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, {os.cpu_count()} CPU cores "
        f"({platform.platform()}), torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}",
        f"- pairs: {args.pairs.name} ({'raw prompts' if args.raw else 'chat template'}), "
        f"sample (PilotSet) {tables['sample']['instance_id'].nunique()} instances, "
        f"unseen {tables['unseen']['instance_id'].nunique()} instances; sites {', '.join(sites)}; "
        f"layers {args.layers}; {len(n_configs.drop_duplicates())} configurations; "
        f"max_new_tokens {args.max_new_tokens}; float32",
        f"- time: load {loaded:.0f} s, sweep sample {seconds['sample']:.0f} s, unseen {seconds['unseen']:.0f} s",
        f"- signal columns present: {selection.has_signals(tables['unseen'])}",
        "",
        "## Selectors on the unseen split (trained / chosen on the PilotSet), pooled over languages",
        "",
        markdown(pooled.drop(columns=["split", "lang"])),
        "",
        "## Only the k best PilotSet pairs may be tried (pooled)",
        "",
        markdown(pooled_k.drop(columns=["split", "lang"])),
        "",
        "## Per language",
        "",
        markdown(table[table["lang"] != "pooled"].drop(columns=["split"])),
        "",
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
