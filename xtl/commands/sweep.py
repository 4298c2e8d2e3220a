"""`xtl sweep`: every (source layer, target layer) configuration of a benchmark or pairs file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xtl.cli import add_model_arguments, add_prompt_format_argument, load_model_from_args
from xtl.errors import XtlError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run every transplant configuration of a benchmark (or your own pairs) and store the results",
        description=(
            "For every instance: the vanilla answer, and the answer under every site x (source layer, "
            "target layer) configuration, batched over a shared prompt prefix. Rows are stored as Parquet "
            "in RUN_DIR as they finish; running the same command again resumes."
        ),
    )
    add_model_arguments(parser)
    add_prompt_format_argument(parser)
    data = parser.add_argument_group("instances (a benchmark, or --pairs)")
    data.add_argument("--benchmark", help="xnli, xquad, xcopa or globalopinionqa (the paper's, with --data-dir), or facts (the demo facts shipped with xtl)")
    data.add_argument("--lang", help="target language(s), comma separated, e.g. sw or sw,th,zh; 'all' for every language of the split")
    data.add_argument("--split", default="sample", help="sample (the PilotSets, default) or unseen")
    data.add_argument("--data-dir", type=Path, help="the XTransplant data folder (default: $XTL_DATA_DIR)")
    data.add_argument("--pairs", type=Path, help="your own JSONL pairs file (id, source, target, optional gold, scorer)")
    data.add_argument("--limit", type=int, help="only the first N instances of each language")
    parser.add_argument("--site", action="append", dest="sites", metavar="SITE", help="ffn, attn or attn-paper; repeat for several (default: ffn)")
    parser.add_argument("--layers", default="all", help="'all' (default), a layer subset like '0,4,8-12', or SOURCES:TARGETS pairs like '0-31:0;5:7'")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate at most (default 20, as the paper)")
    parser.add_argument("--memory-budget", default="auto", help="memory for one batch of rows, e.g. 8GiB (default auto: 60%% of free GPU memory, or 2GiB on CPU)")
    parser.add_argument("--max-batch-rows", type=int, help="at most this many rows (configurations) in one batch")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="where the results go (a new or earlier run directory); rerunning into it resumes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def load_instances(args: argparse.Namespace) -> list:
    from xtl import benchmarks

    if args.pairs is not None:
        if args.benchmark:
            raise XtlError("give either --pairs or --benchmark, not both.")
        instances = benchmarks.load_pairs(args.pairs)
        groups = {None: instances}
    else:
        if not args.benchmark:
            raise XtlError("no instances: give --benchmark NAME --lang L (with --data-dir), or --pairs FILE.jsonl.")
        if not args.lang:
            raise XtlError(f"--lang is missing: name the target language(s) of {args.benchmark}, e.g. --lang sw,zh, or --lang all.")
        if args.lang.strip() == "all":
            langs = benchmarks.languages(args.benchmark, args.split, data_dir=args.data_dir)
        else:
            langs = [lang.strip() for lang in args.lang.split(",") if lang.strip()]
        groups = {
            lang: benchmarks.load(args.benchmark, lang, split=args.split, data_dir=args.data_dir) for lang in langs
        }
    if args.limit is not None:
        if args.limit < 1:
            raise XtlError(f"--limit must be at least 1, not {args.limit}.")
        groups = {lang: items[: args.limit] for lang, items in groups.items()}
    instances = [item for items in groups.values() for item in items]
    if not instances:
        raise XtlError("there are no instances to sweep: the pairs file or benchmark selection is empty.")
    return instances


def run(args: argparse.Namespace) -> int:
    import xtl
    from xtl.model import check_site
    from xtl.results import check_run_dir

    # Everything that can be checked without the model, before loading it.
    sites = [check_site(site) for site in args.sites or ["ffn"]]
    check_run_dir(args.out)
    instances = load_instances(args)

    model = load_model_from_args(args)
    frame = xtl.sweep(
        model,
        instances,
        sites=sites,
        configs=args.layers,
        max_new_tokens=args.max_new_tokens,
        out=str(args.out),
        memory_budget=args.memory_budget,
        max_batch_rows=args.max_batch_rows,
        progress=False if args.quiet else None,
        prompt_format=args.prompt_format,
    )
    vanilla = frame[frame["site"].isna()]
    configured = frame[frame["site"].notna()]
    print(f"{len(frame)} rows in {args.out} ({len(vanilla)} instances, {len(configured)} transplant rows)")
    scored = vanilla["correct"].notna().any()
    if scored:
        print(f"vanilla accuracy {vanilla['correct'].mean():.3f}; "
              f"mean accuracy over configurations {configured['correct'].mean():.3f}")
    print(f"next: xtl report {args.out}", file=sys.stderr if args.quiet else sys.stdout)
    return 0
