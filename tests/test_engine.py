"""The sweep engine is never silently wrong: every site of the site table,
sliding windows, tied embeddings and llama3 rope scaling equal `transplant()`
row for row; what it does not implement, and hooks the user added, are refused
in one sentence; rows do not depend on how they were batched."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import xtl
from xtl import datasets, sites
from xtl import model as xtl_model
from xtl.engine import Engine, fast_path_refusal
from xtl.errors import XtlError
from xtl.sites import SiteRow
from xtl.sites import names as site_names
from xtl.signals import SIGNALS

from conftest import DATA_DIR, MODELS_DIR

CONFIGS = [(0, 0), (1, 3), (3, 1), (2, 2)]


def _checkpoint(tmp_path, name: str, edit_config, edit_weights=None):
    """A copy of a tiny checkpoint with its config (and weights) edited."""
    source = MODELS_DIR / name
    target = tmp_path / f"{name}-edited"
    target.mkdir()
    for file in source.iterdir():
        if file.name not in ("config.json", "model.safetensors"):
            (target / file.name).symlink_to(file)
    config = json.loads((source / "config.json").read_text())
    edit_config(config)
    (target / "config.json").write_text(json.dumps(config))
    weights = load_file(str(source / "model.safetensors"))
    if edit_weights:
        weights = edit_weights(weights)
    save_file(weights, str(target / "model.safetensors"))
    return target


def _assert_sweep_equals_transplant(model, instances, sites, configs=CONFIGS):
    frame = xtl.sweep(model, instances, sites=sites, configs=configs, max_batch_rows=6, progress=False)
    assert len(frame) == len(instances) * (1 + len(sites) * len(configs))
    for row in frame.astype(object).where(frame.notna(), None).itertuples():
        item = next(i for i in instances if i.id == row.instance_id)
        if row.site is None:
            expected = xtl.generate(model, item.target)
        else:
            expected = xtl.transplant(
                model, item.source, item.target, site=row.site,
                source_layer=row.source_layer, target_layer=row.target_layer,
            )
        key = (row.instance_id, row.site, row.source_layer, row.target_layer)
        assert list(row.token_ids) == list(expected.token_ids), key
        for name in SIGNALS:
            assert math.isclose(getattr(row, name), getattr(expected, name), abs_tol=1e-4), (key, name)
    return frame


def _instances(n=2):
    return datasets.load("xnli", "sw", data_dir=DATA_DIR)[:n]


@pytest.fixture(scope="module")
def llama():
    return xtl.load_model(MODELS_DIR / "tiny-llama")


EXTRA_SITES = [
    # Sites that are not xtl's, added to the table as the README says to: the
    # sweep must follow the table, not the site names it knows.
    SiteRow("resid-pre", read=sites.RESID_PRE, write=sites.RESID_PRE),
    SiteRow("resid-mid", read=sites.RESID_MID, write=sites.RESID_MID),
    SiteRow("resid-post", read=sites.RESID_POST, write=sites.RESID_POST),
    SiteRow("mlp-into-attn", read=sites.MLP_OUT, write=sites.ATTN_OUT),
]


def _add_sites(monkeypatch, rows: list[SiteRow]) -> None:
    """Add rows to the one site table."""
    for row in rows:
        monkeypatch.setitem(sites.TABLE, row.name, row)


def test_every_site_of_the_table_equals_transplant(llama, monkeypatch):
    _add_sites(monkeypatch, EXTRA_SITES)
    sites = list(site_names())
    assert {"ffn", "attn", "attn-paper"} <= set(sites)
    frame = _assert_sweep_equals_transplant(llama, _instances(1), sites)
    # every site changes some row, so a write at the wrong point would show
    vanilla = list(frame[frame.site.isna()].token_ids.iloc[0])
    for site in sites:
        assert any(list(ids) != vanilla for ids in frame[frame.site == site].token_ids), site


def test_a_site_writing_where_the_engine_cannot_is_refused(llama, monkeypatch):
    _add_sites(monkeypatch, [SiteRow("q", read=sites.MLP_OUT, write="attn.hook_q")])
    with pytest.raises(XtlError, match=r"writes at blocks\.0\.attn\.hook_q.*xtl\.transplant"):
        xtl.sweep(llama, _instances(1), sites=["q"], configs="0:0", progress=False)


def test_sliding_window_equals_transplant(tmp_path):
    directory = _checkpoint(tmp_path, "tiny-mistral", lambda c: c.update(sliding_window=8))
    windowed = xtl.load_model(directory)
    assert windowed.cfg.use_local_attn and windowed.cfg.window_size == 8
    instances = _instances(2)
    assert all(len(xtl_model.encode(windowed, i.target)) > 40 for i in instances)  # prompts far longer than the window
    frame = _assert_sweep_equals_transplant(windowed, instances, ["ffn", "attn", "attn-paper"])
    # the window matters: the same checkpoint without it answers otherwise
    full = xtl.load_model(MODELS_DIR / "tiny-mistral")
    assert any(
        list(row.token_ids) != list(xtl.generate(full, next(i for i in instances if i.id == row.instance_id).target).token_ids)
        for row in frame[frame.site.isna()].itertuples()
    )


def test_tied_embeddings_equal_transplant(tmp_path):
    def untie(weights):
        weights = dict(weights)
        del weights["lm_head.weight"]
        return weights

    directory = _checkpoint(tmp_path, "tiny-llama", lambda c: c.update(tie_word_embeddings=True), untie)
    tied = xtl.load_model(directory)
    assert torch.equal(tied.unembed.W_U, tied.embed.W_E.T)
    _assert_sweep_equals_transplant(tied, _instances(1), ["ffn", "attn-paper"])


def test_llama3_rope_scaling_equals_transplant(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    directory = _checkpoint(tmp_path, "tiny-llama", lambda c: c.update(rope_scaling=scaling))
    scaled = xtl.load_model(directory)
    plain = xtl.load_model(MODELS_DIR / "tiny-llama")
    assert not torch.equal(scaled.blocks[0].attn.rotary_cos, plain.blocks[0].attn.rotary_cos)  # HF's llama3 tables
    _assert_sweep_equals_transplant(scaled, _instances(1), ["ffn", "attn"])


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("positional_embedding_type", "shortformer", "'shortformer' positions"),
        ("load_in_4bit", True, "4-bit weights"),
        ("num_experts", 4, "mixture-of-experts"),
        ("use_logn_attn", True, "log-n attention"),
    ],
)
def test_configurations_the_engine_does_not_implement_are_refused(llama, field, value, named, tmp_path):
    original = getattr(llama.cfg, field)
    setattr(llama.cfg, field, value)
    try:
        with pytest.raises(XtlError) as refused:
            xtl.sweep(llama, _instances(1), configs="0:0", out=str(tmp_path / "run"), progress=False)
    finally:
        setattr(llama.cfg, field, original)
    message = str(refused.value)
    assert named in message and "xtl.transplant" in message and message.count(". ") == 0
    assert not (tmp_path / "run").exists()
    assert fast_path_refusal(llama) is None


def test_hooks_the_user_added_are_refused_not_ignored(llama):
    item = _instances(1)[0]
    plain = xtl.transplant(llama, item.source, item.target, site="ffn", source_layer=1, target_layer=2)
    llama.add_hook("blocks.0.hook_resid_post", lambda activation, hook: activation * 0)
    try:
        hooked = xtl.transplant(llama, item.source, item.target, site="ffn", source_layer=1, target_layer=2)
        assert hooked.token_ids != plain.token_ids  # transplant() honours the hook
        with pytest.raises(XtlError, match=r"carries hooks you added \(blocks\.0\.hook_resid_post\).*xtl\.transplant"):
            xtl.sweep(llama, [item], configs="1:2", progress=False)
    finally:
        llama.reset_hooks(including_permanent=True)
    frame = xtl.sweep(llama, [item], configs="1:2", progress=False)
    assert list(frame[frame.site == "ffn"].token_ids.iloc[0]) == list(plain.token_ids)


def test_rows_do_not_depend_on_the_batch_split(llama):
    instances = _instances(2)
    frames = [
        xtl.sweep(llama, instances, sites=["ffn", "attn"], configs="all", max_batch_rows=rows, progress=False)
        for rows in (2, 5, 23, 512)
    ]
    columns = ["instance_id", "site", "source_layer", "target_layer", "token_ids", *SIGNALS]
    tables = [f[columns].astype(object).sort_values(["instance_id", "site", "source_layer", "target_layer"], key=lambda c: c.astype(str)).values.tolist() for f in frames]
    for other in tables[1:]:
        assert other == tables[0]  # bit for bit, signals included


def test_signals_are_those_of_the_logits(llama):
    item = _instances(1)[0]
    answer = xtl.generate(llama, item.target, max_new_tokens=5)
    ids = xtl_model.encode(llama, item.target)
    with torch.inference_mode():
        logits = llama(torch.tensor([ids + list(answer.token_ids)]))[0, len(ids) - 1 :]
    logprobs = logits.float().log_softmax(-1)
    chosen = [float(logprobs[k, t]) for k, t in enumerate(answer.token_ids)]
    assert math.isclose(answer.first_logprob, chosen[0], abs_tol=1e-4)
    assert math.isclose(answer.mean_logprob, sum(chosen) / len(chosen), abs_tol=1e-4)
    assert math.isclose(answer.min_logprob, min(chosen), abs_tol=1e-4)
    top = logits[0].float().topk(2).values
    assert math.isclose(answer.first_margin, float(top[0] - top[1]), abs_tol=1e-4) and answer.first_margin >= 0
    entropy = float(-(logprobs[0].exp() * logprobs[0]).sum())
    assert math.isclose(answer.first_entropy, entropy, abs_tol=1e-4) and 0 < entropy < math.log(llama.cfg.d_vocab)


def test_a_bloom_like_model_with_alibi_equals_transplant(llama):
    # ALiBi positions, LayerNorm (also after the embedding), gelu, biases everywhere
    from transformer_lens import HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=3, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_ctx=512, d_vocab=llama.cfg.d_vocab,
        act_fn="gelu", normalization_type="LN", positional_embedding_type="alibi", post_embedding_ln=True,
        original_architecture="BloomForCausalLM", init_weights=True, seed=0, dtype=torch.float32, device="cpu",
    )
    bloom = xtl_model.new_hooked_transformer(cfg)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in bloom.named_parameters():
            if name.split(".")[-1].lstrip("_").startswith("b"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
            elif name.split(".")[-1] == "w":
                parameter.copy_(1 + torch.randn(parameter.shape, generator=generator) * 0.1)
            else:
                parameter.mul_(4.0)  # sharper attention, so positions matter
    bloom.eval()
    bloom.tokenizer = llama.tokenizer
    assert fast_path_refusal(bloom) is None
    _assert_sweep_equals_transplant(bloom, _instances(1), ["ffn", "attn", "attn-paper"], configs=[(0, 0), (0, 2), (2, 1), (1, 1)])


@pytest.mark.parametrize("threads", [1, 2])
def test_shared_work_changes_no_bit(llama, monkeypatch, threads):
    # Rows with the same tokens so far share their first layers (xtl.sweeping._Batch).
    # Computing every row in full must give the same tokens and signals, bit for bit,
    # for every site of the table (a write into the residual entering a layer shares
    # one layer less), with one thread and with two (whose kernels split rows).
    from xtl import sweeping
    from xtl.sweeping import Row, _Batch, prepare

    _add_sites(monkeypatch, EXTRA_SITES)
    sites = list(site_names())
    instances = _instances(2)
    prepared = {k: prepare(llama, item.source, item.target, sites) for k, item in enumerate(instances)}
    rows = [
        row
        for k in range(len(instances))
        for row in [Row(k, None, None, None)] + [Row(k, s, i, j) for s in sites for i in range(4) for j in range(4)]
    ]
    engine = Engine(llama)
    computed = []
    qkv = engine.qkv
    monkeypatch.setattr(engine, "qkv", lambda layer, x: (computed.append(x.shape[0]), qkv(layer, x))[1])
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        outputs = {}
        for share in (True, False):
            monkeypatch.setattr(sweeping, "SHARE_WORK", share)
            computed.clear()
            outputs[share] = (_Batch(engine, prepared, rows, 12).run(), sum(computed))
    finally:
        torch.set_num_threads(saved)
    (shared, shared_work), (full, full_work) = outputs[True], outputs[False]
    assert shared.token_ids == full.token_ids
    assert shared.signals == full.signals
    assert shared_work < 0.8 * full_work  # the sharing did skip work
    vanilla = {k: full.token_ids[n] for n, k in enumerate(r.instance_index for r in rows) if rows[n].site is None}
    differ = sum(ids[:1] != vanilla[r.instance_index][:1] for r, ids in zip(rows, full.token_ids))
    assert differ > 10  # rows left vanilla's tokens, so groups split during decoding


def test_float32_products_run_on_onednn_and_hold_no_weight_copies(llama):
    # On the CPU in float32 every row-wise product runs on oneDNN, reading the
    # model's own weights (xtl's loader stores them as nn.Linear does): the only
    # tensor the engine adds is the concatenated q/k/v weight of each layer.
    from xtl import engine as xtl_engine

    assert xtl_engine.ONEDNN
    engine = Engine(llama)
    products = [engine.w_u] + [
        p for layer in engine.layers for p in (layer.w_qkv, layer.w_o, layer.w_gate, layer.w_in, layer.w_out) if p is not None
    ]
    assert all(p.onednn for p in products)
    assert all(p.nbytes == 0 for p in products)
    qkv_bytes = sum(layer.w_qkv.weight.numel() * 4 for layer in engine.layers)
    assert engine.nbytes == qkv_bytes
    x = torch.randn(5, llama.cfg.d_model)
    expected = (x.double() @ llama.unembed.W_U.double()).float()
    assert torch.allclose(engine.w_u(x), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_products_through_torch_matmul_equal_transplant(dtype, monkeypatch):
    # The other kernel path (`@`: float64, other devices, or oneDNN turned off)
    # is exact too.
    from xtl import engine as xtl_engine

    monkeypatch.setattr(xtl_engine, "ONEDNN", False)
    model = xtl.load_model(MODELS_DIR / "tiny-llama", dtype=dtype)
    engine = Engine(model)
    assert not any(p.onednn for p in [engine.w_u, engine.layers[0].w_qkv, engine.layers[0].w_in])
    _assert_sweep_equals_transplant(model, _instances(1), ["ffn", "attn"])


def test_logits_computed_in_blocks_change_no_bit(llama, monkeypatch):
    # On the CPU the logits are computed a block of rows at a time (Engine.logit_rows,
    # 6000+ rows for this vocabulary, so one block in the other tests); blocks of 8 or
    # 24 rows must give the same tokens and signals, bit for bit.
    from xtl.sweeping import Row, _Batch, prepare

    instances = _instances(2)
    prepared = {k: prepare(llama, item.source, item.target, ["ffn"]) for k, item in enumerate(instances)}
    rows = [row for k in range(2) for row in [Row(k, None, None, None)] + [Row(k, "ffn", i, j) for i in range(4) for j in range(4)]]
    engine = Engine(llama)
    assert engine.logit_rows >= len(rows)
    outputs = []
    for size in (None, 8, 24):
        engine.logit_rows = size
        outputs.append(_Batch(engine, prepared, rows, 8).run())
    for other in outputs[1:]:
        assert other.token_ids == outputs[0].token_ids
        assert other.signals == outputs[0].signals


@pytest.mark.parametrize("d_in, d_out", [(64, 1024), (512, 1376), (1376, 512)])
def test_a_rows_product_does_not_depend_on_the_other_rows_or_threads(d_in, d_out):
    # What makes rows independent of the batch split (xtl.engine.MIN_ROWS): a row's
    # product has the same bits among 1 (padded to 8), 8, 24 or 200 rows, at any place,
    # with 1, 2 or 4 threads.
    from xtl.engine import _Product

    generator = torch.Generator().manual_seed(0)
    product = _Product(torch.randn(d_out, d_in, generator=generator).T)  # (d_in, d_out), as the weights are stored
    rows = torch.randn(200, d_in, generator=generator)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = torch.cat([product(rows[k : k + 1]) for k in range(200)])
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            for n in (8, 24, 200):
                for start in (0, 200 - n):
                    assert torch.equal(product(rows[start : start + n]), alone[start : start + n]), (threads, n, start)
    finally:
        torch.set_num_threads(saved)
