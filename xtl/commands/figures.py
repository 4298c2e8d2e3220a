"""`xtl figures RUN_DIR --out DIR`: every report figure as NAME.html and NAME.png.

The HTML files share one plotly.min.js written beside them (they open offline);
the PNGs are drawn by kaleido without a display or network.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "figures",
        help="write every figure of one or several runs as HTML and PNG files",
        description=(
            "Write each figure of the report (gain heatmaps, layer-wise heatmaps, win/tie/lose, "
            "upper bounds) as NAME.html and NAME.png into a directory."
        ),
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run directory written by xtl sweep")
    parser.add_argument(
        "--out", metavar="DIR", default=None, help="the directory to write into (default: RUN_DIR/_figures, which Parquet readers of RUN_DIR skip)"
    )
    parser.add_argument("--no-png", action="store_true", help="write only the HTML files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xtl.report import load_results, write_figures

    out = Path(args.out) if args.out is not None else Path(args.run_dirs[0]) / "_figures"
    paths = write_figures(load_results(args.run_dirs), out, png=not args.no_png)
    for path in paths:
        print(path)
    return 0
