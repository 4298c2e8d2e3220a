"""`xtl sweep`: every (source layer, target layer) configuration of a benchmark or pairs file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xtl import checks
from xtl.commands._options import (
    add_model_arguments, add_prompt_format_argument, add_ray_argument, layers_of, load_options, use_threads,
)  # fmt: skip
from xtl.errors import XtlError
from xtl.options import LoadOptions, SweepOptions


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
    data.add_argument("--pairs", type=Path, help="your own JSONL pairs file (id, source, target; optionally gold together with its scorer: option, letter, span or word)")
    data.add_argument("--limit", type=int, help="only the first N instances of each language")
    parser.add_argument("--site", action="append", dest="sites", metavar="SITE", help="ffn, attn or attn-paper; repeat for several (default: ffn)")
    parser.add_argument("--layers", default="all", help="'all' (default), a layer subset like '0,4,8-12', or SOURCES:TARGETS pairs like '0-31:0;5:7'")
    parser.add_argument("--mode", choices=("generate", "score"), default="generate",
                        help="generate (default, the paper's protocol: greedy answers scored 0/1) or score (each option's "
                             "continuation teacher-forced after the prompt: option log-probabilities, gold margin; see README)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate at most (default 20, as the paper; unused with --mode score)")
    parser.add_argument("--memory-budget", default="auto", help="memory for one batch of rows, e.g. 8GiB (default auto: 60%% of free GPU memory, or 2GiB on CPU)")
    parser.add_argument("--max-batch-rows", type=int, help="at most this many rows (configurations) in one batch")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="where the results go (a new or earlier run directory); rerunning into it resumes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_ray_argument(parser)
    parser.set_defaults(func=run)


def load_instances(args: argparse.Namespace) -> list:
    from xtl import datasets

    if args.pairs is not None:
        if args.benchmark:
            raise XtlError("give either --pairs or --benchmark, not both.")
        instances = datasets.load_pairs(args.pairs)
        groups = {None: instances}
    else:
        if not args.benchmark:
            raise XtlError("no instances: give --benchmark NAME --lang L (with --data-dir), or --pairs FILE.jsonl.")
        datasets._benchmark_name(args.benchmark)  # a name only: a file goes to --pairs
        if not args.lang:
            raise XtlError(f"--lang is missing: name the target language(s) of {args.benchmark}, e.g. --lang sw,zh, or --lang all.")
        if args.lang.strip() == "all":
            langs = datasets.languages(args.benchmark, args.split, data_dir=args.data_dir)
        else:
            langs = [lang.strip() for lang in args.lang.split(",") if lang.strip()]
            if not langs:
                raise XtlError(
                    f"--lang {args.lang!r} names no language: give one or more, comma separated, e.g. --lang sw "
                    f"or --lang sw,th, or --lang all (xtl benchmarks lists them)."
                )
        groups = {
            lang: datasets.load(args.benchmark, lang, split=args.split, data_dir=args.data_dir) for lang in langs
        }
    if args.limit is not None:
        checks.check_whole(args.limit, "--limit", 1)
        groups = {lang: items[: args.limit] for lang, items in groups.items()}
    instances = [item for items in groups.values() for item in items]
    if not instances:
        raise XtlError("there are no instances to sweep: the pairs file or benchmark selection is empty.")
    return instances


def check_out(out: Path, load: LoadOptions, options: SweepOptions) -> None:
    """--out must be new, empty, or an earlier run with these settings: said before the model is
    loaded, by the check the sweep makes when it opens the run (which then compares the model's
    own fingerprint and architecture too: here they are taken as they are stored)."""
    import dataclasses

    from xtl import results

    results.check_run_dir(out)
    if results.settings_path(out) is None:
        return  # a new run (check_run_dir refused anything but parts and temporary files)
    stored = results.Settings.from_json(results.settings(out))
    try:
        values = results.sweep_values(options, stored.n_layers)
    except XtlError as error:
        raise XtlError(f"--out {str(out)!r} holds a run of a {stored.n_layers}-layer model, and there {error}") from None
    results.check_resumable(out, stored, dataclasses.replace(stored, dtype=load.dtype, **values))


def say_resuming(out: Path, instances: list, options: SweepOptions, n_layers: int | None) -> None:
    """'resuming: N of M rows already stored' when --out holds rows of this sweep already."""
    from xtl.study import stored_rows

    stored = stored_rows(out)
    if stored:
        total = f" of {options.n_rows(len(instances), n_layers):,}" if n_layers else ""
        print(f"resuming: {stored:,}{total} rows already stored in {out}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    # Everything that can be checked without the model, before importing torch or loading it.
    load = load_options(args)
    checks.check_layer_spec(args.layers)
    checks.check_max_new_tokens(args.max_new_tokens, "--max-new-tokens")
    checks.parse_memory(args.memory_budget)
    checks.check_max_batch_rows(args.max_batch_rows, "--max-batch-rows")
    options = SweepOptions(
        sites=args.sites or ("ffn",), configs=args.layers, max_new_tokens=args.max_new_tokens,
        prompt_format=args.prompt_format, memory_budget=args.memory_budget, max_batch_rows=args.max_batch_rows,
        mode=args.mode,
    )  # fmt: skip
    check_out(args.out, load, options)
    if isinstance(args.ray, str):
        from xtl.distributed import check_address

        check_address(args.ray)
    n_layers = layers_of(args)
    if n_layers is not None:
        checks.parse_layers(args.layers, n_layers)
    instances = load_instances(args)
    say_resuming(args.out, instances, options, n_layers)

    if args.ray is not None:
        _sweep_on_ray(args, load, options, instances)
    else:
        import xtl

        use_threads(args)
        xtl.sweep(load.load(), instances, options=options, out=args.out, progress=False if args.quiet else None, load_result=False)
    _print_summary(args.out, file=sys.stderr if args.quiet else sys.stdout)
    return 0


def _print_summary(out: Path, file) -> None:
    from xtl import results

    counts = results.count(out)
    print(f"{counts.rows} rows in {out} ({counts.vanilla} instances, {counts.rows - counts.vanilla} transplant rows)")
    scoring = results.settings(out).get("mode") == "score"
    if counts.vanilla_accuracy is not None:
        print(f"vanilla accuracy {counts.vanilla_accuracy:.3f}; "
              f"mean accuracy over configurations {counts.transplant_accuracy:.3f}"
              + (" (accuracy by option: the best-scored option is the gold)" if scoring else ""))  # fmt: skip
    if counts.vanilla_gold_logprob is not None:
        print(f"vanilla mean gold log-probability {counts.vanilla_gold_logprob:.3f}; "
              f"over configurations {counts.transplant_gold_logprob:.3f}")
    print(f"next: xtl report {out}", file=file)


def _sweep_on_ray(args: argparse.Namespace, load: LoadOptions, options: SweepOptions, instances: list) -> None:
    """The same sweep, its instances in shards over the Ray cluster's workers."""
    from xtl import distributed
    from xtl.study import Job, ModelSpec, run_jobs

    distributed.require_ray()
    job = Job(ModelSpec(load, layers=args.layers), tuple(instances), args.out, "-", "-", (), options)
    run_jobs([job], ray=args.ray, progress=False if args.quiet else None)
