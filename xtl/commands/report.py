"""`xtl report RUN_DIR [RUN_DIR...]`: one self-contained HTML report of one or several runs.

Every figure (gain heatmaps, layer-wise heatmaps, win/tie/lose, upper bounds) and
table (average performance, upper bounds, selected pairs) of the runs, with
plotly.js embedded, so the file opens offline.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write one self-contained HTML report of one or several runs",
        description=(
            "Write one HTML file with every figure and table of the given run directories "
            "(plotly.js embedded: it opens offline)."
        ),
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run directory written by xtl sweep")
    parser.add_argument(
        "--out",
        metavar="PATH",
        default=None,
        help="the HTML file to write (default: RUN_DIR/_report.html for one run (the leading _ keeps Parquet readers of RUN_DIR from tripping over it), ./xtl-report.html for several)",
    )
    parser.add_argument("--title", default="XTransplant report", help="the report's title")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xtl.report import write_report

    if args.out is not None:
        out = Path(args.out)
    elif len(args.run_dirs) == 1:
        out = Path(args.run_dirs[0]) / "_report.html"
    else:
        out = Path("xtl-report.html")
    path = write_report(args.run_dirs, out, title=args.title)
    print(path)
    return 0
