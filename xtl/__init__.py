"""xtl: cross-lingual latent transplantation (XTransplant) on HookedTransformer models.

The data flow, one module per step:

    xtl.sites       the site table: where a transplant reads and writes (no torch)
    xtl.model       load a HookedTransformer offline (safetensors or GGUF); hook names
                    and model quirks
    xtl.datasets    instance pairs (source prompt, target prompt, gold) and scoring
    xtl.generation  one transplant, the readable reference (`generate`, `transplant`)
    xtl.scoring     scoring mode: option continuations forced after the prompt, their log-probabilities
    xtl.sweeping    every (source layer, target layer) configuration, batched
    xtl.engine      the sweep's arithmetic on TransformerLens weights, one position per row
    xtl.results     the long results table on disk (Parquet), resumable, many writers
    xtl.study       a grid of sweeps from a study file (`xtl.study(...)`), locally or on Ray
    xtl.estimates   a study's dry run: rows and estimated time from config.json (no torch)
    xtl.distributed sweeps over a Ray cluster, one worker per GPU
    xtl.analysis    accuracy / gain grids, win-tie-lose, layer-wise gains, upper bounds
    xtl.selection   instance-aware selectors against vanilla, the best fixed pair, the upper bound
    xtl.plots       plotly figures of those tables
    xtl.report      one self-contained HTML report; PNG/HTML figure export
    xtl.checks      checks of user input that need no torch (the CLI runs them first)
    xtl.options     LoadOptions and SweepOptions, the options of a model and of a sweep
    xtl.signals     the confidence signals of a generation, declared once
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_LAZY = {
    "Site": "xtl.sites",
    "SITES": "xtl.sites",
    "load_model": "xtl.model",
    "generate": "xtl.generation",
    "transplant": "xtl.generation",
    "Generation": "xtl.generation",
    "sweep": "xtl.sweeping",
    "check_model": "xtl.model.checking",
    "XtlError": "xtl.errors",
}
_SUBMODULES = {"datasets", "results", "analysis", "selection", "plots", "report", "explore", "model", "demo", "study", "checks", "errors", "sites", "options", "signals", "scoring", "estimates", "distributed"}


def __getattr__(name: str):
    # Lazy so that `import xtl` (and `xtl --help`) does not import torch.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"xtl.{name}")
    raise AttributeError(f"module 'xtl' has no attribute {name!r}")


def __dir__() -> list[str]:
    # What tab completion and dir(xtl) show: the lazy API as well as what is already loaded.
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


__all__ = sorted(_LAZY) + sorted(_SUBMODULES)
