"""The definition of correct: every record of the public code's outputs
(../shared/oracle), reproduced token for token by the reference path and by the
sweep."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import xtl

from conftest import DATA_DIR, MODELS_DIR, ORACLE_DIR, TINY_MODELS, prompts_for

RECORDS = [json.loads(line) for line in (ORACLE_DIR / "tiny_outputs.jsonl").read_text().splitlines()]


def _case_id(record) -> str:
    return f"{record['dataset']}/{record['lang']}/{record['index']}"


def test_the_oracle_is_complete():
    assert len(RECORDS) == 1176
    sites = {r["site"] for r in RECORDS}
    assert sites == {None, "ffn", "attn", "attn-paper"}
    assert sum(len(r["token_ids"]) < 20 for r in RECORDS) > 0  # some rows stop at EOS


@pytest.mark.parametrize("name", TINY_MODELS)
def test_reference_path_reproduces_every_record(name):
    model = xtl.load_model(MODELS_DIR / name, dtype="float32")
    mismatches = []
    for record in (r for r in RECORDS if r["model"] == name):
        source, target = prompts_for(DATA_DIR, record["dataset"], record["lang"], record["index"])
        if record["site"] is None:
            answer = xtl.generate(model, target)
        else:
            answer = xtl.transplant(
                model, source, target, site=record["site"],
                source_layer=record["source_layer"], target_layer=record["target_layer"],
            )
        if list(answer.token_ids) != record["token_ids"] or answer.text != record["text"]:
            mismatches.append((_case_id(record), record["site"], record["source_layer"], record["target_layer"]))
    assert mismatches == []


# Batch sizes: all 8 cases in one batch (prompts of different lengths together),
# and small batches that split an instance's configurations across batches.
@pytest.mark.parametrize("name, dtype, max_batch_rows", [
    ("tiny-llama", "float32", 1000), ("tiny-mistral", "float32", 13), ("tiny-qwen2", "float64", 64),
])
def test_sweep_reproduces_every_record(name, dtype, max_batch_rows):
    records = [r for r in RECORDS if r["model"] == name]
    cases = sorted({(r["dataset"], r["lang"], r["index"]) for r in records})
    instances = [
        SimpleNamespace(id=f"{d}/{l}/{i}", source=prompts_for(DATA_DIR, d, l, i)[0], target=prompts_for(DATA_DIR, d, l, i)[1])
        for d, l, i in cases
    ]
    model = xtl.load_model(MODELS_DIR / name, dtype=dtype)
    frame = xtl.sweep(model, instances, sites=["ffn", "attn", "attn-paper"], max_batch_rows=max_batch_rows, progress=False)
    assert len(frame) == len(records) == 8 * (1 + 3 * 16)
    rows = {
        (row.instance_id, row.site, row.source_layer, row.target_layer): (row.token_ids, row.text)
        for row in frame.astype(object).where(frame.notna(), None).itertuples()
    }
    mismatches = [
        (_case_id(r), r["site"], r["source_layer"], r["target_layer"])
        for r in records
        if rows[(_case_id(r), r["site"], r["source_layer"], r["target_layer"])] != (r["token_ids"], r["text"])
    ]
    assert mismatches == []
