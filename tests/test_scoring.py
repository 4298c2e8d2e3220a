"""Scoring mode: teacher-forced option log-probabilities, checked against an
independent computation with plain Hugging Face forward hooks (the full
sequence prompt + continuation in one forward pass, the write at the last
prompt position), and the sweep against the reference row for row."""

from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import xtl
from xtl import datasets
from xtl.errors import XtlError
from xtl.scoring import Scores, continuation_ids, score

from conftest import DATA_DIR, MODELS_DIR, TINY_MODELS

SITES = ("ffn", "attn", "attn-paper")


def _site(value):
    return value if isinstance(value, str) else None


def _layer(value):
    return None if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) else int(value)


# --- the independent computation ------------------------------------------------------


def _read_module(layer, site):
    # ffn: the MLP's output; attn: self_attn's output; attn-paper: the residual after attention,
    # which is the input of post_attention_layernorm
    return {"ffn": layer.mlp, "attn": layer.self_attn, "attn-paper": layer.post_attention_layernorm}[site]


def _write_module(layer, site):
    return layer.mlp if site == "ffn" else layer.self_attn


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _rmsnorm_in_own_dtype(module, args, output):
    # HF computes RMSNorm in float32 even for a float64 model; recompute it in the input's dtype.
    x = args[0]
    return module.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon))


@torch.no_grad()
def hf_scores(hf, tokenizer, source, target, continuations, *, site=None, source_layer=None, target_layer=None):
    """Summed log-probabilities of each continuation after `target`, from HF logits
    over prompt + continuation (float64 log-softmax), the transplant written at
    the last prompt position by forward hooks."""
    layers = hf.model.layers
    handles = [m.register_forward_hook(_rmsnorm_in_own_dtype) for m in hf.modules() if type(m).__name__.endswith("RMSNorm")]
    try:
        vector = None
        if site is not None:
            read = {}
            module = _read_module(layers[source_layer], site)
            if site == "attn-paper":
                hook = module.register_forward_pre_hook(lambda m, args: read.__setitem__("v", args[0][0, -1].clone()))
            else:
                hook = module.register_forward_hook(lambda m, args, out: read.__setitem__("v", _first(out)[0, -1].clone()))
            hf(torch.tensor([tokenizer(source).input_ids]))
            hook.remove()
            vector = read["v"]
        prompt = tokenizer(target).input_ids
        position = len(prompt) - 1

        def write(module, args, output):
            value = _first(output).clone()
            value[:, position] = vector
            return (value, *output[1:]) if isinstance(output, tuple) else value

        if site is not None:
            handles.append(_write_module(layers[target_layer], site).register_forward_hook(write))
        totals = []
        for ids in continuations:
            logits = hf(torch.tensor([prompt + list(ids)])).logits[0].to(torch.float64)
            logprobs = logits.log_softmax(-1)
            totals.append(sum(float(logprobs[position + k, t]) for k, t in enumerate(ids)))
        return totals
    finally:
        for handle in handles:
            handle.remove()


def _randomised_checkpoint(name, tmp_path):
    """The tiny checkpoint with random norm weights and biases (HF initialises biases to 0)."""
    hf = AutoModelForCausalLM.from_pretrained(MODELS_DIR / name, dtype=torch.float32)
    generator = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for param_name, param in hf.named_parameters():
            if "norm" in param_name:
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=generator))
            elif param_name.endswith(".bias"):
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    out = tmp_path / name
    hf.save_pretrained(out, safe_serialization=True)
    for file in (MODELS_DIR / name).iterdir():
        if file.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(file, out / file.name)
    return out


def _compare_with_hf(frame, instances, hf, tokenizer, tolerance):
    by_id = {item.id: item for item in instances}
    worst = 0.0
    for row in frame.itertuples():
        item = by_id[row.instance_id]
        site = _site(row.site)
        expected = hf_scores(
            hf, tokenizer, item.source, item.target, row.option_token_ids,
            site=site, source_layer=_layer(row.source_layer), target_layer=_layer(row.target_layer),
        )
        worst = max(worst, max(abs(a - b) for a, b in zip(row.option_logprobs, expected)))
        assert row.option_choice == max(range(len(expected)), key=expected.__getitem__)
        texts, gold = datasets.option_texts(item)
        assert row.gold_option == gold
        assert row.gold_logprob == row.option_logprobs[gold]
    assert worst <= tolerance, worst


# --- the done-when case ---------------------------------------------------------------


def test_float64_scoring_sweep_of_xnli_sw_equals_hf_hooks_on_every_site():
    items = datasets.load("xnli", "sw", data_dir=DATA_DIR)[:2]
    model = xtl.load_model(MODELS_DIR / "tiny-mistral", dtype="float64")
    frame = xtl.sweep(model, items, sites=SITES, mode="score", progress=False)
    assert len(frame) == 2 * (1 + 3 * 16)
    assert set(frame["mode"]) == {"score"} and (frame["option_logprobs"].map(len) == 3).all()
    assert list(frame["gold_option"][frame["instance_id"] == items[0].id].unique()) == [int(items[0].gold) - 1]
    hf = AutoModelForCausalLM.from_pretrained(MODELS_DIR / "tiny-mistral", dtype=torch.float64).eval()
    _compare_with_hf(frame, items, hf, AutoTokenizer.from_pretrained(MODELS_DIR / "tiny-mistral"), 1e-6)
    # the transplant changes the scores (the test would pass vacuously otherwise)
    assert frame.groupby("instance_id")["gold_logprob"].nunique().min() > 10


@pytest.mark.parametrize("name, dtype, tolerance", [("tiny-qwen2", "float64", 1e-6), ("tiny-llama", "float32", 1e-4)])
def test_scores_equal_hf_hooks_with_random_norms_and_biases(name, dtype, tolerance, tmp_path):
    checkpoint = _randomised_checkpoint(name, tmp_path)
    items = datasets.load("xcopa", "sw", data_dir=DATA_DIR)[:1] + datasets.load("globalopinionqa", "de", data_dir=DATA_DIR)[:1]
    model = xtl.load_model(checkpoint, dtype=dtype)
    frame = xtl.sweep(model, items, sites=SITES, configs=[(0, 3), (2, 1), (3, 3)], mode="score", progress=False)
    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).eval()
    _compare_with_hf(frame, items, hf, AutoTokenizer.from_pretrained(checkpoint), tolerance)


# --- the sweep against the reference ---------------------------------------------------


def _reference_rows(model, items, frame, prompt_format="raw"):
    by_id = {item.id: item for item in items}
    for row in frame.itertuples():
        item = by_id[row.instance_id]
        texts, gold = datasets.option_texts(item)
        site = _site(row.site)
        if site is None:
            expected = xtl.generate(model, item.target, mode="score", option_texts=texts, gold_option=gold, prompt_format=prompt_format)
        else:
            expected = xtl.transplant(
                model, item.source, item.target, site=site, source_layer=int(row.source_layer),
                target_layer=int(row.target_layer), mode="score", option_texts=texts, gold_option=gold, prompt_format=prompt_format,
            )
        yield row, expected


@pytest.mark.parametrize("name", TINY_MODELS)
def test_sweep_equals_the_reference_row_for_row(name):
    items = (
        datasets.load("xnli", "sw", data_dir=DATA_DIR)[:1]
        + datasets.load("xquad", "de", data_dir=DATA_DIR)[:1]
        + datasets.load("globalopinionqa", "de", data_dir=DATA_DIR)[:1]
    )
    model = xtl.load_model(MODELS_DIR / name, dtype="float32")
    # max_batch_rows 5: an instance's configurations split across batches
    frame = xtl.sweep(model, items, sites=SITES, configs="0,3", mode="score", progress=False, max_batch_rows=5)
    for row, expected in _reference_rows(model, items, frame):
        assert [list(ids) for ids in row.option_token_ids] == [list(ids) for ids in expected.option_token_ids]
        assert max(abs(a - b) for a, b in zip(row.option_logprobs, expected.option_logprobs)) <= 1e-4
        assert row.option_choice == expected.option_choice and row.gold_option == expected.gold_option
        if row.benchmark == "xquad":  # one option: the gold text, no margin, no accuracy by option
            assert len(row.option_logprobs) == 1 and pd.isna(row.gold_margin) and pd.isna(row.correct)
        else:
            assert row.gold_margin == pytest.approx(expected.gold_margin, abs=2e-4)
            assert bool(row.correct) == (row.option_choice == row.gold_option)


@pytest.mark.parametrize("prompt_format, site, pair", [("raw", "ffn", (3, 20)), ("chat", "attn-paper", (25, 10))])
def test_sweep_equals_the_reference_on_smollm2(smollm2, prompt_format, site, pair):
    items = datasets.load("xnli", "sw", data_dir=DATA_DIR)[:1]
    frame = xtl.sweep(smollm2, items, sites=[site], configs=[pair], mode="score", progress=False, prompt_format=prompt_format)
    assert len(frame) == 2
    for row, expected in _reference_rows(smollm2, items, frame, prompt_format):
        assert [list(ids) for ids in row.option_token_ids] == [list(ids) for ids in expected.option_token_ids]
        assert max(abs(a - b) for a, b in zip(row.option_logprobs, expected.option_logprobs)) <= 1e-4


# --- the pieces ---------------------------------------------------------------------------


def test_option_texts_follow_each_benchmark():
    xnli = datasets.load("xnli", "sw", data_dir=DATA_DIR)[0]
    assert datasets.option_texts(xnli) == (("(1)", "(2)", "(3)"), int(xnli.gold) - 1)
    xcopa = datasets.load("xcopa", "sw", data_dir=DATA_DIR)[0]
    assert datasets.option_texts(xcopa) == (("(1)", "(2)"), int(xcopa.gold) - 1)
    goqa = datasets.load("globalopinionqa", "de", data_dir=DATA_DIR)[0]
    texts, gold = datasets.option_texts(goqa)
    assert texts == tuple(f"({letter})" for letter in goqa.options) and texts[gold] == f"({goqa.gold})"
    xquad = datasets.load("xquad", "de", data_dir=DATA_DIR)[0]
    assert datasets.option_texts(xquad) == ((xquad.gold,), 0)
    facts = datasets.load("facts", "fr")[0]
    assert datasets.option_texts(facts) == ((facts.gold.split("|")[0],), 0)


def test_continuation_follows_the_prompt_tokens():
    model = xtl.load_model(MODELS_DIR / "tiny-llama")
    target = datasets.load("xnli", "sw", data_dir=DATA_DIR)[0].target
    ids = continuation_ids(model, target, "(2)")
    prompt = model.tokenizer(target).input_ids
    assert model.tokenizer(target + " (2)").input_ids == prompt + ids
    assert model.tokenizer.decode(ids) == " (2)"


def test_derived_columns():
    scores = Scores.of([[1], [2, 3], [4]], [-2.0, -3.0, -1.5], gold_option=0)
    assert scores.option_choice == 2 and scores.option_choice_norm == 1  # -1.5 per token for option 1
    assert scores.gold_logprob == -2.0 and scores.gold_margin == pytest.approx(-0.5)
    assert Scores.of([[1]], [-2.0], gold_option=0).gold_margin is None
    assert Scores.of([[1], [2]], [-2.0, -1.0], gold_option=None).gold_logprob is None


def test_scoring_mode_mistakes():
    model = xtl.load_model(MODELS_DIR / "tiny-llama")
    with pytest.raises(XtlError, match="needs the continuations"):
        xtl.generate(model, "Hi", mode="score")
    with pytest.raises(XtlError, match="unknown mode 'scores'"):
        xtl.generate(model, "Hi", mode="scores", option_texts=["a"])
    with pytest.raises(XtlError, match="gold_option 3 is not an index"):
        score(model, "Hi", ["a", "b"], gold_option=3)
    with pytest.raises(XtlError, match="unknown mode"):
        xtl.sweep(model, datasets.load("facts", "fr")[:1], mode="greedy", progress=False)


def _parallel_checkpoint(tmp_path):
    """A tiny GPT-NeoX (Pythia) checkpoint: attention and MLP in parallel, no resid_mid."""
    from transformers import GPTNeoXConfig

    config = GPTNeoXConfig(vocab_size=1024, hidden_size=64, intermediate_size=96, num_attention_heads=4,
                           num_hidden_layers=2, max_position_embeddings=256, rotary_pct=0.5,
                           bos_token_id=0, eos_token_id=1, pad_token_id=2)
    out = tmp_path / "tiny-neox"
    AutoModelForCausalLM.from_config(config).save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(MODELS_DIR / "tiny-qwen2" / name, out / name)
    return out


def test_score_mode_refuses_attn_paper_on_parallel_blocks_as_generate_mode_does(tmp_path):
    model = xtl.load_model(_parallel_checkpoint(tmp_path), dtype="float32")
    assert model.cfg.parallel_attn_mlp
    arguments = dict(site="attn-paper", source_layer=0, target_layer=1)
    with pytest.raises(XtlError) as generating:
        xtl.transplant(model, "a b c", "d e f", **arguments)
    with pytest.raises(XtlError) as scoring:
        xtl.transplant(model, "a b c", "d e f", **arguments, mode="score", option_texts=["(1)", "(2)"])
    assert "attention and MLP in parallel" in str(generating.value)
    assert str(scoring.value) == str(generating.value)
    with pytest.raises(XtlError, match="attention and MLP in parallel"):
        score(model, "d e f", ["(1)", "(2)"], source="a b c", **arguments)


def test_scoring_runs_resume_and_hold_one_mode(tmp_path):
    model = xtl.load_model(MODELS_DIR / "tiny-llama")
    items = datasets.load("xcopa", "sw", data_dir=DATA_DIR)[:2]
    out = tmp_path / "run"
    first = xtl.sweep(model, items[:1], configs="0,1", mode="score", out=out, progress=False)
    assert xtl.results.settings(out)["mode"] == "score"
    both = xtl.sweep(model, items, configs="0,1", mode="score", out=out, progress=False)
    assert len(both) == 2 * len(first)
    again = xtl.sweep(model, items[:1], configs="0,1", mode="score", progress=False)
    merged = both[both["instance_id"] == items[0].id].merge(again, on=["instance_id", "site", "source_layer", "target_layer"])
    assert (merged["option_logprobs_x"].map(list) == merged["option_logprobs_y"].map(list)).all()
    with pytest.raises(XtlError, match="mode"):
        xtl.sweep(model, items, configs="0,1", out=out, progress=False)  # generate mode into a scoring run


# --- analyses, figures, selection, report on a scoring run ------------------------------------


@pytest.fixture(scope="module")
def scoring_run():
    model = xtl.load_model(MODELS_DIR / "tiny-llama")
    items = datasets.load("xnli", "sw", data_dir=DATA_DIR)[:4] + datasets.load("xnli", "th", data_dir=DATA_DIR)[:4]
    return xtl.sweep(model, items, sites=["ffn"], configs="0,2,3", mode="score", progress=False)


def test_metrics_of_a_scoring_run_are_means_and_differences(scoring_run):
    from xtl import analysis

    df = scoring_run
    vanilla = df[df["site"].isna() & (df["lang"] == "sw")]
    cell = df[(df["site"] == "ffn") & (df["source_layer"] == 2) & (df["target_layer"] == 0) & (df["lang"] == "sw")]
    for metric in ("gold_logprob", "gold_margin"):
        gain = analysis.gain_grid(df, lang="sw", metric=metric).loc[2, 0]
        assert gain == pytest.approx(cell[metric].mean() - vanilla[metric].mean())
        ub = analysis.upper_bounds(df, lang="sw", metric=metric)
        best = df[(df["lang"] == "sw") & df["site"].notna()].groupby("instance_id")[metric].max()
        assert ub.overall == pytest.approx(best.mean()) and ub.vanilla == pytest.approx(vanilla[metric].mean())
    # accuracy of a scoring run: the best-scored option is the gold
    acc = analysis.accuracy_grid(df, lang="sw", metric="option_accuracy").loc[2, 0]
    assert acc == pytest.approx((cell["option_choice"] == cell["gold_option"]).mean())
    assert analysis.accuracy_grid(df, lang="sw").loc[2, 0] == acc
    wtl = analysis.win_tie_lose(df, metric="gold_margin")
    assert (wtl["total"] == wtl[["wins", "ties", "losses"]].sum(axis=1)).all()
    with pytest.raises(XtlError, match="unknown metric"):
        analysis.gain_grid(df, lang="sw", metric="margin")


def test_figures_and_report_of_a_scoring_run(scoring_run, tmp_path):
    from xtl import explore, plots, report

    fig = plots.gain_heatmap(scoring_run, facet="lang", pooled=True, metric="gold_margin")
    assert "nats" in fig.layout.coloraxis.colorbar.title.text and "gold margin" in fig.layout.title.subtitle.text
    assert "n = 4" in fig.layout.annotations[1].text
    fig = plots.upper_bound_curves(scoring_run, pooled=True, metric="gold_logprob")
    assert fig.layout.yaxis.title.text == "mean gold log-probability (nats)"
    assert "accuracy (best-scored option)" in plots.win_tie_lose_bars(scoring_run).layout.title.text.replace("<br>", " ")
    plots.layerwise_heatmap(scoring_run, metric="gold_margin")
    sections = report.report_sections(scoring_run)
    names = [f.name for s in sections for f in s.figures]
    assert any(name.endswith("_gain_gold_margin") for name in names)
    tables = [title for s in sections for title, _ in s.tables]
    assert any(title.startswith("By mean gold margin") and "bootstrap" in title for title in tables)
    group = {"model": "tiny-llama", "site": "ffn", "benchmark": "xnli", "split": "sample", "langs": ["sw"]}
    moves = explore.cell_moves(scoring_run, group, 2, 0, "gold_margin")
    assert list(moves["change"].abs()) == sorted(moves["change"].abs(), reverse=True) and len(moves) == 4
    assert "moves most" in explore.on_cell_click(scoring_run, group, 2, 0, "gold_margin")
    with pytest.raises(XtlError, match="needs the option scores"):
        plots.gain_heatmap(scoring_run.assign(mode="generate"), metric="gold_margin")
    for plot in (plots.gain_heatmap, plots.layerwise_heatmap, plots.win_tie_lose_bars, plots.upper_bound_curves):
        with pytest.raises(XtlError, match="unknown metric 'gold': the metrics are accuracy, "):
            plot(scoring_run, metric="gold")
    # a share metric of a scoring run: the instances flipped in that metric, not in `correct`
    from xtl import analysis

    norm = analysis.with_metric(scoring_run, "option_accuracy_norm")
    assert explore.on_cell_click(scoring_run, group, 2, 0, "option_accuracy_norm") == explore.on_cell_click(norm, group, 2, 0)


def test_selection_on_scores_never_sees_the_gold_and_has_a_paired_interval(scoring_run):
    from xtl import selection

    table = selection.evaluate(scoring_run, metric="gold_margin")
    assert {"max_confidence(option_top_margin)", "vote(option_top_margin)"} <= set(table["selector"])
    # a scoring run has signals (its option scores; no generation signals), as `xtl select` and the report ask
    assert selection.has_signals(scoring_run) and not selection.has_signals(scoring_run, selection.SIGNALS)
    assert not selection.has_signals(scoring_run.drop(columns="option_logprobs"))
    pooled = table[table["lang"] == "pooled"].set_index("selector")
    assert (pooled["versus"] == "vanilla").all() and pooled.loc["vanilla", "difference"] == 0
    assert (pooled["ci_low"] <= pooled["difference"]).all() and (pooled["difference"] <= pooled["ci_high"]).all()
    # the gold columns are hidden: flipping every gold changes no choice
    cands = selection.candidates(scoring_run)
    assert not {"gold", "gold_option", "gold_logprob", "gold_margin", "correct"} & set(cands.rows.columns)
    flipped = scoring_run.assign(gold_option=(scoring_run["gold_option"] + 1) % 3, gold_margin=-scoring_run["gold_margin"])
    sel = selection.selector("max_confidence(option_top_margin)")
    assert (sel.select(selection.candidates(flipped)) == sel.select(cands)).all()
    # the interval: a known difference and its bootstrap
    diff, low, high = selection.paired_bootstrap([1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0])
    assert diff == 0.75 and 0 <= low <= 0.75 <= high <= 1


def test_cli_sweep_mode_score(tmp_path, capsys):
    from xtl.cli import main

    out = tmp_path / "run"
    args = ["sweep", "--model", str(MODELS_DIR / "tiny-llama"), "--benchmark", "xcopa", "--lang", "sw", "--limit", "2",
            "--data-dir", str(DATA_DIR), "--layers", "0,3", "--out", str(out)]
    assert main([*args, "--mode", "score"]) == 0
    assert "gold log-probability" in capsys.readouterr().out
    assert main([*args, "--mode", "generate"]) == 2
    assert "mode: 'score' there, 'generate' now" in capsys.readouterr().err


def test_the_scoring_study_file_plans_scoring_sweeps():
    from xtl.study import plan, read_study

    from conftest import REPO

    study = read_study(REPO / "studies" / "smollm2-pilot-score.toml", data_dir=DATA_DIR, limit=1)
    jobs = plan(study)
    assert [job.benchmark for job in jobs] == ["xnli", "xcopa", "globalopinionqa"]
    assert all(job.options.mode == "score" and len(job.instances) == 2 for job in jobs)
    with pytest.raises(XtlError, match="unknown mode 'scores'"):
        from xtl.study import study_from_dict

        study_from_dict({"out": "x", "benchmarks": ["xnli"], "models": ["m"], "mode": "scores"})


def test_parts_written_before_scoring_load_with_null_scoring_columns(tmp_path):
    import pyarrow.parquet as pq

    model = xtl.load_model(MODELS_DIR / "tiny-llama")
    out = tmp_path / "run"
    xtl.sweep(model, datasets.load("xcopa", "sw", data_dir=DATA_DIR)[:1], configs="0", max_new_tokens=2, out=out, progress=False)
    assert "mode" not in xtl.results.settings(out)  # generate runs keep the settings (and run ids) of before
    old_columns = [c for c in xtl.results.COLUMNS if c != "mode" and c not in xtl.results.OPTION_COLUMNS]
    for part in out.glob("part-*.parquet"):
        # as an xtl of that time wrote them: without the new columns, and without a content hash
        pq.write_table(pq.read_table(part, columns=old_columns).replace_schema_metadata(), part)
    table = xtl.results.load(out)
    assert table["mode"].isna().all() and table["option_logprobs"].isna().all() and len(table) == 2
    from xtl import analysis

    assert analysis.accuracy_grid(table).shape == (4, 4)
    with pytest.raises(XtlError, match="needs the option scores of a scoring run"):
        analysis.gain_grid(table, metric="gold_margin")
