"""`xtl sweep`: every (source layer, target layer) configuration of a benchmark or pairs file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xtl import checks
from xtl.cli import add_model_arguments, add_prompt_format_argument, check_model_arguments, load_model_from_args
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
    parser.add_argument("--mode", choices=("generate", "score"), default="generate",
                        help="generate (default, the paper's protocol: greedy answers scored 0/1) or score (each option's "
                             "continuation teacher-forced after the prompt: option log-probabilities, gold margin; see README)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate at most (default 20, as the paper; unused with --mode score)")
    parser.add_argument("--memory-budget", default="auto", help="memory for one batch of rows, e.g. 8GiB (default auto: 60%% of free GPU memory, or 2GiB on CPU)")
    parser.add_argument("--max-batch-rows", type=int, help="at most this many rows (configurations) in one batch")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="where the results go (a new or earlier run directory); rerunning into it resumes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    from xtl.commands.study import add_ray_argument

    add_ray_argument(parser)
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
        benchmarks._benchmark_name(args.benchmark)  # a name only: a file goes to --pairs
        if not args.lang:
            raise XtlError(f"--lang is missing: name the target language(s) of {args.benchmark}, e.g. --lang sw,zh, or --lang all.")
        if args.lang.strip() == "all":
            langs = benchmarks.languages(args.benchmark, args.split, data_dir=args.data_dir)
        else:
            langs = [lang.strip() for lang in args.lang.split(",") if lang.strip()]
            if not langs:
                raise XtlError(
                    f"--lang {args.lang!r} names no language: give one or more, comma separated, e.g. --lang sw "
                    f"or --lang sw,th, or --lang all (xtl benchmarks lists them)."
                )
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


def check_out(out: Path, args: argparse.Namespace, sites: list[str]) -> None:
    """--out must be new, empty, or an earlier run with these settings: said before the model is loaded
    (the model's own fingerprint is compared when the sweep opens the run)."""
    import json

    from xtl.results import SETTINGS_FILE, check_run_dir

    check_run_dir(out)
    if not out.is_dir():
        return
    settings_file = out / SETTINGS_FILE
    if not settings_file.is_file():
        return  # check_run_dir refused anything but parts and temporary files (a run to recover)
    try:
        existing = json.loads(settings_file.read_text())
        n_layers = int(existing["n_layers"])
    except (OSError, ValueError, TypeError, KeyError):
        return  # a damaged run.json is named when the sweep opens the run
    scoring = args.mode == "score"
    now = {"dtype": args.dtype, "sites": sorted(sites), "max_new_tokens": 0 if scoring else args.max_new_tokens, "mode": args.mode}
    existing = {**existing, "mode": existing.get("mode", "generate")}
    try:
        pairs = checks.parse_layers(args.layers, n_layers)
    except XtlError as error:
        raise XtlError(f"--out {str(out)!r} holds a run of a {n_layers}-layer model, and there {error}") from None
    now["configs"] = "all" if pairs == checks.parse_layers("all", n_layers) else [list(p) for p in pairs]
    # Only settings stored in the form written here are compared; anything else is left to the sweep.
    comparable = {
        "dtype": lambda v: isinstance(v, str),
        "sites": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "max_new_tokens": lambda v: isinstance(v, int),
        "mode": lambda v: isinstance(v, str),
        "configs": lambda v: v == "all" or (isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 for p in v)),
    }
    differing = [
        key for key, value in now.items() if key in existing and comparable[key](existing[key]) and existing[key] != value
    ]
    if differing:
        changes = "; ".join(f"{key}: {existing[key]!r} there, {now[key]!r} now" for key in differing)
        raise XtlError(
            f"{str(out)!r} holds a run made with other settings ({changes}): rerun with the same settings to "
            "resume it, or choose another --out."
        )


def run(args: argparse.Namespace) -> int:
    # Everything that can be checked without the model, before importing torch or loading it.
    check_model_arguments(args)
    sites = list(dict.fromkeys(checks.check_site(site) for site in args.sites or ["ffn"]))
    checks.check_layer_spec(args.layers)
    checks.check_max_new_tokens(args.max_new_tokens, "--max-new-tokens")
    checks.parse_memory(args.memory_budget)
    checks.check_max_batch_rows(args.max_batch_rows, "--max-batch-rows")
    check_out(args.out, args, sites)
    instances = load_instances(args)

    if args.ray is not None:
        frame = _sweep_on_ray(args, instances, sites)
    else:
        frame = _sweep_here(args, instances, sites)
    vanilla = frame[frame["site"].isna()]
    configured = frame[frame["site"].notna()]
    print(f"{len(frame)} rows in {args.out} ({len(vanilla)} instances, {len(configured)} transplant rows)")
    scored = vanilla["correct"].notna().any()
    if scored:
        print(f"vanilla accuracy {vanilla['correct'].mean():.3f}; "
              f"mean accuracy over configurations {configured['correct'].mean():.3f}"
              + (" (accuracy by option: the best-scored option is the gold)" if args.mode == "score" else ""))
    if args.mode == "score" and vanilla["gold_logprob"].notna().any():
        print(f"vanilla mean gold log-probability {vanilla['gold_logprob'].mean():.3f}; "
              f"over configurations {configured['gold_logprob'].mean():.3f}")
    print(f"next: xtl report {args.out}", file=sys.stderr if args.quiet else sys.stdout)
    return 0


def _sweep_here(args: argparse.Namespace, instances: list, sites: list[str]):
    import xtl

    model = load_model_from_args(args)
    return xtl.sweep(
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
        mode=args.mode,
    )


def _sweep_on_ray(args: argparse.Namespace, instances: list, sites: list[str]):
    """The same sweep, its instances in shards over the Ray cluster's workers."""
    from xtl import distributed, results
    from xtl.study import Job, ModelSpec, run_jobs

    distributed.require_ray()
    if args.trust_remote_code:
        raise XtlError("--ray does not pass --trust-remote-code to its workers: run this sweep without --ray.")
    spec = ModelSpec(model=str(args.model), dtype=args.dtype, layers=args.layers, device=args.device)
    kwargs = dict(sites=sites, configs=args.layers, max_new_tokens=args.max_new_tokens,
                  memory_budget=args.memory_budget, max_batch_rows=args.max_batch_rows,
                  prompt_format=args.prompt_format, mode=args.mode)  # fmt: skip
    job = Job(spec, tuple(instances), args.out, "-", "-", (), kwargs)
    run_jobs([job], ray=args.ray, progress=False if args.quiet else None)
    return results.load(args.out)
