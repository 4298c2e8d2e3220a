"""Studies: a grid of sweeps (models x benchmarks x languages x splits x sites)
from one TOML file, each sweep into its own run directory under one study
directory, then one report across them. Rerunning a study resumes every sweep
where it stopped.

    out = "runs/paper-pilot"          # the study directory (relative to the current folder)
    data_dir = "/path/to/XTransplant/data"   # optional: else --data-dir or $XTL_DATA_DIR
    benchmarks = ["xnli", "xquad", "xcopa", "globalopinionqa"]
    languages = "all"                 # or ["sw", "th"], or a table {xnli = ["sw"], xcopa = "all"}
    include_english = true            # with "all": also en -> en, as the paper's pooled numbers
    splits = ["sample"]
    sites = ["ffn", "attn-paper"]
    max_new_tokens = 20               # optional, as are prompt_format, limit, memory_budget, max_batch_rows
    mode = "generate"                 # optional: or "score" (teacher-forced option scores, see xtl.scoring)

    [[models]]
    model = "Qwen/Qwen2-7B-Instruct"  # a local checkpoint directory or a name in the local HF cache
    dtype = "bfloat16"                # optional (float32), as are device and n_ctx
    layers = "all"                    # optional layer spec, as `xtl sweep --layers`
    name = "qwen2"                    # optional: the folder name of its runs

One run directory per (model, benchmark, split): `OUT/<name>/<benchmark>-<split>`,
holding every language and site of that grid cell. The report across all runs
is `OUT/_report.html`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from xtl.checks import check_whole
from xtl.errors import XtlError
from xtl.options import LoadOptions, SweepOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_STUDY_KEYS = {
    "out", "data_dir", "benchmarks", "languages", "include_english", "splits", "sites", "max_new_tokens",
    "prompt_format", "limit", "memory_budget", "max_batch_rows", "models", "mode",
}  # fmt: skip
_MODEL_KEYS = {"model", "dtype", "layers", "name", "device", "n_ctx"}


@dataclass(frozen=True)
class ModelSpec:
    """One model of a study: how it is loaded, and the layers swept."""

    load: LoadOptions
    layers: str = "all"
    name: str = ""  # the folder name of its runs (default: from the model's path or name)

    def __post_init__(self) -> None:
        if not self.name:
            model = self.load.model
            object.__setattr__(self, "name", _folder_name(Path(model).name if os.sep in model or Path(model).is_dir() else model))


@dataclass(frozen=True)
class Job:
    """One sweep of a study: a model over instances, into one run directory."""

    model: ModelSpec
    instances: tuple  # Instance objects (shipped to workers as they are)
    out: Path
    benchmark: str
    split: str
    langs: tuple[str, ...]
    options: SweepOptions = SweepOptions()  # its configs are the model's layers


@dataclass(frozen=True)
class Study:
    out: Path
    models: tuple[ModelSpec, ...]
    benchmarks: tuple[str, ...]
    languages: Any = "all"  # "all", a list, or {benchmark: "all" | list}
    include_english: bool = False
    splits: tuple[str, ...] = ("sample",)
    data_dir: Path | None = None
    limit: int | None = None
    options: SweepOptions = SweepOptions()  # every sweep's (the configs are each model's layers)


def _folder_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return name[:80] or "model"


def read_study(path: str | os.PathLike, **overrides: Any) -> Study:
    """A study from its TOML file; `overrides` (out, data_dir, limit) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise XtlError(f"study file {str(path)!r} does not exist: give the path of a study TOML file (see studies/).")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise XtlError(f"study file {str(path)!r} is not valid TOML ({error}).") from None
    return study_from_dict(data, source=str(path), **overrides)


def study_from_dict(data: dict, *, source: str = "the study", **overrides: Any) -> Study:
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(data) - _STUDY_KEYS
    if unknown:
        raise XtlError(f"{source} has unknown key {sorted(unknown)[0]!r}: the keys are {', '.join(sorted(_STUDY_KEYS))}.")
    for key in ("out", "benchmarks", "models"):
        if key not in data:
            raise XtlError(f"{source} has no {key!r}: a study needs out, benchmarks and at least one [[models]] entry.")
    models = [_model_spec(entry, source) for entry in (data["models"] if isinstance(data["models"], list) else [data["models"]])]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise XtlError(f"{source}: two models share the folder name {max(set(names), key=names.count)!r}: give them different name = \"...\".")
    if not models:
        raise XtlError(f"{source} names no model: add a [[models]] entry with model = \"PATH or NAME\".")

    def strings(key: str, default: Sequence[str]) -> tuple[str, ...]:
        value = data.get(key, default)
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
            raise XtlError(f"{source}: {key} must be a non-empty list of names, not {value!r}.")
        return tuple(value)

    limit = data.get("limit")
    if limit is not None:
        limit = check_whole(limit, f"{source}: limit", 1)
    include_english = data.get("include_english", False)
    if not isinstance(include_english, bool):
        raise XtlError(f"{source}: include_english must be true or false (without quotes), not {include_english!r}.")
    prompt_format = data.get("prompt_format", "raw")
    if not isinstance(prompt_format, str):
        raise XtlError(f"{source}: prompt_format must be \"raw\" or \"chat\", not {prompt_format!r}.")
    memory_budget = data.get("memory_budget")
    if not isinstance(memory_budget, (str, int, type(None))) or isinstance(memory_budget, bool):
        raise XtlError(f"{source}: memory_budget must be \"auto\" or a size like \"8GiB\", not {memory_budget!r}.")
    try:  # SweepOptions' own sentences (mode, sites, numbers), naming the file as every other key's do
        options = SweepOptions(
            sites=strings("sites", ("ffn",)), max_new_tokens=data.get("max_new_tokens", 20), prompt_format=prompt_format,
            memory_budget=memory_budget, max_batch_rows=data.get("max_batch_rows"), mode=data.get("mode", "generate"),
        )  # fmt: skip
    except XtlError as error:
        raise XtlError(f"{source}: {error}") from None
    return Study(
        out=_study_out(data["out"], source),
        models=tuple(models),
        benchmarks=tuple(b.lower() for b in strings("benchmarks", ())),
        languages=_check_languages(data.get("languages", "all"), source),
        include_english=include_english,
        splits=strings("splits", ("sample",)),
        data_dir=_study_path(data["data_dir"], "data_dir", source) if data.get("data_dir") else None,
        limit=limit,
        options=options,
    )


# --- the study file's values, each checked in one sentence before anything runs -------------------------

_FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,79}")


def _model_spec(entry: Any, source: str) -> ModelSpec:
    """One [[models]] entry, its types checked; its folder name stays inside the study's out."""
    from xtl.checks import check_layer_spec

    if isinstance(entry, str):
        entry = {"model": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or not entry["model"].strip():
        raise XtlError(f"{source}: every [[models]] entry needs model = \"PATH or NAME\", not {entry!r}.")
    bad = set(entry) - _MODEL_KEYS
    if bad:
        raise XtlError(f"{source}: [[models]] key {sorted(bad)[0]!r} is unknown: use {', '.join(sorted(_MODEL_KEYS))}.")
    for key in ("dtype", "layers", "name", "device"):
        if key in entry and not isinstance(entry[key], str):
            raise XtlError(f"{source}: [[models]] {key} of {entry['model']!r} must be a string in quotes, not {entry[key]!r}.")
    name = entry.get("name")
    if name is not None and (not _FOLDER_NAME.fullmatch(name) or name in (".", "..")):
        raise XtlError(
            f"{source}: [[models]] name {name!r} is not a plain folder name (letters, digits, '.', '_', '-'; "
            "no '/' or '..'): runs are written to OUT/<name>, inside the study's out."
        )
    try:  # the sentences of the layer spec and of LoadOptions (dtype, device, n_ctx), naming the file and the model
        check_layer_spec(entry.get("layers", "all"))
        load = LoadOptions(entry["model"], entry.get("dtype", "float32"), entry.get("device"), entry.get("n_ctx"))
    except XtlError as error:
        raise XtlError(f"{source}: [[models]] {entry['model']!r}: {error}") from None
    return ModelSpec(load, layers=entry.get("layers", "all"), name=entry.get("name", ""))


def _study_path(value: Any, key: str, source: str) -> Path:
    if isinstance(value, os.PathLike):  # a study given as a dict from Python
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise XtlError(f"{source}: {key} must be a path in quotes, not {value!r}.")
    return Path(value).expanduser()


def _study_out(value: Any, source: str) -> Path:
    """The study directory: a path, not the root of a file system or the home folder itself."""
    out = value if isinstance(value, Path) else _study_path(value, "out", source)
    resolved = out.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise XtlError(
            f"{source}: out {str(value)!r} is {'the root of the file system' if resolved == Path(resolved.anchor) else 'your home folder'}: "
            "give a folder of its own for the study, like \"runs/my-study\"."
        )
    return out


def _check_languages(value: Any, source: str, benchmark: str | None = None) -> Any:
    """\"all\", a list of language codes, or (at the top) a table benchmark -> either."""
    if isinstance(value, dict) and benchmark is None:
        return {str(b).lower(): _check_languages(v, source, str(b)) for b, v in value.items()}
    if value == "all" or (isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)):
        return value
    where = f"languages.{benchmark}" if benchmark else "languages"
    table = "" if benchmark else ', or a table {xnli = ["sw"], xcopa = "all"}'
    raise XtlError(
        f"{source}: {where} must be \"all\" or a non-empty list of language codes like [\"sw\", \"th\"]{table}, not {value!r}."
    )


def _languages(study: Study, benchmark: str, split: str) -> list[str]:
    from xtl import datasets

    wanted = study.languages
    if isinstance(wanted, dict):
        wanted = wanted.get(benchmark, "all")
    if wanted == "all":
        return datasets.languages(benchmark, split, data_dir=study.data_dir, include_english=study.include_english)
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    if not wanted:
        raise XtlError(f"no languages given for {benchmark}: use \"all\" or a list like [\"sw\", \"th\"].")
    return wanted


def _inside(out: Path, *names: str) -> Path:
    """OUT/name/..., refused in one sentence if a name would lead outside OUT."""
    path = out.joinpath(*names)
    if any(Path(n).is_absolute() or ".." in Path(n).parts or "/" in n or os.sep in n for n in names):
        raise XtlError(f"the folder {'/'.join(names)!r} would lie outside the study's out {str(out)!r}: use plain names.")
    return path


def plan(study: Study) -> list[Job]:
    """The sweeps of a study, model by model (each model loads once), with their instances."""
    from xtl import datasets

    jobs = []
    for model in study.models:
        for benchmark in study.benchmarks:
            for split in study.splits:
                langs = _languages(study, benchmark, split)
                instances = []
                for lang in langs:
                    items = datasets.load(benchmark, lang, split=split, data_dir=study.data_dir)
                    instances.extend(items[: study.limit] if study.limit else items)
                if not instances:
                    continue
                options = dataclasses.replace(study.options, configs=model.layers)
                out = _inside(study.out, model.name, f"{benchmark}-{split}")
                jobs.append(Job(model, tuple(instances), out, benchmark, split, tuple(langs), options))
    if not jobs:
        raise XtlError("the study selects no instances: check its benchmarks, languages and splits.")
    return jobs


# --- running ------------------------------------------------------------------------------------------


def stored_rows(out: Path) -> int:
    """Rows already in a run directory (0 when it does not exist yet)."""
    from xtl import results

    if results.settings_path(out) is None:
        return 0
    return results.count(out).rows


class StudyProgress:
    """One bar for a whole study: rows, instances and configurations per second, time left."""

    def __init__(self, jobs: list[Job], enabled: bool | None):
        from tqdm.auto import tqdm

        from xtl.estimates import expected_rows

        totals = [expected_rows(job) for job in jobs]
        done = sum(stored_rows(job.out) for job in jobs)
        known = [(job, total) for job, total in zip(jobs, totals) if total]
        # rows per instance, for the instances/s figure (None when no sweep's size is known)
        self.rows_per_instance = sum(t for _, t in known) / sum(len(j.instances) for j, _ in known) if known else None
        self.bar = tqdm(
            total=sum(t for t in totals if t) if all(totals) else None, initial=done, unit="row", desc="study",
            disable=(None if enabled is None else not enabled), dynamic_ncols=True, smoothing=0.1,
        )  # fmt: skip
        self.started, self.added = time.perf_counter(), 0

    def add(self, rows: int) -> None:
        self.added += rows
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = f"{self.added / elapsed:.1f} configs/s"
        if self.rows_per_instance:
            rate += f", {self.added / self.rows_per_instance / elapsed:.2f} instances/s"
        self.bar.set_postfix_str(rate, refresh=False)
        self.bar.update(rows)

    def close(self) -> None:
        self.bar.close()


def run_jobs_locally(jobs: list[Job], on_rows: Callable[[int], None]) -> None:
    """Every sweep in this process, loading each model once."""
    import xtl

    loaded, model = None, None
    for job in jobs:
        if job.model.load != loaded:
            model = None  # free the previous model before loading the next
            model = job.model.load.load()
            loaded = job.model.load
        xtl.sweep(model, list(job.instances), options=job.options, out=job.out, progress=False, on_rows=on_rows, load_result=False)


def run_jobs(jobs: list[Job], *, ray: str | bool | None = None, progress: bool | None = None, workers: int | None = None) -> None:
    """Run sweeps in this process, or over a Ray cluster (`ray=True`: a local one; a string: its address)."""
    bar = StudyProgress(jobs, progress)
    try:
        if ray is None or ray is False:
            run_jobs_locally(jobs, bar.add)
        else:
            from xtl import distributed

            distributed.run_jobs(jobs, address=None if ray is True else ray, on_rows=bar.add, workers=workers)
    finally:
        bar.close()


def study(
    study: str | os.PathLike | Study | dict,
    *,
    ray: str | bool | None = None,
    dry_run: bool = False,
    progress: bool | None = None,
    report: bool = True,
    workers: int | None = None,
    gpus: int = 1,
    **overrides: Any,
):
    """Run a study (a TOML path, a dict of its keys, or a `Study`), then write its report.

    Returns the results table of every run (pandas), or with `dry_run=True` the
    plan as text, without loading a model. `ray`: None runs in this process,
    True on a local Ray cluster, "ADDRESS" on an existing one; `workers` caps the
    Ray workers (default: one per GPU, or per CPU on a CPU-only cluster).
    `overrides` (out, data_dir, limit) win over the study file."""
    if isinstance(study, Study):
        the_study = dataclasses.replace(study, **{k: (Path(v) if k in ("out", "data_dir") else v) for k, v in overrides.items() if v is not None})
    elif isinstance(study, dict):
        the_study = study_from_dict(study, **overrides)
    else:
        the_study = read_study(study, **overrides)
    _study_out(the_study.out, "the study")
    if isinstance(ray, str):
        from xtl.distributed import check_address

        check_address(ray)
    jobs = plan(the_study)
    if dry_run:
        from xtl.estimates import describe

        return describe(the_study, jobs, gpus=gpus)
    from xtl import results

    for job in jobs:
        results.check_run_dir(job.out)
    if ray is not None and ray is not False:
        from xtl import distributed

        distributed.require_ray()
        distributed.check_reachable(None if ray is True else ray)
    run_jobs(jobs, ray=ray, progress=progress, workers=workers)
    from xtl.report import load_results, write_report

    frame = load_results([job.out for job in jobs])
    if report:
        write_report(frame, the_study.out / "_report.html", title=f"XTransplant study: {the_study.out.name}")
    return frame


class _CallableModule(types.ModuleType):
    """`xtl.study(...)` runs a study, and `xtl.study.plan` etc. stay reachable."""

    def __call__(self, *args: Any, **kwargs: Any):
        return study(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
