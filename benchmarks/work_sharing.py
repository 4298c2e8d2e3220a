"""Work sharing between writers of one run directory: N `xtl.sweep` processes
given the same instances and the same run directory, started together, with
and without instance leases (`xtl.leases`), and a round with SIGKILLs.

For each round: the rows the writers stored in all (raw parts, duplicates
included) against the rows the run needs, the wall time, and the run read back
through `xtl.results.load` against a single-process reference: rows lost,
duplicated (in the loaded table) or different.

Default workload (CPU): tiny-llama from ../shared/models, XCOPA sw, the first
24 instances, sites ffn and attn-paper, configurations 0,3 (4 per site), up to
6 rows per batch, one thread per writer.

    python benchmarks/work_sharing.py --writers 4 --out benchmarks/results/DATE-cpu-work-sharing.md
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
SHARED = Path(os.environ.get("XTL_SHARED", REPO.parent / "shared"))
MODEL = SHARED / "models" / "tiny-llama"
DATA = SHARED / "data" / "xtransplant"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

WRITER = """
import os, pathlib, sys, time, xtl
from xtl import datasets, leases
out, limit, go, share = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4] == "1"
leases.ENABLED = share
model = xtl.load_model(sys.argv[5])
items = datasets.load("xcopa", "sw", data_dir=sys.argv[6])[:limit]
(go.parent / f"ready-{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.01)
xtl.sweep(model, items, sites=["ffn", "attn-paper"], configs="0,3", out=out, max_batch_rows=6, progress=False, load_result=False)
"""


def start_writers(out: Path, n: int, limit: int, share: bool, barrier: Path) -> list[subprocess.Popen]:
    barrier.mkdir(parents=True, exist_ok=True)
    go = barrier / "go"
    return [
        subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(limit), str(go), "1" if share else "0", str(MODEL), str(DATA)],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        for _ in range(n)
    ]


def wait_ready(barrier: Path, processes: list) -> None:
    while len(list(barrier.glob("ready-*"))) < len(processes) and all(p.poll() is None for p in processes):
        time.sleep(0.02)
    (barrier / "go").touch()


def rows_of(frame) -> dict:
    frame = frame.astype(object).where(frame.notna(), None)
    return {(r.instance_id, r.site, r.source_layer, r.target_layer): (tuple(r.token_ids), r.text) for r in frame.itertuples()}


def compare(out: Path, reference: dict) -> tuple[int, int, int, int]:
    """(raw rows stored, rows lost, rows duplicated in load, rows different) of a run against the reference."""
    import pandas as pd

    from xtl import results

    frame = results.load(out)
    got = rows_of(frame)
    raw = len(pd.read_parquet(out))
    lost = len(set(reference) - set(got))
    different = sum(1 for key in set(reference) & set(got) if got[key] != reference[key])
    return raw, lost, len(frame) - len(got), different


def round_(work: Path, name: str, n: int, limit: int, share: bool, kills: int, rng: random.Random) -> tuple[float, list]:
    out, barrier = work / name, work / f"{name}-barrier"
    started = time.perf_counter()
    processes = start_writers(out, n, limit, share, barrier)
    wait_ready(barrier, processes)
    started = time.perf_counter()
    killed = 0
    while killed < kills:  # kill a random running writer after a random moment, and start a new one in its place
        time.sleep(rng.uniform(0.5, 2.0))
        running = [p for p in processes if p.poll() is None]
        if not running:
            break
        victim = rng.choice(running)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed += 1
        replacement = start_writers(out, 1, limit, share, work / f"{name}-barrier-{killed}")
        wait_ready(work / f"{name}-barrier-{killed}", replacement)
        processes += replacement
    failed = []
    for process in processes:
        _, err = process.communicate(timeout=1800)
        if process.returncode not in (0, -signal.SIGKILL):
            failed.append(err.decode()[-500:])
    return time.perf_counter() - started, failed


def run(say, args) -> None:
    import xtl
    from xtl import datasets

    work = Path(tempfile.mkdtemp(prefix="xtl-work-sharing-"))
    items = datasets.load("xcopa", "sw", data_dir=DATA)[: args.limit]
    started = time.perf_counter()
    reference = rows_of(xtl.sweep(xtl.load_model(MODEL), items, sites=["ffn", "attn-paper"], configs="0,3", max_batch_rows=6, progress=False))
    single_s = time.perf_counter() - started
    needed = len(reference)
    say(f"- workload: tiny-llama, XCOPA sw, {args.limit} instances, sites ffn + attn-paper, configurations 0,3: "
        f"{needed} rows the run needs; {args.writers} writers started together on the same instances; one thread each")  # fmt: skip
    say(f"- one process alone: {single_s:.1f} s (model load included)")
    say()
    say("| round | writers | kills | rows stored (raw) | stored / needed | lost | duplicated | different | wall (s) | writer errors |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    rng = random.Random(23)
    for name, share, kills in (("without leases", False, 0), ("with leases", True, 0), ("with leases, kills", True, args.kills)):
        wall, failed = round_(work, name.replace(" ", "-").replace(",", ""), args.writers, args.limit, share, kills, rng)
        raw, lost, duplicated, different = compare(work / name.replace(" ", "-").replace(",", ""), reference)
        say(f"| {name} | {args.writers} | {kills} | {raw} | {raw / needed:.2f} | {lost} | {duplicated} | {different} | {wall:.1f} | {len(failed)} |")
        for error in failed:
            say(f"    writer error: {error!r}")
    say()
    say("Rows stored counts every row of every part (a row two writers stored counts twice); "
        "`xtl.results.load` reads each row once. Wall time: from the moment every writer had loaded its model.")  # fmt: skip


if __name__ == "__main__":
    import argparse

    from _reporting import Report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = Report("Work sharing between writers of one run directory")
    report.header()
    run(report, args)
    if args.out:
        args.out.write_text(report.text())
