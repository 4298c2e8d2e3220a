"""The options of loading a model and of a sweep, each one frozen dataclass.

The API (`xtl.sweep`), the command line, study files and Ray workers all pass
these objects, so an option added here reaches every one of them (a worker's
model cache is keyed on the `LoadOptions` it loaded). Both check their values
when made, without torch: a mistake costs milliseconds, not a model load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from xtl import checks
from xtl.errors import XtlError
from xtl.sites import check_site


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model (`xtl.load_model`'s options): `options.load()` loads it."""

    model: str  # a local checkpoint directory, a .gguf file, the embedded model, or a name in the local HF cache
    dtype: str = "float32"
    device: str | None = None  # None: cuda when available
    n_ctx: int | None = None  # None: the checkpoint's context, at most 4096
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", os.fspath(self.model))
        checks.check_dtype(self.dtype)
        checks.check_device_name(self.device)
        object.__setattr__(self, "n_ctx", checks.check_n_ctx(self.n_ctx))

    def load(self):
        """The model (a HookedTransformer), loaded with these options."""
        from xtl.model import load_model

        return load_model(
            self.model, dtype=self.dtype, device=self.device, n_ctx=self.n_ctx, trust_remote_code=self.trust_remote_code
        )


@dataclass(frozen=True)
class SweepOptions:
    """What a sweep computes (`xtl.sweep`): sites x configurations, generation, batch size."""

    sites: tuple[str, ...] = ("ffn",)
    configs: str | tuple[tuple[int, int], ...] = "all"  # "all", a layer spec, or (source_layer, target_layer) pairs
    max_new_tokens: int = 20
    prompt_format: str = "raw"  # "raw" or "chat"
    memory_budget: str | int | None = None  # "auto"/None, bytes, or a size like "8GiB"
    max_batch_rows: int | None = None
    mode: str = "generate"  # or "score": teacher-forced option scores (`xtl.scoring`); max_new_tokens is then unused

    def __post_init__(self) -> None:
        checks.check_mode(self.mode)
        sites = (self.sites,) if isinstance(self.sites, str) else tuple(dict.fromkeys(self.sites))
        if not sites:
            from xtl.sites import names

            raise XtlError(f"no site given: choose one or more of {', '.join(names())}.")
        object.__setattr__(self, "sites", tuple(check_site(site) for site in sites))
        if isinstance(self.configs, str):
            checks.check_layer_spec(self.configs)
        else:
            object.__setattr__(self, "configs", tuple(tuple(pair) if isinstance(pair, list) else pair for pair in self.configs))
        object.__setattr__(self, "max_new_tokens", checks.check_max_new_tokens(self.max_new_tokens))
        checks.check_prompt_format(self.prompt_format)
        checks.parse_memory(self.memory_budget)
        object.__setattr__(self, "max_batch_rows", checks.check_max_batch_rows(self.max_batch_rows))

    def n_rows(self, n_instances: int, n_layers: int) -> int:
        """The rows of this sweep over `n_instances` on a model of `n_layers`: each instance's vanilla
        row, and one per site and configuration."""
        return n_instances * (1 + len(self.sites) * len(self.pairs(n_layers)))

    def pairs(self, n_layers: int) -> list[tuple[int, int]]:
        """The (source_layer, target_layer) configurations for a model of `n_layers` layers."""
        return checks.parse_layers(self.configs, n_layers)
