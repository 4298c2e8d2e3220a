"""Work sharing between writers of one run directory: instance leases.

Writers that sweep the same instances into one run directory (several `xtl
sweep` processes, machines on a shared file system) would each compute every
instance. Instead, a writer computes an instance only while it holds the
instance's lease:

    RUN_DIR/_leases/<hash of the instance id>.lease    {"writer", "host", "pid", "instance_id"}

- a lease is taken atomically (a complete private file hard-linked into place,
  which fails when another writer holds it);
- its holder refreshes the file's modification time every `ttl / 4` seconds
  (a background thread), and removes it once the instance's rows are stored;
- a lease is stale when its writer's process is gone (same host), or when it
  was not refreshed for `ttl` seconds (a writer on another machine that died):
  then any writer may take it over.

Leases only decide who computes what: correctness never depends on them. The
run directory keeps every row a writer stores, and `xtl.results.load` reads a
row stored twice once, so a lease taken over in a race (two writers both
replacing the same stale lease) costs duplicated work, never a wrong or
missing row.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

LEASE_DIR = "_leases"
LEASE_TTL_S = float(os.environ.get("XTL_LEASE_TTL_S", 120))  # a lease not refreshed for this long is stale


class Leases:
    """The leases one writer holds in one run directory."""

    def __init__(self, run_dir: str | os.PathLike, writer: str, ttl: float = LEASE_TTL_S):
        self.folder = Path(run_dir) / LEASE_DIR
        self.writer, self.ttl = writer, ttl
        self.host = socket.gethostname()
        self.held: dict[str, Path] = {}  # instance id -> its lease file
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        try:
            self.folder.mkdir(exist_ok=True)
        except OSError:
            self.folder = None  # a folder we cannot write to: every writer computes everything, as before

    def path(self, instance_id: str) -> Path:
        return self.folder / f"{hashlib.sha256(instance_id.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}.lease"

    def take(self, instance_id: str) -> bool:
        """Hold `instance_id`'s lease (True), unless another live writer holds it (False)."""
        if self.folder is None or instance_id in self.held:
            return True
        path = self.path(instance_id)
        for _ in range(2):
            if self._create(path, instance_id):
                with self._lock:
                    self.held[instance_id] = path
                self._start_heartbeat()
                return True
            if not self._stale(path):
                return False
            try:
                path.unlink()  # a dead writer's lease; in a race, two writers may both compute it (harmless)
            except FileNotFoundError:
                pass
        return False

    def release(self, instance_id: str) -> None:
        with self._lock:
            path = self.held.pop(instance_id, None)
        if path is not None:
            try:
                path.unlink()
            except OSError:
                pass

    def close(self) -> None:
        """Stop refreshing and give back every lease still held."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        for instance_id in list(self.held):
            self.release(instance_id)

    def __enter__(self) -> "Leases":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- inside --------------------------------------------------------------------------------

    def _create(self, path: Path, instance_id: str) -> bool:
        record = {"writer": self.writer, "host": self.host, "pid": os.getpid(), "instance_id": instance_id}
        try:
            return create_once(path, json.dumps(record).encode(), durable=False)
        except OSError:
            return True  # leases could not be written: compute it (duplicated work at worst, never a lost row)

    def _stale(self, path: Path) -> bool:
        """The lease's writer is gone (a process of this host that no longer runs), or it was not refreshed for `ttl`."""
        try:
            if time.time() - path.stat().st_mtime > self.ttl:
                return True
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return True  # released meanwhile
        except (OSError, ValueError):
            return False  # unreadable (half-written without hard links): stale once `ttl` has passed
        if record.get("host") == self.host and isinstance(record.get("pid"), int):
            return not _process_exists(record["pid"])
        return False

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._refresh, name="xtl-leases", daemon=True)
            self._heartbeat.start()

    def _refresh(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            with self._lock:
                paths = list(self.held.values())
            for path in paths:
                try:
                    os.utime(path)
                except OSError:
                    pass


def create_once(path: Path, data: bytes, *, durable: bool = True) -> bool:
    """Create `path` holding `data` unless it exists (True: this call created it).
    Readers never see it half-written: `data` goes to a private temporary file,
    hard-linked into place, which fails when another writer got there first;
    where the file system has no hard links, an exclusive create, then the
    write. `durable`: the file and its folder are fsynced. Raises the OSError
    of anything else that fails."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as handle:
            _write(handle, data, durable)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            try:  # no hard links here: exclusive create, then write
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                _write(handle, data, durable)
        if durable:
            fsync_dir(path.parent)
        return True
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def _write(handle, data: bytes, durable: bool) -> None:
    handle.write(data)
    if durable:
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a file created or renamed in it) durable, where the system allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ENABLED = True  # False: every writer computes every instance it is given (for measuring)


def shares(run_dir, writer: str, instance_ids: list[str], refresh: Callable[[], None], complete: Callable[[int], bool],
           chunk: int, poll_s: float = 0.5) -> Iterator[list[int]]:
    """The instances this writer computes, `chunk` at a time (indices into
    `instance_ids`): those not `complete` and not leased by another live writer,
    each leased while the caller computes it (until the next chunk is asked
    for). When every instance left is leased by others, it waits for them (or
    for their leases to go stale), so that the run is complete when it ends.
    `refresh()` reads the run directory afresh (at the start, once per chunk
    after its leases are taken, and after each wait); `complete(index)` then
    answers from what it read, so a chunk may hold an instance another writer
    completed meanwhile (the caller leaves out the rows it finds stored). An
    instance once complete stays so."""
    refresh()
    remaining = [index for index in range(len(instance_ids)) if not complete(index)]
    if not ENABLED:
        if remaining:
            yield remaining
        return
    with Leases(run_dir, writer) as leases:
        while remaining:
            mine, kept = [], []
            for position, index in enumerate(remaining):
                if complete(index):
                    continue
                if len(mine) < chunk and leases.take(instance_ids[index]):
                    mine.append(index)
                else:
                    kept.append(index)
                if len(mine) == chunk:
                    kept.extend(remaining[position + 1 :])
                    break
            remaining = kept
            if mine:
                refresh()  # what the last holder of these leases stored before giving them back
                yield mine
                for index in mine:
                    leases.release(instance_ids[index])
            elif remaining:
                time.sleep(poll_s)  # the rest is leased by live writers: wait for their rows (or a stale lease)
                refresh()
