"""`xtl study STUDY.toml`: a grid of sweeps (models x benchmarks x languages x splits
x sites), each into its own run directory under the study directory, then one
report across them. Running it again resumes every sweep where it stopped."""

from __future__ import annotations

import argparse
from pathlib import Path

from xtl.checks import check_whole
from xtl.commands._options import add_ray_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="run a grid of sweeps from a study file (models x benchmarks x languages x splits x sites)",
        description=(
            "Run every sweep of a study TOML file (see studies/paper-pilot.toml), each into "
            "OUT/MODEL/BENCHMARK-SPLIT, then write OUT/_report.html across them. Rerunning resumes."
        ),
    )
    parser.add_argument("study_file", type=Path, nargs="?", metavar="STUDY.toml", help="the study file")
    parser.add_argument("--dry-run", action="store_true", help="print the instances, configurations and estimated GPU time of every sweep, and stop (no model is loaded)")
    parser.add_argument("--gpus", type=int, default=1, help="with --dry-run: also estimate the time on this many GPUs")
    parser.add_argument("--out", type=Path, default=None, help="the study directory (default: the study file's out)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the XTransplant data folder (default: the study file's data_dir, else $XTL_DATA_DIR)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N instances of each language (a quick trial)")
    add_ray_argument(parser)
    parser.add_argument("--workers", type=int, default=None, help="with --ray: at most this many workers (default: one per GPU, or per CPU without GPUs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtl.errors import XtlError
    from xtl.study import study

    if args.study_file is None:
        if isinstance(args.ray, str) and args.ray.endswith(".toml"):
            raise XtlError(
                f"--ray took {args.ray!r} as the Ray cluster's address: write the study file first "
                f"(xtl study {args.ray} --ray [ADDRESS]), or --ray=ADDRESS."
            )
        raise XtlError("no study file given: xtl study STUDY.toml (see studies/paper-pilot.toml).")
    for flag, value in (("--limit", args.limit), ("--gpus", args.gpus), ("--workers", args.workers)):
        if value is not None:
            check_whole(value, flag, 1)
    if args.ray is not None:
        from xtl.distributed import require_ray

        require_ray()
    result = study(
        args.study_file, ray=args.ray, dry_run=args.dry_run, progress=False if args.quiet else None,
        workers=args.workers, gpus=args.gpus, out=args.out, data_dir=args.data_dir, limit=args.limit,
    )  # fmt: skip
    if args.dry_run:
        print(result)
        return 0
    runs = result.groupby(["model", "benchmark", "split"]).size()
    print(f"{len(result)} rows in {len(runs)} runs")
    from xtl.study import read_study

    out = args.out or read_study(args.study_file).out
    print(Path(out) / "_report.html")
    return 0
