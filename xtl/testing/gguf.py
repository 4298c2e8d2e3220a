"""Writing test GGUF files as llama.cpp's converter does: the parts shared by
every architecture's writer in the tests (the tokenizer, the tensors and the file)."""

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


def write_file(writer, tensors: dict) -> None:
    """Add `tensors` (GGUF name -> torch tensor) as float32, then write and close the file."""
    import numpy as np
    import torch

    for name, tensor in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(tensor.to(torch.float32).numpy()))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
