"""The results table on disk: one long table, Parquet parts in a run directory.

    RUN_DIR/run.json               the run's settings (model, fingerprint, sites, ...)
    RUN_DIR/part-00000.parquet     rows, one file per finished batch
    RUN_DIR/part-00001.parquet     ...

One row per instance x site x source layer x target layer, plus one vanilla row
per instance (site, source_layer and target_layer null). A part is written to a
temporary name and renamed when complete, so a killed sweep leaves only whole
parts, and a rerun skips every row they hold: nothing is lost or duplicated.
DuckDB reads the folder directly: `SELECT * FROM 'RUN_DIR/*.parquet'`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from xtl.errors import XtlError

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("model_fingerprint", pa.string()),
        ("n_layers", pa.int32()),
        ("dtype", pa.string()),
        ("max_new_tokens", pa.int32()),
        ("benchmark", pa.string()),
        ("split", pa.string()),
        ("lang", pa.string()),
        ("instance_id", pa.string()),
        ("source", pa.string()),
        ("target", pa.string()),
        ("gold", pa.string()),
        ("site", pa.string()),
        ("source_layer", pa.int32()),
        ("target_layer", pa.int32()),
        ("token_ids", pa.list_(pa.int32())),
        ("text", pa.string()),
        ("correct", pa.bool_()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
SETTINGS_FILE = "run.json"
# Settings that must be equal to add rows to an existing run directory.
BINDING_SETTINGS = ("model_fingerprint", "dtype", "sites", "configs", "max_new_tokens", "prompt_format")


def check_run_dir(path: str | os.PathLike) -> Path:
    """A path that can hold a run (checked before any work starts)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise XtlError(f"--out {str(path)!r} is a file: give a directory for the run.")
    return path


def row_key(row: dict) -> tuple:
    """What identifies a row within a run."""
    return (row["instance_id"], row["site"], row["source_layer"], row["target_layer"])


class RunDir:
    """A run directory being written by a sweep."""

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.settings = settings

    @classmethod
    def open(cls, path: str | os.PathLike, settings: dict) -> "RunDir":
        """Create the directory, or reopen it when its settings match."""
        path = check_run_dir(path)
        settings_file = path / SETTINGS_FILE
        if settings_file.is_file():
            existing = json.loads(settings_file.read_text())
            differing = [key for key in BINDING_SETTINGS if existing.get(key) != settings.get(key)]
            if differing:
                changes = "; ".join(f"{key}: {existing.get(key)!r} there, {settings.get(key)!r} now" for key in differing)
                raise XtlError(
                    f"{str(path)!r} holds a run made with other settings ({changes}): "
                    "rerun with the same settings to resume it, or choose another --out."
                )
            settings = {**existing, **{k: v for k, v in settings.items() if k not in existing}}
        elif path.is_dir() and any(path.iterdir()):
            raise XtlError(f"{str(path)!r} is not empty and holds no xtl run: choose a new or empty directory for --out.")
        else:
            path.mkdir(parents=True, exist_ok=True)
            _write_atomic(settings_file, json.dumps(settings, indent=2, sort_keys=True).encode())
        return cls(path, settings)

    def parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def done_keys(self) -> set[tuple]:
        keys: set[tuple] = set()
        for part in self.parts():
            table = pq.read_table(part, columns=["instance_id", "site", "source_layer", "target_layer"])
            keys.update(zip(*(table.column(c).to_pylist() for c in table.column_names)))
        return keys

    def append(self, rows: list[dict]) -> Path:
        """Write rows as one new part, atomically."""
        index = len(self.parts())
        path = self.path / f"part-{index:05d}.parquet"
        while path.exists():
            index += 1
            path = self.path / f"part-{index:05d}.parquet"
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        tmp = self.path / f".{path.name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return path


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as the results DataFrame (nullable Int64 layers, nullable boolean `correct`)."""
    return _typed(pa.Table.from_pylist(rows, schema=SCHEMA))


def _typed(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    for column in ("source_layer", "target_layer"):
        frame[column] = frame[column].astype("Int64")
    frame["correct"] = frame["correct"].astype("boolean")
    frame["token_ids"] = frame["token_ids"].map(lambda ids: [int(i) for i in ids])
    return frame


def load(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The results table of a run directory as a pandas DataFrame."""
    path = Path(run_dir)
    if not (path / SETTINGS_FILE).is_file():
        raise XtlError(f"{str(path)!r} is not an xtl run directory (it has no {SETTINGS_FILE}): give the --out of a sweep.")
    parts = sorted(path.glob("part-*.parquet"))
    if not parts:
        return to_frame([])
    return _typed(pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts]))


def settings(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / SETTINGS_FILE
    if not path.is_file():
        raise XtlError(f"{str(run_dir)!r} is not an xtl run directory (it has no {SETTINGS_FILE}).")
    return json.loads(path.read_text())
