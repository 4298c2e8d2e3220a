"""Wall time of `xtl demo` with 1 and 2 torch threads (and the default choice), alternating,
with the 1-minute load average before each run: the basis of the thread default
(`xtl.checks.default_threads`) and of the times the README and `xtl demo --help` state.

    python benchmarks/demo_threads.py --limit 1 --rounds 2 --threads 1 2 default
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", nargs="+", default=["1", "2", "default"])
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)  # the default must see no override
    print(f"# xtl demo --limit {args.limit}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| round | threads | wall s | load avg (1 min) before | after |")
    print("| --- | --- | --- | --- | --- |")
    for round_ in range(1, args.rounds + 1):
        for threads in args.threads:
            out = Path(tempfile.mkdtemp(prefix="xtl-demo-threads-"))
            command = [sys.executable, "-m", "xtl", "demo", "--quiet", "--limit", str(args.limit), "--out", str(out)]
            if threads != "default":
                command += ["--threads", threads]
            before = os.getloadavg()[0]
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            wall = time.perf_counter() - started
            print(f"| {round_} | {threads} | {wall:.0f} | {before:.1f} | {os.getloadavg()[0]:.1f} |", flush=True)
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
