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

import contextlib
import math
import os
import re
import socket
import sys
import tempfile
from typing import Callable, Sequence

from xtl.errors import XtlError

NO_RAY = "--ray needs Ray, which is not installed: run `pip install 'xtransplant[ray]'` (or `pip install ray`)."
RESTARTS = 4  # a worker that dies is restarted (and its shard retried) this many times
CONNECT_TIMEOUT_S = 10  # how long an address may take to answer before it is called unreachable
_ADDRESS = re.compile(r"(?P<scheme>ray://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(?P<port>\d{1,5})")
ADDRESS_FORMS = "HOST:PORT of a running cluster's head (like 10.0.0.5:6379), ray://HOST:PORT for Ray Client, or auto"


RAY_INIT_LOG = os.path.join(tempfile.gettempdir(), "xtl-ray-init.log")


@contextlib.contextmanager
def native_stderr_to(path: str):
    """Send file descriptor 2 (what C++ libraries write warnings to) into `path` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def require_ray():
    try:
        import ray
    except ImportError:
        raise XtlError(NO_RAY) from None
    return ray


def check_address(address: str | None) -> str | None:
    """The form of a Ray address (None: start a local cluster), checked without Ray."""
    if address is None or address == "auto":
        return address
    match = _ADDRESS.fullmatch(address.strip()) if isinstance(address, str) else None
    if match is None or not 0 < int(match["port"]) < 65536:
        raise XtlError(f"--ray {address!r} is not a Ray address: give {ADDRESS_FORMS}.")
    return address.strip()


def check_reachable(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, within `timeout` seconds, an address where nothing answers
    (Ray itself would retry for many minutes, printing warnings)."""
    address = check_address(address)
    if address is None or address == "auto":
        return
    match = _ADDRESS.fullmatch(address)
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as error:
        why = "timed out" if isinstance(error, socket.timeout) else (error.strerror or type(error).__name__).lower()
    raise XtlError(
        f"cannot reach the Ray cluster at {address!r} ({why} within {timeout:g} s): start it with "
        "`ray start --head` on that machine, or check the address and port (the head's GCS port, 6379 by default)."
    )


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
        _connect(ray, address)
    actors: list = []
    try:
        n_workers, resources = _workers_for(ray, workers)
        Worker = ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS, **resources)(_Worker)
        progress = ray.remote(num_cpus=0)(_Progress).remote()
        actors = [Worker.remote() for _ in range(n_workers)]
        if on_start is not None:
            ray.get([actor.pid.remote() for actor in actors])
            on_start(actors)
        _Schedule(ray, jobs, actors, progress).run(on_rows)
    finally:
        for actor in actors:  # also on an error: a cluster we joined keeps no idle workers of ours
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def _connect(ray, address: str | None) -> None:
    """Start a local cluster (`address` None) or join the one at `address`; one sentence when it does not answer."""
    check_reachable(address)
    try:
        with native_stderr_to(RAY_INIT_LOG):  # Ray's C++ core warns on stderr while it connects
            if address is None:
                ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ValueError, TimeoutError) as error:
        raise XtlError(f"cannot reach the Ray cluster at {address!r} ({error}): start it with `ray start --head` or check the address.") from None


class _Schedule:
    """The jobs' shards handed to the actors: each actor, when free, takes the next shard
    of the model it holds (else the next shard), until none is left and none runs.

    `ray` is the `ray` module (tests give a fake with `wait`, `get` and `exceptions`)."""

    def __init__(self, ray, jobs: Sequence, actors: list, progress):
        self.ray, self.jobs, self.actors, self.progress = ray, jobs, actors, progress
        self.queue = shards(jobs, len(actors))  # (job index, instances), not yet handed out
        self.holding: dict[int, object] = {}  # actor index -> the LoadOptions of the model it last loaded
        self.running: dict = {}  # object ref -> (actor index, job index)
        self.reported = 0  # rows told to `on_rows` so far

    def run(self, on_rows: Callable[[int], None] | None) -> None:
        for k in range(min(len(self.actors), len(self.queue))):
            self.submit(k)
        while self.running:
            ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=0.5)
            self.report(on_rows)
            for ref in ready:
                k, index = self.running.pop(ref)
                self.check(ref, self.jobs[index])  # the failing shard's own job
                if self.queue:
                    self.submit(k)
        self.report(on_rows)

    def next_for(self, k: int) -> tuple[int, tuple]:
        for position, (index, _) in enumerate(self.queue):
            if self.jobs[index].model.load == self.holding.get(k):
                return self.queue.pop(position)
        return self.queue.pop(0)

    def submit(self, k: int) -> None:
        index, instances = self.next_for(k)
        job = self.jobs[index]
        self.holding[k] = job.model.load
        ref = self.actors[k].sweep.remote(job.model.load, instances, str(job.out), job.options, self.progress)
        self.running[ref] = (k, index)

    def report(self, on_rows: Callable[[int], None] | None) -> None:
        if on_rows is None:
            return
        total = self.ray.get(self.progress.total.remote())
        if total > self.reported:
            on_rows(total - self.reported)
            self.reported = total

    def check(self, ref, job) -> None:
        """The shard's outcome: a worker that failed every retry, or a user mistake, is one sentence."""
        try:
            status, message = self.ray.get(ref)
        except self.ray.exceptions.RayError as error:
            raise XtlError(
                f"a Ray worker sweeping {job.model.load.model} into {str(job.out)!r} failed {RESTARTS + 1} times "
                f"({type(error).__name__}; its log is under /tmp/ray/session_latest/logs): fix the cause, then "
                "rerun the same command to resume."
            ) from None
        if status == "error":
            raise XtlError(message)
