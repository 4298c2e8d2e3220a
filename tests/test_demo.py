"""The demo: a deterministic model built in code (`xtl.testing.random_model`), the
shipped demo pairs, and `xtl demo` writing a run, a report and figures offline."""

from __future__ import annotations

import contextlib
import re

import pytest
import torch

import xtl
from xtl import demo, results
from xtl.datasets import load_pairs
from xtl.testing import random_model
from xtl.cli import main

SITES = ("ffn", "attn-paper", "attn")


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with `n` torch threads, then restore the number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    with torch_threads(1):  # a model this small runs fastest on one thread
        yield random_model.build_demo_model()


@pytest.fixture()
def one_thread():
    with torch_threads(1):
        yield


def test_two_builds_are_identical(model, one_thread):
    again = random_model.build_demo_model()
    assert again.xtl.fingerprint == model.xtl.fingerprint
    assert re.fullmatch(r"[0-9a-f]{16}", model.xtl.fingerprint)
    first, second = model.state_dict(), again.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert again.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    for item in random_model.load_demo()[::20]:
        assert xtl.generate(again, item.target, max_new_tokens=8) == xtl.generate(model, item.target, max_new_tokens=8)
    # a different seed is a different model
    assert random_model.build_demo_model(seed=1).xtl.fingerprint != model.xtl.fingerprint


def test_model_info_and_config(model):
    info = model.xtl
    assert (info.name, info.path, info.architecture) == ("xtl-demo", None, "LlamaForCausalLM")
    assert info.eos_token_ids == (model.tokenizer.eos_token_id,)
    cfg = model.cfg
    assert (cfg.normalization_type, cfg.positional_embedding_type, cfg.gated_mlp) == ("RMS", "rotary", True)
    assert cfg.rotary_adjacent_pairs is False and cfg.default_prepend_bos is False
    assert cfg.d_vocab == len(model.tokenizer)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_tokenizer_round_trips_the_demo_prompts(model):
    tokenizer = model.tokenizer
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(4)] == ["<s>", "</s>", "<pad>", "<unk>"]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
    prompts = [text for item in random_model.load_demo() for text in (item.source, item.target)]
    assert len(prompts) == 2 * 72
    for text in prompts:
        ids = xtl.model.encode(model, text)
        assert ids[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in ids[1:]  # a BOS, like Llama
        assert xtl.model.decode(model, ids) == text
    # the answer markers are single tokens, in prompts and answers alike
    for marker in random_model.MARKERS:
        ids = tokenizer(f"x {marker} y").input_ids
        assert tokenizer.convert_tokens_to_ids(marker) in ids
        assert xtl.model.decode(model, [tokenizer.convert_tokens_to_ids(marker)]) == marker


def test_demo_pairs_load_with_the_public_api():
    for benchmark, scorer, n_options in (("xnli", "option", 3), ("xcopa", "option", 2), ("globalopinionqa", "letter", None)):
        path = random_model.demo_pairs_path(benchmark)
        instances = load_pairs(path)
        assert len(instances) == 24 and {i.lang for i in instances} == {"de", "sw", "zh"}
        assert {i.benchmark for i in instances} == {f"pairs:{benchmark}-demo"}
        assert {i.scorer for i in instances} == {scorer} and {i.split for i in instances} == {"demo"}
        for item in instances:
            assert item.source != item.target
            assert item.is_correct(f"({item.gold})") is True
            if n_options:
                assert len(item.options) == n_options
                assert item.is_correct(f"({item.options[0]}) ({item.options[1]})") is False  # two answers
        # the same source line is paired with every language (parallel data)
        by_index = {}
        for item in instances:
            by_index.setdefault(item.id.rsplit("/", 1)[1], set()).add(item.source if scorer == "option" else item.target[:30])
        if scorer == "option":
            assert all(len(sources) == 1 for sources in by_index.values())
    assert sum(1 for _ in random_model.demo_data_dir().glob("*.jsonl")) == 4  # and facts-demo.jsonl (see test_datasets)


def test_demo_model_answers_with_the_options_offered(model, one_thread):
    """The hand-made circuit works: most answers are one option of the prompt, and they vary."""
    answers = [xtl.generate(model, item.target, max_new_tokens=8).text for item in random_model.load_demo()]
    markers = [re.findall(r"\(([123A-D])\)", text) for text in answers]
    assert sum(len(m) >= 1 for m in markers) >= 0.9 * len(answers)
    assert len({m[0] for m in markers if m}) >= 4


def test_sweep_equals_transplant_on_the_demo_model(model, one_thread):
    instances = [load_pairs(random_model.demo_pairs_path(b))[k] for b, k in (("xnli", 9), ("xcopa", 21), ("globalopinionqa", 3))]
    frame = xtl.sweep(model, instances, sites=SITES, configs="all", max_new_tokens=8, max_batch_rows=50, progress=False)
    n = model.cfg.n_layers
    assert len(frame) == len(instances) * (1 + len(SITES) * n * n)
    rows = {
        (r.instance_id, r.site, None if r.source_layer is None else int(r.source_layer),
         None if r.target_layer is None else int(r.target_layer)): r
        for r in frame.astype(object).where(frame.notna(), None).itertuples()
    }  # fmt: skip
    changed = early = full = 0
    for item in instances:
        vanilla = xtl.generate(model, item.target, max_new_tokens=8)
        row = rows[(item.id, None, None, None)]
        assert (list(row.token_ids), row.text, row.correct) == (list(vanilla.token_ids), vanilla.text, item.is_correct(vanilla.text))
        for site in SITES[: 3 if item is instances[0] else 2]:  # clean attn on one instance keeps this fast
            for i in range(n):
                for j in range(n):
                    expected = xtl.transplant(model, item.source, item.target, site=site, source_layer=i, target_layer=j, max_new_tokens=8)
                    row = rows[(item.id, site, i, j)]
                    assert (list(row.token_ids), row.text) == (list(expected.token_ids), expected.text), (item.id, site, i, j)
                    assert row.correct == item.is_correct(expected.text)
                    changed += expected.text != vanilla.text
                    early += len(expected.token_ids) < 8
                    full += len(expected.token_ids) == 8
    # the comparison covered transplants that change the answer, rows that stopped at EOS and rows that did not
    assert changed > 0 and early > 0 and full > 0


def test_xtl_demo_writes_run_report_and_figures(tmp_path, capsys, models_dir):
    # The study of `xtl demo` on a tiny checkpoint (the real-model run takes minutes: see the README).
    out = tmp_path / "demo"
    model_dir = models_dir / "tiny-llama"
    assert main(["demo", "--out", str(out), "--model", str(model_dir), "--layers", "0,1", "--limit", "2"]) == 0
    printed = capsys.readouterr()

    run_dir, report, figures = out / "run", out / "report.html", out / "figures"
    frame = results.load(run_dir)
    assert len(frame) == 4 * 2 * (1 + 2 * 4)  # 4 languages x 2 facts x (vanilla + 2 sites x 2x2 layers)
    assert set(frame["site"].dropna()) == {"ffn", "attn-paper"} and set(frame["lang"]) == {"fr", "de", "es", "it"}
    assert frame["correct"].notna().all()
    settings = results.settings(run_dir)
    assert settings["model"] == "tiny-llama" and settings["max_new_tokens"] == demo.DEMO_MAX_NEW_TOKENS
    assert settings["prompt_format"] == "raw"  # tiny-llama has no chat template

    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "tiny-llama" in html
    assert not re.search(r"<script[^>]*\bsrc=", html)  # plotly.js inline: opens offline
    pngs = sorted(figures.glob("*.png"))
    assert len(pngs) >= 6 and len(list(figures.glob("*.html"))) == len(pngs)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in pngs)

    stdout = printed.out
    for path in (run_dir, report, figures):
        assert str(path) in stdout
    assert "swept 8 facts (target languages de, es, fr, it) x 4 configurations (layers 0,1)" in stdout
    assert demo.describe("tiny-llama", embedded=False) in stdout
    summary = demo.facts_summary(frame)
    assert f"{summary['upper bound'].iloc[-1]:.2f}" in stdout
    assert "has no chat template: the prompts go in raw" in printed.err
    assert "no PNG figures" not in stdout


def test_facts_summary_counts_from_the_rows():
    def row(k, lang, site, i, j, correct):
        return {"run_id": "r", "model": "m", "model_fingerprint": "f", "n_layers": 2, "dtype": "float32",
                "max_new_tokens": 2, "benchmark": "pairs:facts-demo", "split": "demo", "lang": lang,
                "instance_id": f"{lang}/{k}", "source": "S", "target": "T", "gold": "x", "site": site,
                "source_layer": i, "target_layer": j, "token_ids": [5], "text": "t", "correct": correct}

    rows = [row(0, "fr", None, None, None, False), row(1, "fr", None, None, None, True),
            row(0, "fr", "ffn", 0, 1, True), row(1, "fr", "ffn", 0, 1, False),
            row(0, "fr", "ffn", 1, 1, False), row(1, "fr", "ffn", 1, 1, False)]  # fmt: skip
    summary = demo.facts_summary(xtl.results.to_frame(rows)).set_index("lang")
    fr = summary.loc["fr"]
    assert (fr["n"], fr["vanilla"], fr["best config"], fr["best"], fr["mean"], fr["upper bound"]) == (2, 0.5, "0->1", 0.5, 0.25, 1.0)


def test_demo_layers_spread_evenly():
    assert demo.demo_layers(30) == [0, 3, 7, 10, 14, 17]
    assert demo.demo_layers(4) == [0, 1, 2, 3]


def test_demo_keeps_the_html_figures_without_a_png_exporter(tmp_path, monkeypatch):
    frame = xtl.results.to_frame(
        [
            {"run_id": "r", "model": "m", "model_fingerprint": "f", "n_layers": 2, "dtype": "float32", "max_new_tokens": 2,
             "benchmark": "b", "split": "s", "lang": "sw", "instance_id": str(k), "source": "S", "target": "T", "gold": "1",
             "site": site, "source_layer": i, "target_layer": j, "token_ids": [5], "text": "(1)", "correct": (k + (i or 0)) % 2 == 0}
            for k in range(2)
            for site, i, j in [(None, None, None)] + [("ffn", i, j) for i in range(2) for j in range(2)]
        ]
    )  # fmt: skip

    def no_exporter(*args, **kwargs):
        raise xtl.XtlError("PNG export needs the kaleido package, which is not installed")

    monkeypatch.setattr("xtl.report.write_pngs", no_exporter)
    files, error = demo._write_figures(frame, tmp_path / "figures")
    assert error == "PNG export needs the kaleido package, which is not installed"
    assert files and all(p.suffix == ".html" and p.is_file() for p in files)


def test_xtl_demo_out_is_a_file_is_one_sentence(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["demo", "--out", str(target), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err and "Traceback" not in err
    assert target.read_text() == "x"
