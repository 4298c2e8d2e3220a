"""`xtl select RUN_DIR [--selector NAME ...] [--train RUN_DIR]`: instance-aware selectors against the upper bound."""

from __future__ import annotations

import argparse
from pathlib import Path

from xtl.errors import XtlError
from xtl.signals import OPTION_SIGNALS, SIGNALS

OUT_SUFFIXES = (".csv", ".parquet")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "select",
        help="score instance-aware configuration selectors against vanilla, the best fixed pair and the upper bound",
        description=(
            "For every instance of RUN_DIR a selector picks one row (vanilla or a configuration) without "
            "looking at gold answers. Prints each selector's accuracy per model, site, benchmark and language "
            "(and pooled), next to vanilla, the best fixed pair chosen on --train and the upper bound, with "
            "the fraction of the vanilla-to-upper-bound gap it closes."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run to evaluate (e.g. the unseen split)")
    parser.add_argument(
        "--selector",
        action="append",
        dest="selectors",
        metavar="NAME",
        help=(
            "vanilla, fixed(I,J), best_fixed, max_confidence(SIGNAL), vote, vote(SIGNAL), "
            "vanilla_unless(SIGNAL[,THRESHOLD]), learned[(SIGNAL,...)]; repeat for several "
            "(default: every one the runs allow). SIGNAL: " + ", ".join(SIGNALS) + " (generate runs); "
            + ", ".join(OPTION_SIGNALS) + " (scoring runs). Quote a name with parentheses for the shell: "
            "--selector 'fixed(3,5)' --selector 'max_confidence(first_margin)'"
        ),
    )
    parser.add_argument(
        "--train",
        type=Path,
        metavar="RUN_DIR",
        help="a run of other instances (the PilotSet) to choose the best fixed pair and fit the trained selectors on",
    )
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the table as FILE.csv or FILE.parquet")
    parser.add_argument("--all-langs", action="store_true", help="print every language, not only the pooled rows")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from xtl import selection

    if args.out is not None:
        if args.out.suffix not in OUT_SUFFIXES:
            raise XtlError(f"--out {str(args.out)!r} must end in .csv or .parquet, the formats xtl select writes")
        if args.out.is_dir():
            raise XtlError(f"--out {str(args.out)!r} is a directory; give a file name such as selection.csv")
    chosen = [selection.selector(name) for name in args.selectors] if args.selectors else None  # names checked first
    table = _load(args.run_dir)
    train = _load(args.train) if args.train is not None else None
    result = selection.evaluate(table, chosen, train=train)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix == ".csv":
            result.to_csv(args.out, index=False)
        else:
            result.to_parquet(args.out, index=False)
    shown = result if args.all_langs else result[result["lang"] == selection.POOLED]
    shown = shown.copy()
    for column in ("accuracy", "vanilla_accuracy", "upper_bound"):
        shown[column] = shown[column].map(lambda v: f"{v:.1%}")
    shown["gap_closed"] = shown["gap_closed"].map(lambda v: "–" if pd.isna(v) else f"{v:+.0%}")
    print(shown.to_string(index=False))
    if not selection.has_signals(table):
        print("(no confidence signals in this run: only the signal-free selectors were scored)")
    if train is None:
        print("(no --train: best_fixed and the trained selectors need a PilotSet run of other instances)")
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def _load(run_dir: Path):
    from xtl import results

    if not run_dir.is_dir():
        raise XtlError(f"run directory {str(run_dir)!r} does not exist; pass a folder written by xtl sweep")
    table = results.load(run_dir)
    if table.empty:
        raise XtlError(f"run directory {str(run_dir)!r} holds no rows yet; let its sweep finish first")
    return table
