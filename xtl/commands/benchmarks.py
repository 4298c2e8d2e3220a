"""`xtl benchmarks`: which benchmarks, splits and languages the data folder has.

Every listed language is loaded (and so checked: equal line counts, well-formed
lines), and its instance count printed:

    benchmark        split   total  languages
    xnli             sample    700  ar:50 bg:50 de:50 ...
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmarks",
        help="list benchmarks, splits and languages with instance counts",
        description=(
            "List the XTransplant benchmarks, their splits and target languages with instance "
            "counts, and the demo facts shipped with xtl (benchmark facts, split demo). Every file is "
            "read and checked on the way."
        ),
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help=(
            "the data/ folder of a clone of github.com/YYF-Tommy/XTransplant "
            "(default: $XTL_DATA_DIR)"
        ),
    )
    parser.add_argument(
        "--split",
        metavar="SPLIT",
        default=None,
        help="only this split: sample (the PilotSets) or unseen (held-out); default: both",
    )
    parser.add_argument(
        "--include-english",
        action="store_true",
        help=(
            "also list en, the English self-transplant (source and target both English), "
            "which the public code counts in its pooled PilotSet numbers"
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help=(
            "print JSON (a list of {benchmark, split, total, languages: {lang: count}}) "
            "instead of a table"
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from xtl import datasets

    root = datasets.resolve_data_dir(args.data_dir)
    splits = datasets.SPLITS if args.split is None else (args.split,)  # languages() checks it
    rows = []
    for name in datasets.BENCHMARKS:
        for split in splits:
            langs = datasets.languages(name, split, root, include_english=args.include_english)
            counts = {
                lang: len(datasets.load(name, lang, split=split, data_dir=root)) for lang in langs
            }
            rows.append({"benchmark": name, "split": split, "total": sum(counts.values()), "languages": counts})
    shipped = [name for name, benchmark in datasets.REGISTRY.items() if benchmark.shipped]
    for name in shipped if args.split is None else ():  # the demo facts, shipped with xtl: their own split
        split = datasets.REGISTRY[name].splits[0]
        langs = datasets.languages(name, split, include_english=args.include_english)
        counts = {lang: len(datasets.load(name, lang, split=split)) for lang in langs}
        rows.append({"benchmark": name, "split": split, "total": sum(counts.values()), "languages": counts})

    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len("benchmark"), *(len(row["benchmark"]) for row in rows))
    print(f"{'benchmark':<{width}}  {'split':<6}  {'total':>6}  languages")
    for row in rows:
        langs = " ".join(f"{lang}:{count}" for lang, count in row["languages"].items())
        print(f"{row['benchmark']:<{width}}  {row['split']:<6}  {row['total']:>6}  {langs}")
    print(f"data: {root}" + (f"; {', '.join(shipped)}: shipped with xtl" if args.split is None and shipped else ""))
    if not args.include_english:
        print("en (English self-transplant) is not listed; --include-english lists it.")
    return 0
