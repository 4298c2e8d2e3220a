"""`xtl demo [--out DIR] [--model M]`: one whole study, offline, on a real model.

Loads the embedded SmolLM2-135M-Instruct (or `--model`), sweeps `ffn` and
`attn-paper` on an evenly spread subset of layers over the demo facts shipped
with xtl (English source, fr/de/es/it target), writes DIR/run, DIR/report.html
and DIR/figures/ (HTML and PNG), and prints what was swept, the gains and upper
bounds from the run's own rows, and what they do and do not show.
"""

from __future__ import annotations

import argparse
import sys

from xtl import checks
from xtl.commands._options import add_threads_argument, use_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a whole study offline on the embedded real model and demo facts (run, report, figures)",
        description=(
            "Load SmolLM2-135M-Instruct (embedded; or --model), sweep ffn and attn-paper on a subset of "
            "layers over the demo facts shipped with xtl (English questions as source, the same questions "
            "in French, German, Spanish and Italian as target), and write the run, the HTML report and the "
            "figures. Offline; about 75 s of CPU time: about 1 minute on 2 idle CPU cores, many minutes when "
            "other work shares them (see the README). Rerunning into the same --out resumes."
        ),
    )
    parser.add_argument("--out", metavar="DIR", default="xtl-demo", help="where to write run/, report.html and figures/ (default: ./xtl-demo)")
    parser.add_argument("--model", default=None, help="another checkpoint for the same study (default: SmolLM2-135M-Instruct, embedded)")
    parser.add_argument("--layers", default=None, help="layer spec to sweep instead of the default (6 layers spread over the first 60%% of the model, every pair among them)")
    parser.add_argument("--limit", type=int, default=4, help="the first N facts of each language (default 4, of 12)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages or bar; print only where the results are")
    add_threads_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtl import demo

    def say(message: str) -> None:
        print(f"xtl demo: {message}", file=sys.stderr, flush=True)

    if args.limit is not None:  # checked before torch is imported
        checks.check_whole(args.limit, "--limit", 1)
    threads = use_threads(args, say=None if args.quiet else say)

    paths = demo.run_demo(
        args.out, model=args.model or demo.DEMO_MODEL, layers=args.layers, limit=args.limit,
        progress=False if args.quiet else None, say=None if args.quiet else say,
    )
    results = paths["table"]
    n_png = len(paths["pngs"])
    n_html = len(paths["figure_files"]) - n_png
    embedded = args.model is None or args.model.strip().lower() == demo.DEMO_MODEL.lower()
    if not args.quiet:
        print(
            f"model {paths['model']}; swept {paths['n_instances']} facts (target languages {', '.join(paths['langs'])}) "
            f"x {paths['n_configs']} configurations (layers {paths['layers']}) x sites {', '.join(paths['sites'])}; "
            f"{paths['prompt_format']} prompts; {paths['seconds']:.0f} s on {threads} torch thread{'s' if threads > 1 else ''}"
        )
        print("accuracy per target language: vanilla, best configuration, mean over configurations, upper bound")
        print(demo.facts_summary(results).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        print()
    print(f"run:     {paths['run']}  ({len(results)} rows)")
    print(f"report:  {paths['report']}")
    print(f"figures: {paths['figures']}  ({n_png} PNG, {n_html} HTML)")
    if paths["png_error"]:
        print(f"no PNG figures: {paths['png_error']}")
    print()
    print(demo.describe(paths["model"], embedded))
    print("The same study on the paper's data (github.com/YYF-Tommy/XTransplant) and a larger model:")
    for command in demo.REAL_MODEL_COMMANDS:
        print(f"  {command}")
    return 0
