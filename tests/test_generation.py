"""The reference path: invariants of one transplant, and its errors."""

from __future__ import annotations

import pytest
import torch

import xtl
from xtl.errors import XtlError
from xtl.model import as_tokens, encode, read_hook, write_hook

from conftest import DATA_DIR, MODELS_DIR, prompts_for

SOURCE, TARGET = prompts_for(DATA_DIR, "XNLI_sample", "sw", 0)


@pytest.fixture(scope="module")
def model():
    return xtl.load_model(MODELS_DIR / "tiny-mistral")


def _no_hooks_left(model) -> bool:
    return all(not hp._forward_hooks and not hp._backward_hooks for hp in model.hook_dict.values())


@pytest.mark.parametrize("site", ["ffn", "attn"])
def test_a_prompt_transplanted_into_itself_at_the_same_layer_changes_nothing(model, site):
    vanilla = xtl.generate(model, TARGET)
    for layer in range(model.cfg.n_layers):
        assert xtl.transplant(model, TARGET, TARGET, site=site, source_layer=layer, target_layer=layer) == vanilla


def test_attn_paper_into_itself_does_change_the_answer(model):
    # The public code's aliasing: resid_mid is written over attn_out, so resid_mid
    # becomes resid_pre + resid_mid, not the vanilla value.
    vanilla = xtl.generate(model, TARGET)
    changed = [
        xtl.transplant(model, TARGET, TARGET, site="attn-paper", source_layer=l, target_layer=l) != vanilla
        for l in range(model.cfg.n_layers)
    ]
    assert any(changed)


def test_hooks_are_gone_after_a_call_and_after_an_error(model):
    xtl.transplant(model, SOURCE, TARGET, site="ffn", source_layer=1, target_layer=2)
    assert _no_hooks_left(model)
    with pytest.raises(XtlError):
        xtl.transplant(model, SOURCE, TARGET, site="ffn", source_layer=1, target_layer=9)
    assert _no_hooks_left(model)


def _generate_without_cache(model, site, source_layer, target_layer, every_step: bool) -> list[int]:
    """Greedy decoding recomputing the whole sequence each step (no KV cache).
    The write is at the last prompt position; with every_step it is (wrongly)
    also at the newest position of every decoding step."""
    source_vector = None

    def read(activation, hook):
        nonlocal source_vector
        source_vector = activation[0, -1].clone()

    model.run_with_hooks(as_tokens(model, encode(model, SOURCE)), fwd_hooks=[(read_hook(site, source_layer), read)])
    ids = encode(model, TARGET)
    prompt_last = len(ids) - 1
    new = []
    for _ in range(20):
        def write(activation, hook):
            activation[:, prompt_last] = source_vector
            if every_step:
                activation[:, -1] = source_vector
            return activation

        logits = model.run_with_hooks(as_tokens(model, ids + new), fwd_hooks=[(write_hook(site, target_layer), write)])
        new.append(int(logits[0, -1].argmax()))
        if new[-1] == 1:
            break
    return new


@pytest.mark.parametrize("site", ["ffn", "attn-paper"])
def test_the_write_happens_in_the_prompt_pass_only(model, site):
    differs_from_every_step = False
    for source_layer, target_layer in [(0, 0), (1, 2), (3, 1)]:
        answer = xtl.transplant(model, SOURCE, TARGET, site=site, source_layer=source_layer, target_layer=target_layer)
        prompt_only = _generate_without_cache(model, site, source_layer, target_layer, every_step=False)
        every_step = _generate_without_cache(model, site, source_layer, target_layer, every_step=True)
        assert list(answer.token_ids) == prompt_only
        differs_from_every_step |= prompt_only != every_step
    assert differs_from_every_step  # the check above can tell the two apart


def test_the_source_is_read_at_the_last_prompt_position(model):
    # Changing an early source token changes the vector read at the last position,
    # and so the answer; the vector is the last position's, one d_model vector.
    from xtl.generation import source_activation

    vector = source_activation(model, encode(model, SOURCE), site="ffn", layer=2)
    _, cache = model.run_with_cache(as_tokens(model, encode(model, SOURCE)))
    assert vector.shape == (model.cfg.d_model,)
    assert torch.equal(vector, cache["blocks.2.hook_mlp_out"][0, -1])
    vector = source_activation(model, encode(model, SOURCE), site="attn-paper", layer=1)
    assert torch.equal(vector, cache["blocks.1.hook_resid_mid"][0, -1])


def test_generation_stops_at_eos_and_decodes_without_special_tokens(model):
    # tiny-mistral's vanilla answer to XNLI sw 0 ends at EOS under ffn 0->1 (see the oracle)
    answer = xtl.transplant(model, SOURCE, TARGET, site="ffn", source_layer=0, target_layer=1)
    assert answer.token_ids[-1] == 1 and len(answer.token_ids) < 20
    assert answer.text == model.tokenizer.decode(answer.token_ids[:-1], clean_up_tokenization_spaces=False)
    assert "</s>" not in answer.text
    assert len(xtl.generate(model, TARGET, max_new_tokens=3).token_ids) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(site="mlp", source_layer=0, target_layer=0), "unknown site 'mlp': the sites are ffn, attn, attn-paper"),
        (dict(site="ffn", source_layer=4, target_layer=0), "source_layer 4 is outside this model: it has 4 layers, numbered 0..3"),
        (dict(site="ffn", source_layer=0, target_layer=-1), "target_layer -1 is outside this model"),
        (dict(site="ffn", source_layer=0, target_layer=0, max_new_tokens=0), "max_new_tokens must be a positive whole number, not 0"),
    ],
)
def test_bad_arguments_get_one_sentence(model, kwargs, message):
    with pytest.raises(XtlError, match=message):
        xtl.transplant(model, SOURCE, TARGET, **kwargs)


def test_empty_prompts_are_refused(model):
    with pytest.raises(XtlError, match="the target prompt is empty"):
        xtl.transplant(model, SOURCE, "  ", site="ffn", source_layer=0, target_layer=0)
    with pytest.raises(XtlError, match="the prompt is empty"):
        xtl.generate(model, "")


def test_a_generation_carries_the_signals_declared_once():
    """`Generation`'s signal fields, the results columns and selection's signals are `xtl.signals.SIGNALS`."""
    import dataclasses

    from xtl import results, selection
    from xtl.generation import Generation
    from xtl.signals import SIGNALS

    assert tuple(f.name for f in dataclasses.fields(Generation))[2:] == SIGNALS
    assert results.SIGNALS is SIGNALS is selection.SIGNALS  # imported from their one home
    assert SIGNALS == ("mean_logprob", "min_logprob", "first_logprob", "first_margin", "first_entropy")
