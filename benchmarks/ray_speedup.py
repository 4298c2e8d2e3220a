"""Study speed-up on a local Ray cluster: the same study run in one process and on
a local Ray cluster with N workers, side by side in one run, rows checked identical.

Default workload (CPU): tiny-llama and tiny-qwen2 from ../shared/models, XNLI and
XCOPA, languages sw and th, the first 12 instances of each, sites ffn and
attn-paper, all 16 configurations; every worker (and the single process) uses one
thread. Times: the sweeps alone (Ray cluster already started, workers load their
models inside the timed part, as the single process does) and the cluster start.

    python benchmarks/ray_speedup.py                        # prints a report
    python benchmarks/ray_speedup.py --workers 2 --out benchmarks/results/DATE-cpu-ray-speedup.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XTL_SHARED", REPO.parent / "shared"))


def grid(out: Path, limit: int) -> dict:
    return {
        "out": str(out), "data_dir": str(SHARED / "data" / "xtransplant"), "benchmarks": ["xnli", "xcopa"],
        "languages": ["sw", "th"], "sites": ["ffn", "attn-paper"], "limit": limit,
        "models": [{"model": str(SHARED / "models" / m)} for m in ("tiny-llama", "tiny-qwen2")],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    args = parser.parse_args()

    import ray
    import torch

    import xtl
    from xtl.study import study

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="xtl-ray-speedup-"))
    try:
        started = time.perf_counter()
        single = study(grid(work / "single", args.limit), progress=False, report=False)
        single_s = time.perf_counter() - started

        started = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})  # fmt: skip
        init_s = time.perf_counter() - started
        started = time.perf_counter()
        on_ray = study(grid(work / "ray", args.limit), ray=True, workers=args.workers, progress=False, report=False)
        ray_s = time.perf_counter() - started
        ray.shutdown()

        def rows(frame):
            frame = frame.astype(object).where(frame.notna(), None)
            return sorted((r.model, r.instance_id, r.site or "", r.source_layer or -1, r.target_layer or -1, r.text) for r in frame.itertuples())

        identical = rows(single) == rows(on_ray)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = "\n".join([
        f"# Study on a local Ray cluster vs one process ({dt.date.today().isoformat()})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs while measured), "
        f"Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}, xtl {xtl.__version__}.",
        f"Workload: 2 tiny models x (xnli, xcopa) x (sw, th) x {args.limit} instances, ffn + attn-paper, "
        f"all 16 configurations: {len(single)} rows; one thread per process.",
        "",
        "| run | seconds | speed-up |",
        "| --- | ---: | ---: |",
        f"| one process | {single_s:.1f} | 1.00 |",
        f"| Ray, {args.workers} workers (sweeps; workers start and load models inside) | {ray_s:.1f} | {single_s / ray_s:.2f} |",
        f"| Ray, {args.workers} workers, including `ray.init` ({init_s:.1f} s) | {ray_s + init_s:.1f} | {single_s / (ray_s + init_s):.2f} |",
        "",
        f"Rows identical: {identical}.",
    ])  # fmt: skip
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    sys.exit(main())
