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
import json
import os
import re
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

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
    models = []
    for entry in data["models"] if isinstance(data["models"], list) else [data["models"]]:
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise XtlError(f"{source}: every [[models]] entry needs model = \"PATH or NAME\", not {entry!r}.")
        bad = set(entry) - _MODEL_KEYS
        if bad:
            raise XtlError(f"{source}: [[models]] key {sorted(bad)[0]!r} is unknown: use {', '.join(sorted(_MODEL_KEYS))}.")
        load = LoadOptions(str(entry["model"]), str(entry.get("dtype", "float32")), entry.get("device"), entry.get("n_ctx"))
        models.append(ModelSpec(load, layers=str(entry.get("layers", "all")), name=str(entry.get("name", ""))))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise XtlError(f"{source}: two models share the folder name {max(set(names), key=names.count)!r}: give them different name = \"...\".")
    if not models:
        raise XtlError(f"{source} names no model: add a [[models]] entry with model = \"PATH or NAME\".")

    def strings(key: str, default: Sequence[str]) -> tuple[str, ...]:
        value = data.get(key, default)
        value = [value] if isinstance(value, str) else value
        if not value or not all(isinstance(v, str) for v in value):
            raise XtlError(f"{source}: {key} must be a non-empty list of names, not {value!r}.")
        return tuple(value)

    limit = data.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise XtlError(f"{source}: limit must be a whole number of at least 1, not {limit!r}.")
    return Study(
        out=Path(data["out"]),
        models=tuple(models),
        benchmarks=tuple(b.lower() for b in strings("benchmarks", ())),
        languages=data.get("languages", "all"),
        include_english=bool(data.get("include_english", False)),
        splits=strings("splits", ("sample",)),
        data_dir=Path(data["data_dir"]) if data.get("data_dir") else None,
        limit=limit,
        options=SweepOptions(
            sites=strings("sites", ("ffn",)), max_new_tokens=data.get("max_new_tokens", 20),
            prompt_format=str(data.get("prompt_format", "raw")), memory_budget=data.get("memory_budget"),
            max_batch_rows=data.get("max_batch_rows"), mode=data.get("mode", "generate"),
        ),
    )  # fmt: skip


def _languages(study: Study, benchmark: str, split: str) -> list[str]:
    from xtl import benchmarks

    wanted = study.languages
    if isinstance(wanted, dict):
        wanted = wanted.get(benchmark, "all")
    if wanted == "all":
        return benchmarks.languages(benchmark, split, data_dir=study.data_dir, include_english=study.include_english)
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    if not wanted:
        raise XtlError(f"no languages given for {benchmark}: use \"all\" or a list like [\"sw\", \"th\"].")
    return wanted


def plan(study: Study) -> list[Job]:
    """The sweeps of a study, model by model (each model loads once), with their instances."""
    from xtl import benchmarks

    jobs = []
    for model in study.models:
        for benchmark in study.benchmarks:
            for split in study.splits:
                langs = _languages(study, benchmark, split)
                instances = []
                for lang in langs:
                    items = benchmarks.load(benchmark, lang, split=split, data_dir=study.data_dir)
                    instances.extend(items[: study.limit] if study.limit else items)
                if not instances:
                    continue
                options = dataclasses.replace(study.options, configs=model.layers)
                out = study.out / model.name / f"{benchmark}-{split}"
                jobs.append(Job(model, tuple(instances), out, benchmark, split, tuple(langs), options))
    if not jobs:
        raise XtlError("the study selects no instances: check its benchmarks, languages and splits.")
    return jobs


# --- the plan, without loading any model -----------------------------------------------------------

# The rate the estimate is scaled from: ~2.3 s per instance and site for a 28-layer,
# 7.6B-parameter model (784 configurations, 20 new tokens) on one H200 in bfloat16
# (issue #10). Time is taken to grow with parameters x rows x generated tokens.
_REFERENCE = dict(seconds=2.3, params=7.6e9, rows=1 + 28 * 28, tokens=21)
_DTYPE_FACTOR = {"bfloat16": 1.0, "float16": 1.0, "float32": 2.0, "float64": 8.0}


# The paper's models, for a plan made where their checkpoints are not (published shapes).
PAPER_MODELS = {
    "meta-llama/Llama-2-7b-chat-hf": {"n_layers": 32, "params": 6.74e9, "architecture": "LlamaForCausalLM"},
    "mistralai/Mistral-7B-Instruct-v0.3": {"n_layers": 32, "params": 7.25e9, "architecture": "MistralForCausalLM"},
    "Qwen/Qwen2-7B-Instruct": {"n_layers": 28, "params": 7.62e9, "architecture": "Qwen2ForCausalLM"},
    "hfl/chinese-alpaca-2-7b": {"n_layers": 32, "params": 6.93e9, "architecture": "LlamaForCausalLM"},
    "bigscience/bloomz-7b1": {"n_layers": 30, "params": 7.07e9, "architecture": "BloomForCausalLM"},
}


def model_shape(spec: ModelSpec) -> dict | None:
    """n_layers and parameter count from the checkpoint's config.json (never the weights);
    for the paper's models not found here, their published shapes; else None."""
    from xtl.model.checkpoints import resolve_checkpoint

    try:
        config = json.loads((resolve_checkpoint(spec.load.model) / "config.json").read_text())
    except (XtlError, OSError, ValueError):
        known = PAPER_MODELS.get(spec.load.model)
        return {**known, "source": "published shape; checkpoint not found here"} if known else None
    try:
        d, vocab = config.get("hidden_size") or config["n_embed"], config["vocab_size"]
        layers = config.get("num_hidden_layers") or config["n_layer"]  # BLOOM names it n_layer
        heads = config.get("num_attention_heads") or config["n_head"]
        kv = config.get("num_key_value_heads") or heads
        d_mlp = config.get("intermediate_size") or 4 * d
    except KeyError:
        return None
    head = d // heads
    gated = "n_layer" not in config  # Llama/Mistral/Qwen2: gate, up and down; BLOOM: up and down
    per_layer = d * d * 2 + 2 * d * kv * head + (3 if gated else 2) * d * d_mlp
    params = layers * per_layer + vocab * d * (1 if config.get("tie_word_embeddings") else 2)
    return {"n_layers": int(layers), "params": float(params), "architecture": (config.get("architectures") or ["?"])[0], "source": "config.json"}


def describe(study: Study, jobs: list[Job] | None = None, gpus: int = 1) -> str:
    """The dry-run text: instances, configurations and an estimated GPU time per sweep."""
    from xtl.checks import parse_layers

    jobs = jobs if jobs is not None else plan(study)
    options = study.options
    steps = "mode score" if options.mode == "score" else f"max_new_tokens {options.max_new_tokens}"
    lines = [f"study -> {study.out}  ({len(jobs)} sweeps; sites {', '.join(options.sites)}; {steps})"]
    total_seconds, unknown = 0.0, 0
    shapes: dict[str, dict | None] = {}
    for job in jobs:
        spec = job.model
        if spec.name not in shapes:
            shapes[spec.name] = model_shape(spec)
            shape = shapes[spec.name]
            where = (
                f"{shape['architecture']}, {shape['n_layers']} layers, {_count(shape['params'])} parameters, from {shape['source']}"
                if shape else "checkpoint not found here: configurations and time unknown"
            )  # fmt: skip
            lines.append(f"model {spec.name}: {spec.load.model} ({spec.load.dtype}; layers {spec.layers}; {where})")
        shape = shapes[spec.name]
        n = len(job.instances)
        if shape is None:
            unknown += 1
            lines.append(f"  {job.benchmark}/{job.split}: {n} instances, {len(job.langs)} languages; configurations unknown -> {job.out}")
            continue
        configs = len(parse_layers(spec.layers, shape["n_layers"]))
        sites = len(job.options.sites)
        rows = n * (1 + sites * configs)
        seconds = (
            _REFERENCE["seconds"] * n * sites
            * (shape["params"] / _REFERENCE["params"])
            * ((1 + configs) / _REFERENCE["rows"])
            * ((1 + options.max_new_tokens) / _REFERENCE["tokens"])
            * _DTYPE_FACTOR.get(spec.load.dtype, 1.0)
        )  # fmt: skip
        total_seconds += seconds
        lines.append(
            f"  {job.benchmark}/{job.split}: {n} instances, {len(job.langs)} languages x {sites} sites x "
            f"{configs} configurations = {rows:,} rows, ~{_hours(seconds)} GPU -> {job.out}"
        )
    known = f"~{_hours(total_seconds)} on one GPU, ~{_hours(total_seconds / max(gpus, 1))} on {gpus} GPUs" if gpus > 1 else f"~{_hours(total_seconds)} on one GPU"
    if unknown == len(jobs):
        known = "unknown (no checkpoint found here)"
    elif unknown:
        known += f", plus {unknown} sweeps of unknown size"
    lines.append(
        f"estimated time: {known}"
        + "; a rough estimate scaled from ~2.3 s per instance and site for a 7.6B, 28-layer model "
        "on one H200 in bfloat16 (float32 taken as 2x slower); measure your own with a --limit run."
    )  # fmt: skip
    return "\n".join(lines)


def _count(params: float) -> str:
    return f"{params / 1e9:.1f}B" if params >= 1e8 else f"{params / 1e6:.2f}M"


def _hours(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- running ------------------------------------------------------------------------------------------


def stored_rows(out: Path) -> int:
    """Rows already in a run directory (0 when it does not exist yet)."""
    from xtl import results

    if results.settings_path(out) is None:
        return 0
    return results.count(out).rows


def expected_rows(job: Job) -> int | None:
    shape = model_shape(job.model)
    if shape is None:
        return None
    return len(job.instances) * (1 + len(job.options.sites) * len(job.options.pairs(shape["n_layers"])))


class StudyProgress:
    """One bar for a whole study: rows, instances and configurations per second, time left."""

    def __init__(self, jobs: list[Job], enabled: bool | None):
        from tqdm.auto import tqdm

        totals = [expected_rows(job) for job in jobs]
        done = sum(stored_rows(job.out) for job in jobs)
        self.configs_per_instance = sum(t for t in totals if t) / max(1, sum(len(j.instances) for j, t in zip(jobs, totals) if t))
        self.bar = tqdm(
            total=sum(t for t in totals if t) if all(totals) else None, initial=done, unit="row", desc="study",
            disable=(None if enabled is None else not enabled), dynamic_ncols=True, smoothing=0.1,
        )  # fmt: skip
        self.started, self.added = time.perf_counter(), 0

    def add(self, rows: int) -> None:
        self.added += rows
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(
            f"{self.added / elapsed:.1f} configs/s"
            + (f", {self.added / self.configs_per_instance / elapsed:.2f} instances/s" if self.configs_per_instance else ""),
            refresh=False,
        )
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
    jobs = plan(the_study)
    if dry_run:
        return describe(the_study, jobs, gpus=gpus)
    from xtl import results

    for job in jobs:
        results.check_run_dir(job.out)
    if ray is not None and ray is not False:
        from xtl import distributed

        distributed.require_ray()
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
