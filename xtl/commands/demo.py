"""`xtl demo [--out DIR]`: the whole study, offline, on the embedded demo model and data.

Builds the demo model in code (not a trained language model: see `xtl.demo`),
sweeps every configuration of `ffn` and `attn-paper` over the shipped demo
pairs, writes DIR/run, DIR/report.html and DIR/figures/ (HTML and PNG), and
prints where they are and the command that runs the same study on a real model.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole study offline on a small built-in model and demo data (run, report, figures)",
        description=(
            "Build a small deterministic model in code (not a trained language model), sweep every "
            "(source layer, target layer) configuration of ffn and attn-paper over the demo pairs shipped "
            "with xtl, and write the run, the HTML report and the figures. Offline; a few seconds to a minute "
            "on a laptop. Rerunning into the same --out resumes."
        ),
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="xtl-demo",
        help="where to write run/, report.html and figures/ (default: ./xtl-demo)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress messages or bar; print only where the results are")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtl import demo

    def say(message: str) -> None:
        print(f"xtl demo: {message}", file=sys.stderr, flush=True)

    paths = demo.run_demo(args.out, progress=False if args.quiet else None, say=None if args.quiet else say)
    results = _load(paths["run"])
    if not args.quiet:
        print(demo.summary(results).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        print()
    n_png = len(paths["pngs"])
    n_html = len(paths["figure_files"]) - n_png
    print(f"run:     {paths['run']}  ({len(results)} rows)")
    print(f"report:  {paths['report']}")
    print(f"figures: {paths['figures']}  ({n_png} PNG, {n_html} HTML)")
    if paths["png_error"]:
        print(f"no PNG figures: {paths['png_error']}")
    print()
    print(demo.NOT_TRAINED)
    print("The same study on a real model and the paper's data (github.com/YYF-Tommy/XTransplant):")
    for command in demo.REAL_MODEL_COMMANDS:
        print(f"  {command}")
    return 0


def _load(run_dir):
    from xtl import results

    return results.load(run_dir)
