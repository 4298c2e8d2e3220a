"""Writing test GGUF files as llama.cpp's converter does: the tokenizer part,
shared by every architecture's writer in the tests."""

from __future__ import annotations

import json
from pathlib import Path


def add_tokenizer(writer, checkpoint: Path, *, eos_id: int, pad_id: int | None = None) -> None:
    """The checkpoint's byte-level BPE tokenizer (`tokenizer.json`) as GGUF metadata:
    vocabulary in id order, merges, BOS 0, the given EOS (and pad), no BOS added."""
    tokenizer = json.loads((Path(checkpoint) / "tokenizer.json").read_text())
    vocab = sorted(tokenizer["model"]["vocab"].items(), key=lambda item: item[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([1] * len(vocab))
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(eos_id)
    if pad_id is not None:
        writer.add_pad_token_id(pad_id)
    writer.add_add_bos_token(False)
