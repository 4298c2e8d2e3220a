"""Reading a model's files: safetensors (never pickle) or GGUF (dequantized by
transformers). Where they are (a checkpoint directory, a GGUF file, the embedded
model, a name in the local Hugging Face cache) is `xtl.checkpoints`, without
torch. Never downloads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from xtl.errors import XtlError

if TYPE_CHECKING:  # torch is imported where weights are read
    import torch

# Where the files are is torch-free (xtl.checkpoints, which the command line reads before torch);
# reading them is here.
from xtl.checkpoints import (  # noqa: E402, F401 (re-exported)
    EMBEDDED_GGUF, EMBEDDED_INSTALL, EMBEDDED_MODEL, EMBEDDED_PACKAGE, GGUF_ARCHITECTURES, Checkpoint,
    embedded_model_path, is_embedded_name, resolve_checkpoint, resolve_model,
)  # fmt: skip


def read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        found = sorted(p.name for p in directory.glob("*.bin")) or ["no weight files"]
        raise XtlError(
            f"{str(directory)!r} has no *.safetensors weights (found: {', '.join(found)}): xtl loads safetensors "
            "only, never pickle; convert the checkpoint with transformers' save_pretrained(safe_serialization=True)."
        )
    from safetensors import SafetensorError

    weights: dict[str, "torch.Tensor"] = {}
    for file in files:
        try:
            weights.update(load_file(str(file)))
        except (SafetensorError, OSError) as error:
            raise XtlError(
                f"the weight file {str(file)!r} is not a readable safetensors file ({error}): it may be truncated "
                "or damaged; download or copy it again."
            ) from None
    return weights


def read_gguf_config(checkpoint: Checkpoint) -> dict:
    """The config of a GGUF checkpoint as a config.json-style dict, read by
    transformers from the file's metadata; refuses architectures xtl does not load."""
    from transformers import AutoConfig

    path = str(checkpoint.gguf_path)
    try:
        config = AutoConfig.from_pretrained(
            str(checkpoint.directory), gguf_file=checkpoint.gguf_file, local_files_only=True
        )
    except ValueError as error:
        match = re.search(r"architecture (\S+) is not supported", str(error))
        if match:
            raise XtlError(
                f"{path!r} holds a {match.group(1)!r} model, which transformers cannot read from GGUF: "
                f"xtl loads GGUF files of Llama, Mistral and Qwen2 models."
            ) from None
        raise XtlError(f"{path!r} cannot be read as a GGUF checkpoint ({error}).") from None
    except Exception as error:  # a truncated or foreign file
        raise XtlError(f"{path!r} cannot be read as a GGUF checkpoint ({type(error).__name__}: {error}).") from None
    architecture = GGUF_ARCHITECTURES.get(config.model_type)
    if architecture is None:
        raise XtlError(
            f"{path!r} holds a {config.model_type!r} model: xtl loads GGUF files of Llama, Mistral and Qwen2 models."
        )
    hf_config = config.to_dict()
    hf_config["architectures"] = [architecture]
    return hf_config


def read_gguf_weights(checkpoint: Checkpoint) -> tuple[dict[str, torch.Tensor], tuple[int, ...]]:
    """The weights of a GGUF checkpoint dequantized to float32 by transformers
    (and the gguf package), in Hugging Face names, and the file's EOS ids."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(checkpoint.directory), gguf_file=checkpoint.gguf_file, local_files_only=True, dtype=torch.float32
        )
    except NotImplementedError as error:
        raise XtlError(
            f"{str(checkpoint.gguf_path)!r} uses a quantization the installed gguf/transformers cannot dequantize "
            f"({error}): convert it to another quantization type (Q8_0, Q4_K_M, F16, ...)."
        ) from None
    weights = {name: tensor.detach() for name, tensor in hf_model.state_dict().items()}
    eos = hf_model.generation_config.eos_token_id
    eos_ids = () if eos is None else tuple(int(e) for e in (eos if isinstance(eos, list) else [eos]))
    return weights, eos_ids


def generation_eos_ids(directory: Path, tokenizer) -> tuple[int, ...]:
    generation_config = directory / "generation_config.json"
    eos = None
    if generation_config.is_file():
        eos = json.loads(generation_config.read_text()).get("eos_token_id")
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return ()
    return tuple(int(e) for e in (eos if isinstance(eos, list) else [eos]))
