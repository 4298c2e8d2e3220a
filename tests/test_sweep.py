"""The sweep engine: equal to the reference path row for row, stored
resumably, and refusing bad input before it writes anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pandas as pd
import pytest

import xtl
from xtl import datasets, results
from xtl.errors import XtlError
from xtl.engine import Engine
from xtl.checks import parse_layers
from xtl.sweeping import _Batch, prepare, Row

from conftest import DATA_DIR, MODELS_DIR, REPO

XTL = [sys.executable, "-m", "xtl"]


@pytest.fixture(scope="module")
def mistral():
    return xtl.load_model(MODELS_DIR / "tiny-mistral")


def _rows(frame: pd.DataFrame) -> dict:
    frame = frame.astype(object).where(frame.notna(), None)
    return {
        (r.instance_id, r.site, r.source_layer, r.target_layer): (list(r.token_ids), r.text, r.correct)
        for r in frame.itertuples()
    }


def test_every_configuration_equals_transplant(mistral):
    # Two instances of different lengths in one batch, all three sites, and a
    # batch size that splits an instance's configurations over several batches.
    instances = datasets.load("xcopa", "sw", data_dir=DATA_DIR)[:2] + datasets.load("xnli", "sw", data_dir=DATA_DIR)[:1]
    assert len({len(i.target) for i in instances}) == 3
    frame = xtl.sweep(mistral, instances, sites=["ffn", "attn", "attn-paper"], max_batch_rows=20, progress=False)
    rows = _rows(frame)
    assert len(rows) == 3 * (1 + 3 * 16)
    early_stops = 0
    for item in instances:
        vanilla = xtl.generate(mistral, item.target)
        assert rows[(item.id, None, None, None)][:2] == (list(vanilla.token_ids), vanilla.text)
        for site in ("ffn", "attn", "attn-paper"):
            for i in range(4):
                for j in range(4):
                    expected = xtl.transplant(mistral, item.source, item.target, site=site, source_layer=i, target_layer=j)
                    token_ids, text, correct = rows[(item.id, site, i, j)]
                    assert (token_ids, text) == (list(expected.token_ids), expected.text), (item.id, site, i, j)
                    assert correct == item.is_correct(text)
                    early_stops += len(token_ids) < 20
    assert early_stops > 0  # rows that hit EOS early were part of the batches


def test_memory_per_row_does_not_grow_with_prompt_length(mistral):
    short, long = SimpleNamespace(source="a b", target="c d"), SimpleNamespace(source="a " * 300, target="c " * 300)
    shapes = []
    for item in (short, long):
        prepared = {0: prepare(mistral, item.source, item.target, ["ffn"])}
        rows = [Row(0, None, None, None)] + [Row(0, "ffn", i, j) for i in range(4) for j in range(4)]
        batch = _Batch(Engine(mistral), prepared, rows, max_new_tokens=20)
        shapes.append({tuple(t.shape) for t in batch.own_keys + batch.own_values})
        # the prefix is stored once per instance, whatever the number of rows
        assert prepared[0].prefix_keys[0].shape[1] == len(xtl.model.encode(mistral, item.target)) - 1
    assert shapes[0] == shapes[1] == {(17, 2, 20, 16)}  # (row, kv_head, slot, d_head)


def test_parse_layers():
    assert len(parse_layers("all", 4)) == 16
    assert parse_layers("0,2", 4) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    assert parse_layers("1-3:0", 4) == [(1, 0), (2, 0), (3, 0)]
    assert parse_layers("0:1;3:2", 4) == [(0, 1), (3, 2)]
    assert parse_layers([(3, 1), (0, 0), (3, 1)], 4) == [(0, 0), (3, 1)]
    with pytest.raises(XtlError, match="layer 4 is outside this model: it has 4 layers"):
        parse_layers("0-4", 4)
    with pytest.raises(XtlError, match="'x' is not a layer number"):
        parse_layers("x", 4)


def test_sweep_refuses_bad_arguments_before_writing(mistral, tmp_path):
    items = datasets.load("xnli", "sw", data_dir=DATA_DIR)[:1]
    out = tmp_path / "run"
    for kwargs, message in [
        (dict(sites=["mlp"]), "unknown site 'mlp'"),
        (dict(sites=[]), "no site given"),
        (dict(configs="0:7"), "layer 7 is outside this model"),
        (dict(max_new_tokens=-1), "max_new_tokens must be a positive"),
        (dict(memory_budget="lots"), "memory budget 'lots' is not understood"),
    ]:
        with pytest.raises(XtlError, match=message):
            xtl.sweep(mistral, items, out=str(out), progress=False, **kwargs)
    with pytest.raises(XtlError, match="no instances to sweep"):
        xtl.sweep(mistral, [], out=str(out))
    assert not out.exists()


def test_rerun_with_other_settings_is_refused(mistral, tmp_path):
    items = datasets.load("xnli", "sw", data_dir=DATA_DIR)[:1]
    out = str(tmp_path / "run")
    first = xtl.sweep(mistral, items, sites=["ffn"], configs="0:1", out=out, progress=False)
    parts = sorted(os.listdir(out))
    for kwargs in (dict(sites=["attn"], configs="0:1"), dict(sites=["ffn"], configs="all"), dict(sites=["ffn"], configs="0:1", max_new_tokens=5)):
        with pytest.raises(XtlError, match="holds a run made with other settings"):
            xtl.sweep(mistral, items, out=out, progress=False, **kwargs)
    other_model = xtl.load_model(MODELS_DIR / "tiny-llama")
    with pytest.raises(XtlError, match="model_fingerprint"):
        xtl.sweep(other_model, items, sites=["ffn"], configs="0:1", out=out, progress=False)
    assert sorted(os.listdir(out)) == parts
    # The same settings resume: nothing new to do, nothing duplicated.
    again = xtl.sweep(mistral, items, sites=["ffn"], configs="0:1", out=out, progress=False)
    assert _rows(again) == _rows(first) and len(again) == 2


def test_results_table_schema_and_duckdb(mistral, tmp_path):
    items = datasets.load("xnli", "sw", data_dir=DATA_DIR)[:2]
    out = tmp_path / "run"
    frame = xtl.sweep(mistral, items, sites=["ffn", "attn-paper"], configs="0,3", out=str(out), progress=False)
    assert list(frame.columns) == list(results.COLUMNS)
    assert len(frame) == 2 * (1 + 2 * 4)
    vanilla = frame[frame.site.isna()]
    assert len(vanilla) == 2 and vanilla.source_layer.isna().all() and vanilla.target_layer.isna().all()
    assert str(frame.source_layer.dtype) == "Int64" and str(frame.correct.dtype) == "boolean"
    assert frame.correct.notna().all()  # XNLI has gold answers: every row is scored
    assert set(frame.instance_id) == {"xnli/sample/sw/0", "xnli/sample/sw/1"}
    assert (frame.model == "tiny-mistral").all() and (frame.model_fingerprint == mistral.xtl.fingerprint).all()
    assert results.settings(out)["sites"] == ["attn-paper", "ffn"]
    import duckdb

    [(count,)] = duckdb.sql(f"SELECT count(*) FROM '{out}/*.parquet' WHERE site = 'ffn'").fetchall()
    assert count == 8


def test_progress_bar_on_request(mistral, capsys):
    items = datasets.load("xnli", "sw", data_dir=DATA_DIR)[:1]
    xtl.sweep(mistral, items, configs="0:0", progress=True)
    assert "config" in capsys.readouterr().err
    xtl.sweep(mistral, items, configs="0:0", progress=False)
    assert capsys.readouterr().err == ""


DONE_WHEN = [
    "sweep", "--model", str(MODELS_DIR / "tiny-qwen2"), "--benchmark", "xnli", "--lang", "sw",
    "--split", "sample", "--data-dir", str(DATA_DIR), "--site", "ffn", "--site", "attn-paper",
]


def test_a_killed_sweep_resumes_without_losing_or_duplicating_rows(tmp_path):
    out = tmp_path / "demo"
    command = XTL + DONE_WHEN + ["--out", str(out), "--max-batch-rows", "40"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while len(list(out.glob("part-*.parquet"))) < 3:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = results.load(out)
    assert 0 < len(interrupted) < 50 * 33  # killed part-way, and only whole parts remain

    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    frame = results.load(out)
    assert len(frame) == 50 * (1 + 2 * 16)
    keys = list(zip(frame.instance_id, frame.site.fillna("-"), frame.source_layer.fillna(-1), frame.target_layer.fillna(-1)))
    assert len(set(keys)) == len(keys)  # no row twice
    assert frame.correct.notna().all()  # scored
    assert frame.instance_id.nunique() == 50 and frame[frame.site.isna()].shape[0] == 50
    # rows written before the kill are unchanged by the resumed run
    before = _rows(interrupted)
    after = _rows(frame)
    assert all(after[key] == value for key, value in before.items())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layers", "0:9"], "layer 9 is outside this model: it has 4 layers"),
        (["--site", "mlp"], "unknown site 'mlp': the sites are ffn, attn, attn-paper"),
        (["--lang", "xx"], "xx"),
    ],
)
def test_cli_bad_input_one_sentence_nothing_written(tmp_path, extra, message):
    out = tmp_path / "run"
    base = [a for a in DONE_WHEN if a not in ("--lang", "sw")] if "--lang" in extra else DONE_WHEN
    result = subprocess.run(XTL + base + extra + ["--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_bad_pairs_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    no_target = tmp_path / "no_target.jsonl"
    no_target.write_text(json.dumps({"id": "a", "source": "hello"}) + "\n")
    for pairs, message in [(empty, "empty.jsonl"), (no_target, "no_target.jsonl")]:
        out = tmp_path / f"run-{pairs.stem}"
        result = subprocess.run(
            XTL + ["sweep", "--model", str(MODELS_DIR / "tiny-llama"), "--pairs", str(pairs), "--out", str(out)],
            cwd=REPO, capture_output=True, text=True,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert not out.exists()


def test_pairs_file_sweep_without_gold(tmp_path, mistral):
    pairs = tmp_path / "mine.jsonl"
    pairs.write_text("\n".join(json.dumps(p) for p in [
        {"id": "one", "source": "Hello, how are you?", "target": "Habari, hujambo?"},
        {"id": "two", "source": "Good morning", "target": "Habari za asubuhi", "gold": "1", "scorer": "option", "options": ["1", "2"]},
    ]) + "\n")
    frame = xtl.sweep(mistral, datasets.load_pairs(pairs), configs="1:2", progress=False)
    assert frame[frame.instance_id == "one"].correct.isna().all()
    assert frame[frame.instance_id == "two"].correct.notna().all()
    assert set(frame.benchmark) == {"pairs:mine"}


def test_run_dirs_made_before_the_signal_columns_still_load(mistral, tmp_path):
    import pyarrow.parquet as pq

    items = datasets.load("xnli", "sw", data_dir=DATA_DIR)[:1]
    out = tmp_path / "run"
    frame = xtl.sweep(mistral, items, configs="0:1", out=str(out), progress=False)
    assert frame.first_margin.notna().all() and (frame.first_margin >= 0).all()
    part = next(out.glob("part-*.parquet"))
    old_columns = [c for c in results.COLUMNS if c not in xtl.signals.SIGNALS]
    pq.write_table(pq.read_table(part).select(old_columns).replace_schema_metadata(), part)  # as an older xtl wrote it (no content hash)
    old = results.load(out)
    assert len(old) == 2 and old.mean_logprob.isna().all() and list(old.columns) == list(results.COLUMNS)


def test_options_as_one_object_sweep_the_same_rows(mistral):
    from xtl.options import SweepOptions

    items = datasets.load("xnli", "sw", data_dir=DATA_DIR)[:1]
    one_by_one = xtl.sweep(mistral, items, sites=["attn", "ffn"], configs="1:2", max_new_tokens=3, progress=False)
    options = SweepOptions(sites=("attn", "ffn"), configs="1:2", max_new_tokens=3)
    assert _rows(xtl.sweep(mistral, items, options=options, progress=False)) == _rows(one_by_one)
    assert list(one_by_one.site.iloc[1:]) == ["attn", "ffn"]  # the sites in the order given
    with pytest.raises(XtlError, match=r"either as options=SweepOptions\(...\) or one by one, not both"):
        xtl.sweep(mistral, items, options=options, max_new_tokens=5, progress=False)
    with pytest.raises(XtlError, match="unknown site 'mlp'"):
        SweepOptions(sites=("mlp",))
