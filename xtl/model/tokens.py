"""Prompts to token ids and back, exactly as the checkpoint's tokenizer makes them,
and the context-length check."""

from __future__ import annotations

import torch
from jaxtyping import Int
from transformer_lens import HookedTransformer

from xtl.checks import check_prompt, check_prompt_format
from xtl.errors import XtlError


def chat_text(model: HookedTransformer, text: str) -> str:
    """`text` as one user turn of the checkpoint's own chat template, with the
    generation prompt (the opening of the assistant's turn) added."""
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        name = model.xtl.name if getattr(model, "xtl", None) else "this model"
        raise XtlError(f"{name} has no chat template, so prompt format 'chat' cannot be used: use 'raw'.")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def encode(model: HookedTransformer, text: str, what: str = "prompt", prompt_format: str = "raw") -> list[int]:
    """Token ids exactly as the checkpoint's tokenizer makes them.

    `raw`: the prompt as it is, with the tokenizer's default special tokens (a
    BOS for Llama/Mistral tokenizers, none for Qwen2). `chat`: the prompt as one
    user turn of the checkpoint's chat template with the generation prompt
    added; the template writes its own special tokens, so none are added again.
    Never TransformerLens' own string handling, which would prepend a BOS of its own."""
    check_prompt(text, what)
    if check_prompt_format(prompt_format) == "chat":
        ids = list(model.tokenizer(chat_text(model, text), add_special_tokens=False).input_ids)
    else:
        ids = list(model.tokenizer(text).input_ids)
    if len(ids) > model.cfg.n_ctx:
        raise XtlError(
            f"the {what} is {len(ids)} tokens long, more than the context of {model.cfg.n_ctx} tokens "
            f"this model was loaded with: {_larger_context_hint(model, len(ids))}."
        )
    return ids


def check_context(model: HookedTransformer, prompt_tokens: int, max_new_tokens: int, what: str = "prompt") -> None:
    """Refuse a prompt whose tokens plus `max_new_tokens` do not fit the loaded context."""
    if prompt_tokens + max_new_tokens > model.cfg.n_ctx:
        raise XtlError(
            f"the {what} ({prompt_tokens} tokens) plus {max_new_tokens} new tokens exceeds the context of "
            f"{model.cfg.n_ctx} tokens this model was loaded with: give fewer new tokens or a shorter prompt, "
            f"or {_larger_context_hint(model, prompt_tokens + max_new_tokens)}."
        )


def _larger_context_hint(model: HookedTransformer, needed: int) -> str:
    trained = getattr(getattr(model, "xtl", None), "max_positions", None)
    if trained is not None and needed > trained:
        return f"the checkpoint itself is made for at most {trained} positions, so shorten the prompt"
    limit = f" (the checkpoint allows up to {trained})" if trained is not None else ""
    return f"load the model with a larger context, load_model(..., n_ctx={needed}) or --n-ctx {needed}{limit}"


def decode(model: HookedTransformer, token_ids: list[int]) -> str:
    """Answer text: special tokens skipped, no clean-up of tokenization spaces."""
    return model.tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def eos_token_ids(model: HookedTransformer) -> tuple[int, ...]:
    info = getattr(model, "xtl", None)
    if info is not None:
        return info.eos_token_ids
    eos = model.tokenizer.eos_token_id if model.tokenizer is not None else None
    return () if eos is None else (int(eos),)


def as_tokens(model: HookedTransformer, ids: list[int]) -> Int[torch.Tensor, "1 pos"]:
    return torch.tensor([ids], dtype=torch.long, device=model.cfg.device)
