"""`check_model`: a loaded checkpoint against its own Hugging Face model.

No anchor verifies a conversion per checkpoint, so anyone can run this on
theirs: transformers builds the checkpoint's own model offline (never remote
code), both run the same token ids, and the report gives, per layer, the
largest difference of the residual stream entering the block and of each
site's value (what attention and the MLP add to the residual stream, and the
residual stream between them), then the logits' difference and whether the
greedy answers agree, with a one-line verdict.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from xtl.errors import XtlError

DEFAULT_PROMPTS = (
    "The capital of France is",
    "La capitale de la France est",
    "Mji mkuu wa Ufaransa ni",
)
# Largest difference, relative to the tensor's own scale, still called a match. HF computes norms
# (and some softmaxes) in float32 even in a float64 model, so float32 precision is the bar for both.
TOLERANCE = {"float32": 1e-4, "float64": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


@dataclass(frozen=True)
class Difference:
    """The largest absolute difference of one value, and the value's own scale (its largest magnitude)."""

    largest: float
    scale: float

    @property
    def relative(self) -> float:
        return self.largest / self.scale if self.scale else self.largest


@dataclass
class ModelCheck:
    """What `check_model` found."""

    model: str
    architecture: str
    dtype: str
    tolerance: float
    layers: list[dict[str, Difference]] = field(default_factory=list)  # per layer: point -> difference
    logits: Difference | None = None
    answers: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # prompt, xtl's, HF's

    @property
    def agree(self) -> int:
        return sum(ours == theirs for _, ours, theirs in self.answers)

    @property
    def ok(self) -> bool:
        values = [d for layer in self.layers for d in layer.values()] + [self.logits]
        return self.agree == len(self.answers) and all(d.relative <= self.tolerance for d in values)

    @property
    def verdict(self) -> str:
        worst = max((d.relative for layer in self.layers for d in layer.values()), default=0.0)
        summary = (
            f"largest difference {worst:.1e} of a value's scale in the blocks, {self.logits.relative:.1e} in the "
            f"logits; greedy answers agree on {self.agree}/{len(self.answers)} prompts"
        )
        if self.ok:
            return f"MATCH: xtl computes {self.model}'s own Hugging Face model ({summary})."
        return f"MISMATCH: xtl does not compute {self.model}'s Hugging Face model within {self.tolerance:g} ({summary})."

    def table(self) -> str:
        points = list(self.layers[0]) if self.layers else []
        lines = ["layer  " + "  ".join(f"{p:>16}" for p in points)]
        for index, layer in enumerate(self.layers):
            lines.append(f"{index:>5}  " + "  ".join(f"{layer[p].largest:16.3e}" for p in points))
        lines.append(f"logits: largest difference {self.logits.largest:.3e} (scale {self.logits.scale:.3g})")
        for prompt, ours, theirs in self.answers:
            lines.append(f"{'agree' if ours == theirs else 'DIFFER'}: {prompt!r}")
        return "\n".join(lines)


def _module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def hf_model_of(model, dtype: torch.dtype):
    """The checkpoint's own HF model, built offline by transformers (no remote code)."""
    from transformers import AutoModelForCausalLM

    info = model.xtl
    directory = os.path.dirname(info.gguf_file) if info.gguf_file else info.path
    kwargs = {"gguf_file": os.path.basename(info.gguf_file)} if info.gguf_file else {}
    if model.cfg.num_experts:
        kwargs["experts_implementation"] = "eager"  # the grouped kernels take no float64
    try:
        return AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False, dtype=dtype, **kwargs
        ).eval()
    except Exception as error:  # transformers raises many kinds here
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise XtlError(f"transformers cannot build {info.name}'s own model offline ({first}), so there is nothing to compare with.") from None


@torch.no_grad()
def _hf_values(hf, family, tokens, parallel: bool) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    layers = _module(hf, family.hf_layers)
    values: list[dict[str, torch.Tensor]] = [{} for _ in layers]
    handles = []

    def first(output):
        return output[0] if isinstance(output, tuple) else output

    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(
            lambda m, args, kwargs, i=index: values[i].__setitem__(
                "hook_resid_pre", args[0] if args else kwargs["hidden_states"]), with_kwargs=True))
        for hook, path, kind in family.hf_sites:
            if hook == "hook_resid_mid" and parallel:
                continue
            module = _module(layer, path)
            if kind == "output":
                handles.append(module.register_forward_hook(
                    lambda m, args, output, i=index, h=hook: values[i].__setitem__(h, first(output))))
            else:
                handles.append(module.register_forward_pre_hook(
                    lambda m, args, i=index, h=hook: values[i].__setitem__(h, args[0])))
    try:
        logits = hf(tokens).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits, values


def _difference(ours: torch.Tensor, theirs: torch.Tensor) -> Difference:
    ours, theirs = ours.to(torch.float64).cpu(), theirs.to(torch.float64).cpu()
    return Difference(float((ours - theirs).abs().max()), float(theirs.abs().max()))


def _max(a: Difference | None, b: Difference) -> Difference:
    return b if a is None or b.relative > a.relative else a


@torch.no_grad()
def check_model(
    name_or_path: str | os.PathLike,
    *,
    prompts: tuple[str, ...] | list[str] = DEFAULT_PROMPTS,
    dtype: str = "float32",
    device: str | None = "cpu",
    max_new_tokens: int = 8,
    cache_dir: str | os.PathLike | None = None,
) -> ModelCheck:
    """Load `name_or_path` with xtl and with transformers and compare them on
    `prompts`: per layer the largest difference of the residual stream and of
    each site's value, the logits, and greedy answers (`max_new_tokens`)."""
    from transformers import GenerationConfig

    from xtl.generation import check_max_new_tokens, generate
    from xtl.model import DTYPES, encode, load_model
    from xtl.model.families import family_of

    max_new_tokens = check_max_new_tokens(max_new_tokens)
    if not prompts:
        raise XtlError("no prompt given: check-model needs at least one prompt.")
    model = load_model(name_or_path, dtype=dtype, device=device, cache_dir=cache_dir)
    family = family_of(model.cfg.original_architecture)
    hf = hf_model_of(model, DTYPES[dtype]).to(model.cfg.device)
    check = ModelCheck(model.xtl.name, model.cfg.original_architecture, dtype, TOLERANCE[dtype])
    check.layers = [{} for _ in range(model.cfg.n_layers)]
    eos = list(model.xtl.eos_token_ids) or None
    for prompt in prompts:
        ids = encode(model, prompt)
        tokens = torch.tensor([ids], device=model.cfg.device)
        hf_logits, hf_values = _hf_values(hf, family, tokens, model.cfg.parallel_attn_mlp)
        logits, cache = model.run_with_cache(tokens)
        check.logits = _max(check.logits, _difference(logits, hf_logits))
        for layer, values in enumerate(hf_values):
            for hook, value in values.items():
                found = _difference(cache[f"blocks.{layer}.{hook}"], value)
                check.layers[layer][hook] = _max(check.layers[layer].get(hook), found)
        ours = list(generate(model, prompt, max_new_tokens=max_new_tokens).token_ids)
        greedy = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=eos,
                                  pad_token_id=(eos or [0])[0])  # nothing else from the checkpoint's settings
        out = hf.generate(tokens, attention_mask=torch.ones_like(tokens), generation_config=greedy)
        check.answers.append((prompt, ours, out[0, len(ids):].tolist()))
    return check
