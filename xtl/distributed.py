"""Sweeps over a Ray cluster: one worker per GPU (or per CPU on a CPU-only
cluster), each loading its model once and sweeping shards of instances into
the shared run directories.

The run directory does the bookkeeping (`xtl.results`): any number of workers
write parts side by side, and a sweep skips the rows already stored. So a
worker that dies is simply restarted by Ray (`max_restarts`) and its shard
retried (`max_task_retries`): the retry computes only the rows the dead worker
had not stored, and a row stored twice is read once.

Every worker needs the model files at the same path (or the model in its local
Hugging Face cache) and the study directory on a file system all workers share.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

from xtl.errors import XtlError

NO_RAY = "--ray needs Ray, which is not installed: run `pip install 'xtl[ray]'` (or `pip install ray`)."
RESTARTS = 4  # a worker that dies is restarted (and its shard retried) this many times


def require_ray():
    try:
        import ray
    except ImportError:
        raise XtlError(NO_RAY) from None
    return ray


class _Worker:
    """A Ray actor: holds one model at a time (keyed on its `LoadOptions`) and sweeps shards with it."""

    def __init__(self):
        self.loaded, self.model = None, None

    def pid(self) -> int:
        return os.getpid()

    def sweep(self, load, instances, out, options, progress) -> tuple[str, str | None]:
        import xtl

        try:
            if load != self.loaded:
                self.model = None  # free the previous model first
                _empty_cuda_cache()
                self.model = load.load()
                self.loaded = load
            on_rows = (lambda n: progress.add.remote(n)) if progress is not None else None
            xtl.sweep(self.model, list(instances), options=options, out=out, progress=False, on_rows=on_rows, load_result=False)
        except XtlError as error:  # a user mistake: reported once, not retried
            return ("error", str(error))
        return ("done", None)


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Progress:
    """A counter the workers add stored rows to; the driver reads it for the bar."""

    def __init__(self):
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def total(self) -> int:
        return self.rows


def _workers_for(ray, workers: int | None) -> tuple[int, dict]:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return (min(workers, gpus) if workers else gpus), {"num_gpus": 1}
    cpus = int(resources.get("CPU", 1))
    return (min(workers, cpus) if workers else max(1, cpus)), {"num_cpus": 1}


def shards(jobs: Sequence, n_workers: int, per_worker: int = 4, max_size: int = 64) -> list[tuple[int, tuple]]:
    """(job index, instances) pieces: about `per_worker` pieces per worker for each job, at most `max_size` instances each."""
    pieces = []
    for index, job in enumerate(jobs):
        n = len(job.instances)
        size = max(1, min(max_size, math.ceil(n / (n_workers * per_worker))))
        pieces.extend((index, job.instances[start : start + size]) for start in range(0, n, size))
    return pieces


def run_jobs(
    jobs: Sequence,
    *,
    address: str | None = None,
    on_rows: Callable[[int], None] | None = None,
    workers: int | None = None,
    on_start: Callable[[list], None] | None = None,
) -> None:
    """Run every job's sweep over a Ray cluster (`address` None: start a local one).

    `on_rows(n)` is told each batch of stored rows; `on_start(actors)` gets the
    worker actors once they run (tests use it to kill one)."""
    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address is None:
                ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except ConnectionError as error:
            raise XtlError(f"cannot reach the Ray cluster at {address!r} ({error}): start it with `ray start --head` or check the address.") from None
    actors: list = []
    try:
        n_workers, resources = _workers_for(ray, workers)
        Worker = ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS, **resources)(_Worker)
        progress = ray.remote(num_cpus=0)(_Progress).remote()
        actors = [Worker.remote() for _ in range(n_workers)]
        if on_start is not None:
            ray.get([actor.pid.remote() for actor in actors])
            on_start(actors)
        queue = shards(jobs, n_workers)
        holding: dict[int, object] = {}  # actor index -> the LoadOptions of the model it last loaded
        running: dict = {}  # object ref -> (actor index, job index)
        reported = 0

        def next_for(k: int):
            for position, (index, _) in enumerate(queue):
                if jobs[index].model.load == holding.get(k):
                    return queue.pop(position)
            return queue.pop(0)

        def submit(k: int) -> None:
            index, instances = next_for(k)
            job = jobs[index]
            holding[k] = job.model.load
            ref = actors[k].sweep.remote(job.model.load, instances, str(job.out), job.options, progress)
            running[ref] = (k, index)

        for k in range(min(n_workers, len(queue))):
            submit(k)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            if on_rows is not None:
                total = ray.get(progress.total.remote())
                if total > reported:
                    on_rows(total - reported)
                    reported = total
            for ref in ready:
                k, index = running.pop(ref)
                try:
                    status, message = ray.get(ref)
                except ray.exceptions.RayError as error:
                    job = jobs[index]  # the failing shard's own job
                    raise XtlError(
                        f"a Ray worker sweeping {job.model.load.model} into {str(job.out)!r} failed {RESTARTS + 1} times "
                        f"({type(error).__name__}; its log is under /tmp/ray/session_latest/logs): fix the cause, then "
                        "rerun the same command to resume."
                    ) from None
                if status == "error":
                    raise XtlError(message)
                if queue:
                    submit(k)
        if on_rows is not None:
            total = ray.get(progress.total.remote())
            if total > reported:
                on_rows(total - reported)
    finally:
        for actor in actors:  # also on an error: a cluster we joined keeps no idle workers of ours
            ray.kill(actor)
        if started_here:
            ray.shutdown()
