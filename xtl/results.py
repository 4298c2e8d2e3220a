"""The results table on disk: one long table, Parquet parts in a run directory.

    RUN_DIR/_run.json                          the run's settings (`Settings`), written once
    RUN_DIR/part-<writer>-00000.parquet        rows, one file per finished batch of one writer
    RUN_DIR/part-<writer>-00001.parquet        ...

One row per instance x site x source layer x target layer, plus one vanilla row
per instance (site, source_layer and target_layer null). This module owns the
row: `SCHEMA` and the record builder `record` live here together.

Any number of writers (processes, Ray workers, machines on one shared file
system) can add to one run directory at once:

- `_run.json` is created exactly once (written to a private temporary file,
  fsynced, then hard-linked into place, which fails if another writer got there
  first); every writer then checks its settings against it;
- each writer names its parts with its own writer id and a sequence number, so
  names never collide; a part is written to a hidden temporary file, fsynced,
  and renamed: a reader never sees half a part;
- `load` drops a row that two writers both computed (rows are deterministic),
  and refuses a part whose rows carry another run id.

Files that are not data start with '_' or '.', which pyarrow, pandas and DuckDB
skip: `pd.read_parquet(RUN_DIR)`, `pyarrow.dataset.dataset(RUN_DIR)` and DuckDB's
`SELECT * FROM 'RUN_DIR/*.parquet'` read a run directory as it is.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from xtl import leases
from xtl.checks import check_mode, check_prompt_format, parse_layers
from xtl.errors import XtlError
from xtl.model.fingerprints import text_fingerprint
from xtl.signals import SIGNALS  # one float column per confidence signal

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("model_fingerprint", pa.string()),
        ("n_layers", pa.int32()),
        ("dtype", pa.string()),
        ("max_new_tokens", pa.int32()),
        ("prompt_format", pa.string()),
        ("benchmark", pa.string()),
        ("split", pa.string()),
        ("lang", pa.string()),
        ("instance_id", pa.string()),
        ("instance_fingerprint", pa.string()),
        ("source", pa.string()),
        ("target", pa.string()),
        ("gold", pa.string()),
        ("site", pa.string()),
        ("source_layer", pa.int32()),
        ("target_layer", pa.int32()),
        ("token_ids", pa.list_(pa.int32())),
        ("text", pa.string()),
        ("correct", pa.bool_()),
        *((name, pa.float64()) for name in SIGNALS),
        # scoring mode (`xtl.scoring`); null in generate mode and in parts written before it
        ("mode", pa.string()),
        ("option_token_ids", pa.list_(pa.list_(pa.int32()))),
        ("option_logprobs", pa.list_(pa.float64())),
        ("option_choice", pa.int32()),
        ("option_choice_norm", pa.int32()),
        ("gold_option", pa.int32()),
        ("gold_logprob", pa.float64()),
        ("gold_margin", pa.float64()),
    ]
)
OPTION_COLUMNS = ("option_token_ids", "option_logprobs", "option_choice", "option_choice_norm", "gold_option", "gold_logprob", "gold_margin")
COLUMNS = tuple(SCHEMA.names)
KEY_COLUMNS = ("instance_id", "site", "source_layer", "target_layer")
SETTINGS_FILE = "_run.json"
LEGACY_SETTINGS_FILE = "run.json"  # run directories written before xtl 0.2 (read only)
PART_GLOB = "part-*.parquet"


# --- settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """A sweep's settings: what `_run.json` holds, what a resume compares, what the run id hashes.

    Every field but `model` (a display name: the same checkpoint may sit in
    folders of any name, and is recognised by `model_fingerprint`) is binding:
    rows can be added to a run directory only with equal values.
    """

    model_fingerprint: str
    architecture: str
    n_layers: int
    dtype: str
    sites: tuple[str, ...]
    configs: str | tuple[tuple[int, int], ...]  # "all", or the (source_layer, target_layer) pairs
    max_new_tokens: int
    prompt_format: str = "raw"
    model: str = "model"
    # the fingerprint of each part of the model (weights and config, tokenizer, chat template, EOS ids):
    # recorded so that a refused resume names what changed; `model_fingerprint` covers them all
    model_parts: tuple[tuple[str, str], ...] = ()
    mode: str = "generate"  # or "score" (`xtl.scoring`): one run directory holds one mode

    NOT_BINDING = ("model", "model_parts")

    def __post_init__(self) -> None:
        check_prompt_format(self.prompt_format)
        object.__setattr__(self, "model_parts", tuple(sorted(tuple(p) for p in self.model_parts)))
        check_mode(self.mode)
        object.__setattr__(self, "sites", tuple(sorted(self.sites)))
        if not isinstance(self.configs, str):
            object.__setattr__(self, "configs", tuple(sorted((int(i), int(j)) for i, j in self.configs)))

    def binding(self) -> dict[str, Any]:
        """The binding settings as JSON values."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.NOT_BINDING}
        values["sites"] = list(self.sites)
        values["configs"] = self.configs if isinstance(self.configs, str) else [list(p) for p in self.configs]
        if self.mode == "generate":  # as before modes existed: the run ids of earlier runs stay theirs
            del values["mode"]
        return values

    @property
    def run_id(self) -> str:
        """12 hex digits of the binding settings: equal settings, equal run id, whatever the folder names."""
        return hashlib.sha256(json.dumps(self.binding(), sort_keys=True).encode()).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        return {**self.binding(), "model": self.model, "model_parts": dict(self.model_parts), "run_id": self.run_id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Settings":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        values.setdefault("prompt_format", "raw")
        parts = values.get("model_parts")
        values["model_parts"] = tuple(sorted(parts.items())) if isinstance(parts, dict) else ()
        configs = values.get("configs")
        if not isinstance(configs, str) and configs is not None:
            values["configs"] = tuple(tuple(p) for p in configs)
        return cls(**values)

    def changes_since(self, stored: "Settings") -> list[str]:
        """'key: STORED there, NOW now' for each binding setting of these (now) that differs from `stored`
        (for the model fingerprint, naming the parts of the model that changed)."""
        there, now = {"mode": stored.mode, **stored.binding()}, {"mode": self.mode, **self.binding()}
        return [self._model_change(stored) if key == "model_fingerprint" else f"{key}: {there.get(key)!r} there, {value!r} now"
                for key, value in now.items() if there.get(key) != value]  # fmt: skip

    def _model_change(self, stored: "Settings") -> str:
        """model_fingerprint's change, naming the parts of the model that changed when both runs recorded them."""
        there, now = dict(stored.model_parts), dict(self.model_parts)
        changed = [part for part in now if part in there and there[part] != now[part]]
        named = f" (the model's {', '.join(changed)} differ{'s' if len(changed) == 1 else ''})" if changed else ""
        return f"model_fingerprint: {stored.model_fingerprint!r} there, {self.model_fingerprint!r} now{named}"


def sweep_values(options, n_layers: int) -> dict[str, Any]:
    """The settings a sweep's options (`xtl.options.SweepOptions`) fix for a model of `n_layers` layers."""
    pairs = parse_layers(options.configs, n_layers)
    scoring = options.mode == "score"
    return dict(
        sites=options.sites,
        configs="all" if pairs == parse_layers("all", n_layers) else tuple(pairs),
        max_new_tokens=0 if scoring else options.max_new_tokens,  # (unused when scoring)
        prompt_format=options.prompt_format,
        mode=options.mode,
    )


def sweep_settings(model, options) -> Settings:
    """The settings of sweeping `model` (a loaded HookedTransformer) with `options`."""
    info = getattr(model, "xtl", None)
    if info is None:  # a model built in code
        from xtl.model import fingerprint

    return Settings(
        model=info.name if info else "model",
        model_fingerprint=info.fingerprint if info else fingerprint(model),
        architecture=info.architecture if info else model.cfg.original_architecture,
        n_layers=model.cfg.n_layers,
        dtype=str(model.cfg.dtype).removeprefix("torch."),
        **sweep_values(options, model.cfg.n_layers),
        model_parts=info.fingerprint_parts if info else (),
    )


def check_resumable(path: str | os.PathLike, stored: Settings, now: Settings) -> None:
    """Rows join a run directory only with its binding settings: each one that differs is named.
    The command line calls this before loading the model, with what it cannot know yet taken from `stored`."""
    changes = now.changes_since(stored)
    if changes:
        raise XtlError(
            f"{str(path)!r} holds a run made with other settings ({'; '.join(changes)}): "
            "rerun with the same settings to resume it, or choose another --out."
        )


# --- rows ----------------------------------------------------------------------------------


def instance_fingerprint(instance, prompt_format: str = "raw") -> str:
    """16 hex digits of what an instance's rows depend on: source, target, gold, scorer
    (with its options and labels), language and the prompt format."""
    content = {
        "lang": getattr(instance, "lang", "-"),
        "source": instance.source,
        "target": instance.target,
        "gold": getattr(instance, "gold", None),
        "scorer": getattr(instance, "scorer", None),
        "options": list(getattr(instance, "options", ()) or ()),
        "labels": dict(getattr(instance, "labels", None) or {}),
        "prompt_format": prompt_format,
    }
    return text_fingerprint(content)


def record(
    settings: Settings,
    run_id: str,
    instance,
    site: str | None,
    source_layer: int | None,
    target_layer: int | None,
    token_ids: list[int],
    text: str,
    *,
    fingerprint: str | None = None,
    scores=None,
    **signals: float | None,
) -> dict:
    """One row of the results table (the columns of `SCHEMA`, in order).

    `signals` are the optional float columns (`SIGNALS`), null when not
    given. `scores` (an `xtl.scoring.Scores`): a scoring-mode row, whose
    `correct` is whether the best-scored option is the gold (null with one
    option or no gold) and whose `token_ids` / `text` are that option's."""
    unknown = set(signals) - set(SIGNALS)
    if unknown:
        raise TypeError(f"unknown score columns {sorted(unknown)}")
    is_correct = getattr(instance, "is_correct", None)
    row = {
        "run_id": run_id,
        "model": settings.model,
        "model_fingerprint": settings.model_fingerprint,
        "n_layers": settings.n_layers,
        "dtype": settings.dtype,
        "max_new_tokens": settings.max_new_tokens,
        "prompt_format": settings.prompt_format,
        "benchmark": getattr(instance, "benchmark", "pairs"),
        "split": getattr(instance, "split", "-"),
        "lang": getattr(instance, "lang", "-"),
        "instance_id": instance.id,
        "instance_fingerprint": fingerprint or instance_fingerprint(instance, settings.prompt_format),
        "source": instance.source,
        "target": instance.target,
        "gold": getattr(instance, "gold", None),
        "site": site,
        "source_layer": source_layer,
        "target_layer": target_layer,
        "token_ids": list(token_ids),
        "text": text,
        "correct": is_correct(text) if is_correct is not None else None,
    }
    for name in SIGNALS:
        row[name] = signals.get(name)
    row["mode"] = settings.mode
    option_columns = scores.columns() if scores is not None else {}
    for name in OPTION_COLUMNS:
        row[name] = option_columns.get(name)
    if scores is not None:
        several = len(scores.option_logprobs) > 1 and scores.gold_option is not None
        row["correct"] = scores.option_choice == scores.gold_option if several else None
    return row


# --- file system errors as sentences ---------------------------------------------------------


def _os_error(error: OSError, path: Path, action: str = "write") -> XtlError:
    where = str(path)
    if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
        return XtlError(
            f"the disk holding {where!r} is full: free some space, then rerun the same command "
            "to resume (every finished part is kept)."
        )
    if error.errno == errno.EROFS:
        return XtlError(f"cannot {action} {where!r}: it is on a read-only file system; choose a folder on a writable disk.")
    if error.errno in (errno.EACCES, errno.EPERM):
        return XtlError(f"cannot {action} {where!r}: permission denied; choose a folder you can write to, or fix its permissions.")
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        return XtlError(f"cannot create {where!r}: a part of that path is a file, not a folder; choose another path.")
    return XtlError(f"cannot {action} {where!r} ({error.strerror or error}): choose another folder.")


def check_run_dir(path: str | os.PathLike) -> Path:
    """A path that can hold a run, checked before any work starts (nothing is created):
    `_check_path`, then a run directory's settings file and every part (read, its checksums verified)."""
    path = _check_path(path)
    if path.is_dir():
        existing_settings = settings_path(path)
        if existing_settings is not None:
            # an empty or invalid settings file, or a damaged part, is named now, not after loading a model
            run_id = _read_settings_file(existing_settings)["run_id"]
            paths = parts(path)
            check_one_content(path, list(zip(paths, _read_parts(path, paths, ["run_id", "instance_id", "instance_fingerprint", "lang"], run_id))))
        else:
            _refuse_foreign(path)
    return path


def _check_path(path: str | os.PathLike) -> Path:
    """A path that is, or can become, a folder this process writes to (what is in it is not looked at)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise XtlError(f"--out {str(path)!r} is a file: give a directory for the run.")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise XtlError(f"--out {str(path)!r} cannot be created: {str(existing)!r} is a file, not a folder; choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        error = OSError(errno.EROFS if read_only else errno.EACCES, "")
        raise _os_error(error, path if existing == path else existing)
    if not path.exists():
        _check_creatable(existing, path)
    return path


def _check_creatable(existing: Path, path: Path) -> None:
    """A folder can be made in `existing` (the nearest existing parent of `path`):
    tried with a hidden folder, removed at once. Permission bits do not tell
    (root passes them; /proc, /sys and full disks refuse anyway)."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".xtl-check-", dir=existing))
    except OSError as error:
        raise _os_error(error, path, "create") from None


def _refuse_foreign(path: Path) -> None:
    """A folder without settings may hold only parts, temporary files and '_' files (ours)."""
    foreign = sorted(
        p.name for p in path.iterdir()
        if not _is_temp(p.name) and not p.name.startswith(("part-", "_")) and p.name not in ("figures", "report.html")
    )  # fmt: skip
    if foreign:
        raise XtlError(
            f"{str(path)!r} is not empty and holds no xtl run (it has {foreign[0]!r}): "
            "choose a new or empty directory for --out."
        )


# --- the run directory ------------------------------------------------------------------------


_WRITER: tuple[int, str, "itertools.count[int]"] | None = None


def _writer_id() -> str:
    """This process's writer id: host, pid and a random tag (new after a fork)."""
    global _WRITER
    if _WRITER is None or _WRITER[0] != os.getpid():
        host = re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:16] or "host"
        _WRITER = (os.getpid(), f"{host}-{os.getpid()}-{secrets.token_hex(3)}", itertools.count())
    return _WRITER[1]


def _next_part_number() -> int:
    _writer_id()
    return next(_WRITER[2])


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _read_settings_file(path: Path) -> dict:
    """The JSON of a settings file, or one sentence saying how to recover."""
    run_dir = path.parent
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        if not isinstance(data, dict) or "model_fingerprint" not in data or "run_id" not in data:
            raise ValueError("not an xtl settings object")
        hashed = Settings.from_json(data).run_id
    except (ValueError, TypeError, UnicodeDecodeError, XtlError):
        what = "empty" if path.stat().st_size == 0 else "not a valid xtl settings file"
        raise XtlError(
            f"{str(path)!r} is {what}: delete it and rerun the sweep command that made {str(run_dir)!r} "
            "(the settings file is recreated and every part whose run id matches is kept)."
        ) from None
    except OSError as error:
        raise _os_error(error, path, "read") from None
    # (a generate run's settings leave `mode` out, so that run ids made before modes existed stay theirs)
    written_by_this_version = all(
        f.name in data for f in dataclasses.fields(Settings) if f.name not in Settings.NOT_BINDING and f.name != "mode"
    )
    if written_by_this_version and data["run_id"] != hashed:
        raise XtlError(
            f"the run id in {str(path)!r} ({data['run_id']!r}) is not the one its settings make ({hashed}): the file "
            f"was edited; put back the original (or delete it and rerun the sweep command that made {str(run_dir)!r}, "
            "which recreates it and keeps every part)."
        )
    return data


def settings_path(run_dir: str | os.PathLike) -> Path | None:
    run_dir = Path(run_dir)
    for name in (SETTINGS_FILE, LEGACY_SETTINGS_FILE):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


@dataclass(frozen=True)
class Row:
    """One row to compute: vanilla (site None) or one configuration of one instance."""

    instance_index: int  # the instance's position in the sweep's list of instances
    site: str | None
    source_layer: int | None
    target_layer: int | None


class Run:
    """Where a sweep's rows go: here, in memory. `RunDir` keeps them in a run directory."""

    path: Path | None = None

    def __init__(self, settings: Settings, run_id: str | None = None):
        self.settings = settings
        self.run_id = run_id or settings.run_id
        self.fingerprints: list[str] = []  # per instance of the last `pending` call
        self._rows: list[dict] = []

    def done(self) -> dict[tuple, str | None]:
        """Row key -> instance fingerprint of every row already stored."""
        return {}

    def pending(self, instances: list, configs: list[tuple[str, int, int]]) -> list[Row]:
        """The rows of `instances` not stored yet, instance by instance: its vanilla row, then its
        configurations (site, source_layer, target_layer) in the order given. Refuses an instance
        stored before with other content under the same id."""
        done = self.done()
        self.fingerprints = [instance_fingerprint(item, self.settings.prompt_format) for item in instances]
        stored = {key[0]: fingerprint for key, fingerprint in done.items() if fingerprint is not None}
        for item, fingerprint in zip(instances, self.fingerprints):
            if stored.get(item.id, fingerprint) != fingerprint:
                raise XtlError(
                    f"instance {item.id!r} is already in {str(self.path)!r} with other content "
                    "(its source, target, gold, scorer, language or prompt format changed): sweep the changed instances into "
                    "another --out, or give them new ids."
                )
        cells = [(None, None, None), *configs]
        return [
            Row(index, *cell) for index, item in enumerate(instances) for cell in cells if (item.id, *cell) not in done
        ]

    def record(self, instance, row: Row, token_ids: list[int], text: str, scores=None, **signals: float | None) -> dict:
        return record(self.settings, self.run_id, instance, row.site, row.source_layer, row.target_layer, token_ids,
                      text, fingerprint=self.fingerprints[row.instance_index], scores=scores, **signals)  # fmt: skip

    def shares(self, instances: list, pending: list[Row], batch_rows: int) -> Iterator[list[Row]]:
        """This writer's share of the `pending` rows, in pieces: here, all of them at once."""
        if pending:
            yield pending

    def append(self, rows: list[dict]) -> None:
        self._rows.extend(rows)

    def table(self) -> pd.DataFrame:
        """Every row of the run, as the results DataFrame."""
        return to_frame(self._rows)


class RunDir(Run):
    """A run directory, opened by one writer (any number may share it)."""

    def __init__(self, path: Path, settings: Settings, run_id: str):
        super().__init__(settings, run_id)  # the directory's run id (from its settings file)
        self.path = path
        self.writer = _writer_id()
        self._reset()

    @classmethod
    def open(cls, path: str | os.PathLike, settings: Settings) -> "RunDir":
        """Create the run directory with these settings, or join it when its settings are equal
        (its parts are read now, as `check_run_dir` does, and once: `done` reads only later ones)."""
        path = _check_path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _os_error(error, path, "create") from None
        existing = settings_path(path)
        joined = existing is not None
        if not joined:
            _refuse_foreign(path)
            cls._create_settings(path / SETTINGS_FILE, settings)
            existing = path / SETTINGS_FILE
        data = _read_settings_file(existing)
        there = Settings.from_json(data)
        # The directory's display name and run id stay what its first writer recorded.
        run = cls(path, dataclasses.replace(settings, model=there.model), data["run_id"])
        if joined:
            run.refresh()  # a damaged part, or one instance stored with two contents, is named before the settings
        check_resumable(path, there, settings)
        return run

    @staticmethod
    def _create_settings(final: Path, settings: Settings) -> None:
        """Create the settings file exactly once (`leases.create_once`); when another writer
        created it first, the caller compares settings with it."""
        try:
            leases.create_once(final, json.dumps(settings.to_json(), indent=2, sort_keys=True).encode())
        except OSError as error:
            raise _os_error(error, final.parent) from None

    def parts(self) -> list[Path]:
        return parts(self.path)

    def _index(self, written: dict[Path, pa.Table] | None = None) -> dict[str, tuple[str, str, Path]]:
        """instance id -> (fingerprint, language, part) over every part now in
        the directory, refusing two contents for one id. Each part is read once
        per writer (parts never change), its checksums verified, except the
        ones this writer just `written` (its rows, in memory); what a part
        holds is added to `done`."""
        paths = self.parts()
        if self._seen - set(paths):  # a part was deleted: read them all again
            self._reset()
        new = [p for p in paths if p not in self._seen]
        written = written or {}
        columns = ["run_id", *KEY_COLUMNS, "instance_fingerprint", "lang"]
        read = iter(_read_parts(self.path, [p for p in new if p not in written], columns, self.run_id,
                                bool(self._seen) or any(p in written for p in new)))  # fmt: skip
        for path in new:
            table = written[path].select(columns) if path in written else next(read)
            try:
                self._add(path, table)
            except XtlError:
                self._reset()
                raise
            self._seen.add(path)
        return self._content

    def _reset(self) -> None:
        self._seen: set[Path] = set()  # the parts read so far
        self._done: dict[tuple, str | None] = {}  # row key -> instance fingerprint, over those parts
        self._content: dict[str, tuple[str, str, Path]] = {}  # instance id -> (fingerprint, lang, first part)

    def _add(self, path: Path, table: pa.Table) -> None:
        values = [table.column(c).to_pylist() for c in (*KEY_COLUMNS, "instance_fingerprint", "lang")]
        for *key, fingerprint, lang in zip(*values):
            key = tuple(key)
            self._done[key] = fingerprint
            first = self._content.setdefault(key[0], (fingerprint, lang, path))
            if first[:2] != (fingerprint, lang) and None not in (first[0], fingerprint):
                raise content_clash(self.path, key[0], first[2], path)

    def refresh(self) -> None:
        """Read the parts written since the last look (by any writer)."""
        self._index()

    def done(self) -> dict[tuple, str | None]:
        """Row key -> instance fingerprint of every row already stored (in parts of this run)."""
        self._index()
        return self._done

    def table(self) -> pd.DataFrame:
        return load(self.path)

    def shares(self, instances: list, pending: list[Row], batch_rows: int) -> Iterator[list[Row]]:
        """This writer's share of the `pending` rows: a few instances at a time
        (enough rows for two batches), each leased while it is computed
        (`xtl.leases`), so that writers given the same instances compute each
        once; rows another writer stored meanwhile are left out."""
        by_instance: dict[int, list[Row]] = {}
        for row in pending:
            by_instance.setdefault(row.instance_index, []).append(row)
        indices = list(by_instance)
        key = lambda row: (instances[row.instance_index].id, row.site, row.source_layer, row.target_layer)  # noqa: E731
        complete = lambda k: all(key(row) in self._done for row in by_instance[indices[k]])  # noqa: E731
        chunk = max(1, -(-2 * batch_rows // max((len(rows) for rows in by_instance.values()), default=1)))
        ids = [instances[index].id for index in indices]
        for mine in leases.shares(self.path, self.writer, ids, self.refresh, complete, chunk):
            rows = [row for k in mine for row in by_instance[indices[k]] if key(row) not in self._done]
            if rows:
                yield rows

    def append(self, rows: list[dict]) -> Path:
        """Write rows as one new part: a hidden temporary file, fsynced, then
        renamed. The rows' instance contents are checked against every stored
        part before writing, and again after (a part written meanwhile by
        another writer with other content for one of these ids is found by at
        least one of the two; this writer then takes its own part back)."""
        self._check_content(rows)
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        table = table.replace_schema_metadata({CONTENT_HASH_KEY: content_hash(table).encode()})
        path = self.path / f"part-{_writer_id()}-{_next_part_number():05d}.parquet"
        tmp = self.path / f".{path.name}.tmp"
        try:
            with open(tmp, "wb") as handle:
                pq.write_table(table, handle, write_page_checksum=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            leases.fsync_dir(self.path)
        except OSError as error:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise _os_error(error, self.path) from None
        ours = set(table.column("run_id").unique().to_pylist()) <= {self.run_id}
        try:
            self._index(written={path: table} if ours else None)  # rows of another run id: read back, and refused
        except XtlError:
            path.unlink(missing_ok=True)
            leases.fsync_dir(self.path)
            raise
        return path

    def _check_content(self, rows: list[dict]) -> None:
        stored = self._index()
        for row in rows:
            there = stored.get(row["instance_id"])
            if there is not None and there[0] is not None and there[:2] != (row["instance_fingerprint"], row["lang"]):
                raise XtlError(
                    f"instance {row['instance_id']!r} is already in {str(self.path)!r} with other content (its "
                    f"source, target, gold, scorer, language or prompt format changed; stored in {there[2].name!r}): "
                    "sweep the changed instances into another --out, or give them new ids."
                )


# --- reading ---------------------------------------------------------------------------------------


def parts(run_dir: str | os.PathLike) -> list[Path]:
    """The finished parts of a run directory, in name order."""
    return sorted(p for p in Path(run_dir).glob(PART_GLOB) if not p.name.startswith("."))


CONTENT_HASH_KEY = b"xtl.content_sha256"  # in each part's metadata: the hash of its rows, checked on every read
# Columns older parts may lack (read as nulls); every other column of SCHEMA must be there with its type.
LATER_COLUMNS = ("instance_fingerprint", "prompt_format", *SIGNALS, "mode", *OPTION_COLUMNS)


def content_hash(table: pa.Table) -> str:
    """sha256 of a part's rows (column names and values, in order): a part's own
    record of its content, so that any changed byte is found on reading."""
    digest = hashlib.sha256()
    for name in table.column_names:
        digest.update(json.dumps([name, table.column(name).to_pylist()], default=repr).encode())
    return digest.hexdigest()


def _damaged(path: Path, what: str = "not a complete Parquet part") -> XtlError:
    return XtlError(f"{str(path)!r} is damaged ({what}): delete it and rerun the sweep command to recompute its rows.")


def _read_part(path: Path, columns: list[str] | None, run_id: str | None) -> pa.Table:
    """One part (the columns wanted, nulls for columns older parts lack), its
    page checksums and content hash verified, its columns checked against
    `SCHEMA`, and checked to belong to `run_id`."""
    try:
        file = pq.ParquetFile(path, page_checksum_verification=True)
        table = file.read()
        stored_hash = (file.schema_arrow.metadata or {}).get(CONTENT_HASH_KEY)
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError) as error:
        if isinstance(error, OSError) and error.errno is not None:
            raise _os_error(error, path, "read") from None
        raise _damaged(path) from None
    if stored_hash is not None and stored_hash.decode("ascii", "replace") != content_hash(table.replace_schema_metadata()):
        raise _damaged(path, "its rows do not match the checksum written with them")
    _check_columns(path, table.schema)
    wanted = list(columns or COLUMNS)
    for name in wanted:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(len(table), SCHEMA.field(name).type))
    table = table.select(wanted)
    if run_id is not None and "run_id" in table.column_names and len(table):
        others = set(table.column("run_id").unique().to_pylist()) - {run_id}
        if others:
            raise ForeignPart(path, sorted(others)[0], run_id)
    return table


def _check_columns(path: Path, schema: pa.Schema) -> None:
    """A part whose columns are not xtl's (missing, or of another type) is refused in one sentence."""
    for field in SCHEMA:
        if field.name not in schema.names:
            if field.name in LATER_COLUMNS:
                continue
            problem = f"it has no column {field.name!r}"
        elif not schema.field(field.name).type.equals(field.type):
            problem = f"its column {field.name!r} is {schema.field(field.name).type}, where xtl writes {field.type}"
        else:
            continue
        raise XtlError(
            f"{str(path)!r} is not a part xtl wrote ({problem}): move it out of the run directory "
            "(or delete it) and rerun the sweep command to recompute its rows."
        )


class ForeignPart(XtlError):
    """A part whose rows carry another run id than the run directory's settings file."""

    def __init__(self, path: Path, theirs: str, mine: str):
        self.path, self.theirs, self.mine = path, theirs, mine
        super().__init__(
            f"{str(path)!r} holds rows of another run (run id {theirs}, this run is {mine}): "
            "it was copied from elsewhere; move it to its own run directory (or delete it) and rerun."
        )


def _read_parts(
    run_dir: Path, paths: list[Path], columns: list[str] | None, run_id: str, others_match: bool = False
) -> list[pa.Table]:
    """Every part, read with `_read_part`; when no part belongs to the settings
    file's run (nor any read before, `others_match`), the settings file is what
    changed, and that is what is said."""
    tables, foreign = [], []
    for path in paths:
        try:
            tables.append(_read_part(path, columns, run_id))
        except ForeignPart as error:
            foreign.append(error)
    if not foreign:
        return tables
    if tables or others_match or len({error.theirs for error in foreign}) > 1:
        raise foreign[0]
    raise XtlError(
        f"{str(run_dir / SETTINGS_FILE)!r} names run {run_id}, but all {len(foreign)} parts in {str(run_dir)!r} "
        f"belong to run {foreign[0].theirs}: the settings file was edited or copied from another run; "
        "put back the one that came with these parts (or delete it and rerun the sweep command that made them, "
        "which recreates it and keeps the parts)."
    )


def check_one_content(run_dir: str | os.PathLike, tables: list[tuple[Path, pa.Table]]) -> dict[str, tuple[str, str, Path]]:
    """instance id -> (instance fingerprint, language, part) over parts' rows,
    refusing an id stored with two contents (by concurrent writers, or in a
    part copied from another folder) in one sentence naming the id and the parts."""
    seen: dict[str, tuple[str, str, Path]] = {}
    for path, table in tables:
        columns = [table.column(c).to_pylist() for c in ("instance_id", "instance_fingerprint", "lang")]
        for instance_id, fingerprint, lang in zip(*columns):
            content = (fingerprint, lang, path)
            first = seen.setdefault(instance_id, content)
            if first[:2] != content[:2] and None not in (first[0], fingerprint):
                raise content_clash(run_dir, instance_id, first[2], path)
    return seen


def content_clash(run_dir, instance_id: str, first: Path, second: Path) -> XtlError:
    return XtlError(
        f"instance {instance_id!r} is stored with two different contents (source, target, gold, language or "
        f"prompt format) in {str(run_dir)!r}, in {first.name!r} and {second.name!r}: keep the part made from "
        "the right data, delete the other, and rerun the sweep command to recompute its rows."
    )


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as the results DataFrame (nullable Int64 layers, nullable boolean `correct`)."""
    return _typed(pa.Table.from_pylist(rows, schema=SCHEMA))


def _typed(table: pa.Table) -> pd.DataFrame:
    table = table.cast(pa.schema([SCHEMA.field(name) for name in table.column_names]))
    frame = table.to_pandas()
    for column in ("source_layer", "target_layer"):
        frame[column] = frame[column].astype("Int64")
    frame["correct"] = frame["correct"].astype("boolean")
    frame["token_ids"] = frame["token_ids"].map(lambda ids: [int(i) for i in ids])
    return frame


def settings(run_dir: str | os.PathLike) -> dict:
    """The settings file of a run directory as a dict (its `Settings` plus `run_id`)."""
    run_dir = Path(run_dir)
    path = settings_path(run_dir)
    if path is None:
        raise XtlError(_no_settings_sentence(run_dir))
    return _read_settings_file(path)


def _no_settings_sentence(run_dir: Path) -> str:
    if not run_dir.is_dir():
        return f"{str(run_dir)!r} does not exist: give the --out folder of a sweep."
    names = [p.name for p in run_dir.iterdir()]
    if any(name.startswith("part-") for name in names):
        return (
            f"{str(run_dir)!r} has parts but no {SETTINGS_FILE}: rerun the sweep command that made it "
            "(it recreates the settings file and keeps every part whose run id matches)."
        )
    if names and all(_is_temp(name) for name in names):
        return (
            f"{str(run_dir)!r} holds only a temporary file left by a sweep stopped as it started "
            f"({names[0]!r}; nothing was computed): delete the folder and run the sweep again."
        )
    return f"{str(run_dir)!r} is not an xtl run directory (it has no {SETTINGS_FILE}): give the --out of a sweep."


def load(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The results table of a run directory as a pandas DataFrame.

    Only finished parts are read; a row stored by two writers appears once; a
    part of another run, a damaged one (its checksums are verified), one with
    other columns, or two contents for one instance id are refused with what to do."""
    path = Path(run_dir)
    run_id = settings(path)["run_id"]
    paths = parts(path)
    tables = _read_parts(path, paths, None, run_id)
    check_one_content(path, list(zip(paths, tables)))
    if not tables:
        return to_frame([])
    frame = _typed(pa.concat_tables(tables))
    return frame.drop_duplicates(list(KEY_COLUMNS), keep="first", ignore_index=True)


@dataclass(frozen=True)
class Counts:
    """What a run directory holds: its rows and accuracies, without building the results DataFrame."""

    rows: int
    vanilla: int  # vanilla rows: one per instance
    vanilla_accuracy: float | None  # None: no row is scored
    transplant_accuracy: float | None  # the mean over every configuration row
    vanilla_gold_logprob: float | None = None  # scoring runs: the mean gold log-probability of the vanilla rows
    transplant_gold_logprob: float | None = None  # ... and of the configuration rows


def count(run_dir: str | os.PathLike) -> Counts:
    """Rows, accuracies and (scoring runs) mean gold log-probabilities of a run directory. Every part is
    read whole (its checksums and content hash are verified, as `load` does); only its key, `correct`
    and `gold_logprob` columns are kept."""
    path = Path(run_dir)
    run_id = settings(path)["run_id"]
    columns = ["run_id", *KEY_COLUMNS, "correct", "gold_logprob"]
    tables = [_read_part(p, columns, run_id) for p in parts(path)]
    frame = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame(columns=columns)
    frame = frame.drop_duplicates(list(KEY_COLUMNS))
    vanilla = frame["site"].isna()
    correct = frame["correct"].astype("boolean")

    def accuracy(values: pd.Series) -> float:
        values = values.dropna()
        return float(values.astype(float).mean()) if len(values) else float("nan")

    scored = bool(correct[vanilla].notna().any())
    gold = frame["gold_logprob"].astype(float)
    logprobs = bool(gold.notna().any())
    return Counts(
        rows=len(frame), vanilla=int(vanilla.sum()),
        vanilla_accuracy=accuracy(correct[vanilla]) if scored else None,
        transplant_accuracy=accuracy(correct[~vanilla]) if scored else None,
        vanilla_gold_logprob=float(gold[vanilla].mean()) if logprobs else None,
        transplant_gold_logprob=float(gold[~vanilla].mean()) if logprobs else None,
    )  # fmt: skip


def unify_models(frame: pd.DataFrame) -> pd.DataFrame:
    """One `model` name per model fingerprint (the first in sort order), so a
    checkpoint swept from folders of different names is one model."""
    if frame.empty or "model_fingerprint" not in frame or frame["model_fingerprint"].isna().all():
        return frame
    names = frame.groupby("model_fingerprint")["model"].min()
    unified = frame["model_fingerprint"].map(names).fillna(frame["model"])
    if (unified == frame["model"]).all():
        return frame
    return frame.assign(model=unified)
