"""What a study will cost, without loading any model: each model's shape from its
`config.json` (or the paper's published shapes), the rows of every sweep, and a
rough GPU time (`xtl study --dry-run`). Imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xtl.errors import XtlError

if TYPE_CHECKING:
    from xtl.checkpoints import ModelShape
    from xtl.study import Job, ModelSpec, Study

# The rate the estimate is scaled from: ~2.3 s per instance and site for a 28-layer,
# 7.6B-parameter model (784 configurations, 20 new tokens) on one H200 in bfloat16;
# where it comes from and how far it is measured: benchmarks/results/study-gpu-rate.md.
# Time is taken to grow with parameters x rows x generated tokens.
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


def model_shape(spec: ModelSpec) -> ModelShape | None:
    """Layers and parameters from the checkpoint's config.json or GGUF header (never the
    weights, no torch); for the paper's models not found here, their published shapes; else None."""
    from xtl.checkpoints import ModelShape, read_shape

    try:
        return read_shape(spec.load.model)
    except XtlError:
        known = PAPER_MODELS.get(spec.load.model)
        return ModelShape(**known, source="published shape; checkpoint not found here") if known else None


def describe(study: Study, jobs: list[Job] | None = None, gpus: int = 1) -> str:
    """The dry-run text: instances, configurations and an estimated GPU time per sweep."""
    if jobs is None:
        from xtl.study import plan

        jobs = plan(study)
    options = study.options
    steps = "mode score" if options.mode == "score" else f"max_new_tokens {options.max_new_tokens}"
    lines = [f"study -> {study.out}  ({len(jobs)} sweeps; sites {', '.join(options.sites)}; {steps})"]
    total_seconds, unknown = 0.0, 0
    shapes: dict[str, ModelShape | None] = {}
    for job in jobs:
        spec = job.model
        if spec.name not in shapes:
            shapes[spec.name] = model_shape(spec)
            shape = shapes[spec.name]
            where = (
                f"{shape.architecture}, {shape.n_layers} layers, {_count(shape.params)} parameters, from {shape.source}"
                if shape else "checkpoint not found here: configurations and time unknown"
            )  # fmt: skip
            lines.append(f"model {spec.name}: {spec.load.model} ({spec.load.dtype}; layers {spec.layers}; {where})")
        shape = shapes[spec.name]
        n = len(job.instances)
        if shape is None:
            unknown += 1
            lines.append(f"  {job.benchmark}/{job.split}: {n} instances, {len(job.langs)} languages; configurations unknown -> {job.out}")
            continue
        configs = len(job.options.pairs(shape.n_layers))
        sites = len(job.options.sites)
        rows = job.options.n_rows(n, shape.n_layers)
        steps = job.options.max_new_tokens if job.options.mode == "generate" else 1  # score: the options forced at once
        seconds = (
            _REFERENCE["seconds"] * n * sites
            * (shape.params / _REFERENCE["params"])
            * ((1 + configs) / _REFERENCE["rows"])
            * ((1 + steps) / _REFERENCE["tokens"])
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
        "on one H200 in bfloat16 (float32 taken as 2x slower; basis: benchmarks/results/study-gpu-rate.md); "
        "measure your own with a --limit run."
    )  # fmt: skip
    return "\n".join(lines)


def _count(params: float) -> str:
    if params >= 1e9:
        return f"{params / 1e9:.1f}B"
    return f"{params / 1e6:.0f}M" if params >= 1e7 else f"{params / 1e6:.2f}M"


def _hours(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def expected_rows(job: Job) -> int | None:
    shape = model_shape(job.model)
    if shape is None:
        return None
    return job.options.n_rows(len(job.instances), shape.n_layers)
