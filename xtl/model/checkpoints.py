"""Reading a model's files: safetensors (never pickle) or GGUF (dequantized by
transformers). Where they are (a checkpoint directory, a GGUF file, the embedded
model, a name in the local Hugging Face cache) is `xtl.checkpoints`, without
torch. Never downloads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xtl.errors import XtlError

if TYPE_CHECKING:  # torch is imported where weights are read
    import torch

# Where the files are is torch-free (xtl.checkpoints, which the command line reads before torch);
# reading them is here.
from xtl.checkpoints import GGUF_ARCHITECTURES, GGUF_LOADS, Checkpoint  # noqa: E402
from xtl.model.checkpoint_checks import unreadable_weight_file  # noqa: E402


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files that hold the checkpoint's weights, as transformers
    picks them: those its index (`model.safetensors.index.json`) names, else
    `model.safetensors`, else the only one. Other files beside them (Mistral's
    `consolidated.safetensors` beside its HF shards) are never read."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        found = sorted(p.name for p in directory.glob("*.bin")) or ["no weight files"]
        raise XtlError(
            f"{str(directory)!r} has no *.safetensors weights (found: {', '.join(found)}): xtl loads safetensors "
            "only, never pickle; convert the checkpoint with transformers' save_pretrained(safe_serialization=True)."
        )
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as error:
            raise XtlError(f"{str(index)!r} is not a valid safetensors index ({error}).") from None
        missing = [name for name in names if not (directory / name).is_file()]
        if missing:
            raise XtlError(
                f"{str(directory)!r} lacks {len(missing)} weight file(s) its index names ({', '.join(missing[:3])}): "
                "download or copy them."
            )
        return [directory / name for name in names]
    if (directory / "model.safetensors").is_file():
        return [directory / "model.safetensors"]
    if len(files) == 1:
        return files
    raise XtlError(
        f"{str(directory)!r} holds {len(files)} safetensors files ({', '.join(p.name for p in files[:4])}) and no "
        "model.safetensors.index.json saying which hold the model: add the index, or keep one set of weights."
    )


def read_safetensors(directory: Path, files: list[Path] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint's weight files (`files`, default `weight_files(directory)`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for file in weight_files(directory) if files is None else files:
        try:
            tensors = load_file(str(file))
        except (SafetensorError, OSError) as error:
            raise unreadable_weight_file(file, error) from None
        twice = sorted(weights.keys() & tensors.keys())
        if twice:
            raise XtlError(f"the tensor {twice[0]!r} is in two weight files of {str(directory)!r}: keep one set.")
        weights.update(tensors)
    return weights


def read_gguf_config(checkpoint: Checkpoint, *, trust_remote_code: bool = False) -> dict:
    """The config of a GGUF checkpoint as a config.json-style dict, read by
    transformers from the file's metadata; refuses architectures xtl does not load."""
    from transformers import AutoConfig

    path = str(checkpoint.gguf_path)
    try:
        config = AutoConfig.from_pretrained(
            str(checkpoint.directory), gguf_file=checkpoint.gguf_file, local_files_only=True,
            trust_remote_code=trust_remote_code,  # always given: transformers would otherwise ask on stdin
        )
    except ValueError as error:
        match = re.search(r"architecture (\S+) is not supported", str(error))
        if match:
            raise XtlError(
                f"{path!r} holds a {match.group(1)!r} model, which transformers cannot read from GGUF: {GGUF_LOADS}."
            ) from None
        raise XtlError(f"{path!r} cannot be read as a GGUF checkpoint ({error}).") from None
    except Exception as error:  # a truncated or foreign file
        raise XtlError(f"{path!r} cannot be read as a GGUF checkpoint ({type(error).__name__}: {error}).") from None
    architecture = GGUF_ARCHITECTURES.get(config.model_type)
    if architecture is None:
        raise XtlError(f"{path!r} holds a {config.model_type!r} model: {GGUF_LOADS}.")
    check_gguf_keys(checkpoint, config.to_dict())
    hf_config = config.to_dict()
    hf_config["architectures"] = [architecture]
    return hf_config


# GGUF metadata keys transformers' reader leaves out that change nothing when they
# have these values (None: any value), under the architecture's prefix.
_NEUTRAL_GGUF_KEYS = {
    "rope.scaling.type": ("none",), "rope.scaling.factor": (0.0, 1.0), "rope.scaling.finetuned": None,
    "rope.scaling.original_context_length": None, "tensor_data_layout": None,
}
# GGUF keys transformers' reader leaves out whose meaning is the config key of this name: accepted
# where the file's value is the one transformers' config holds (Gemma 2's class defaults).
_GGUF_KEYS_OF_CONFIG = {"attn_logit_softcapping": "attn_logit_softcapping",
                        "final_logit_softcapping": "final_logit_softcapping"}
# GGUF keys that change nothing in transformers' model of the file: BLOOM (ALiBi) has no position table.
_GGUF_KEYS_WITHOUT_EFFECT = {"bloom": ("context_length",)}
# llama.cpp scales Gemma 2/3 attention by the head size, except in the 27B models (known by their
# layer count), where it takes hidden size / heads; transformers' reader keeps query_pre_attn_scalar's default.
_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}


def check_gguf_keys(checkpoint: Checkpoint, hf_config: dict) -> None:
    """Refuse a GGUF whose metadata sets something transformers' reader does not
    translate (rope scaling, a key length other than the head size, ...), or
    that llama.cpp computes otherwise than the model transformers reads, naming it."""
    from gguf import GGUFReader
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    fields = GGUFReader(str(checkpoint.gguf_path)).fields
    arch = fields["general.architecture"].contents()
    prefix = f"{arch}."
    translated = {key for key, name in GGUF_CONFIG_MAPPING.get(arch, {}).items() if name is not None}
    heads = hf_config.get("num_attention_heads") or hf_config["n_head"]  # BLOOM's config says n_head
    head_size = hf_config.get("head_dim") or hf_config["hidden_size"] // heads
    rope = hf_config.get("rope_parameters") or {}
    rotary = rope.get("partial_rotary_factor") or hf_config.get("partial_rotary_factor")
    understood = {"attention.key_length": head_size, "attention.value_length": head_size,
                  "rope.dimension_count": int(head_size * (rotary or 1.0))}
    understood |= {key: hf_config.get(name) for key, name in _GGUF_KEYS_OF_CONFIG.items()}
    if arch == "bloom":  # what BLOOM's config cannot set otherwise: all heads, an MLP 4x wide
        understood |= {"attention.head_count_kv": heads, "feed_forward_length": 4 * hf_config["hidden_size"]}
    for key, field in fields.items():
        name = key[len(prefix):]
        if not key.startswith(prefix) or name in translated:
            continue
        value = field.contents()
        if name in understood and value == understood[name] or name in _GGUF_KEYS_WITHOUT_EFFECT.get(arch, ()):
            continue
        if name in _NEUTRAL_GGUF_KEYS and (_NEUTRAL_GGUF_KEYS[name] is None or value in _NEUTRAL_GGUF_KEYS[name]):
            continue
        raise XtlError(
            f"{str(checkpoint.gguf_path)!r} sets {key} = {value!r}, which transformers' GGUF reader does not "
            "translate and xtl does not implement: this file is not supported."
        )
    if arch in _GEMMA_27B_LAYERS:
        _check_gemma_attention_scale(checkpoint, arch, hf_config, heads, head_size)


def _check_gemma_attention_scale(checkpoint: Checkpoint, arch: str, hf_config: dict, heads: int, head_size: int):
    big = hf_config["num_hidden_layers"] == _GEMMA_27B_LAYERS[arch]
    scale = hf_config["hidden_size"] // heads if big else head_size
    if scale != hf_config["query_pre_attn_scalar"]:
        raise XtlError(
            f"{str(checkpoint.gguf_path)!r} is a {arch} model whose attention llama.cpp scales by 1/sqrt({scale}) "
            f"where transformers' GGUF reader takes 1/sqrt({hf_config['query_pre_attn_scalar']}): this file is not "
            "supported."
        )


def read_gguf_weights(checkpoint: Checkpoint, *, trust_remote_code: bool = False) -> tuple[dict[str, torch.Tensor], Any]:
    """The weights of a GGUF checkpoint dequantized to float32 by transformers
    (and the gguf package), in Hugging Face names, and the file's `eos_token_id`
    as transformers reads it (None, an id or a list; `checked_eos_ids` checks it)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(checkpoint.directory), gguf_file=checkpoint.gguf_file, local_files_only=True, dtype=torch.float32,
            trust_remote_code=trust_remote_code,
        )
    except NotImplementedError as error:
        raise XtlError(
            f"{str(checkpoint.gguf_path)!r} uses a quantization the installed gguf/transformers cannot dequantize "
            f"({error}): convert it to another quantization type (Q8_0, Q4_K_M, F16, ...)."
        ) from None
    except RuntimeError as error:
        if "mismatched_sizes" not in str(error):
            raise
        raise XtlError(  # tensors of other shapes than the config transformers read from the metadata
            f"the tensors of {str(checkpoint.gguf_path)!r} do not have the shapes transformers' GGUF reader makes of "
            "its metadata (it reads a head size or a width otherwise than the file's tensors have it): this file "
            "is not supported."
        ) from None
    weights = {name: tensor.detach() for name, tensor in hf_model.state_dict().items()}
    weights.update(_gguf_tensors_transformers_drops(checkpoint, hf_model))
    return weights, hf_model.generation_config.eos_token_id


def _gguf_tensors_transformers_drops(checkpoint: Checkpoint, hf_model) -> dict[str, torch.Tensor]:
    """The GGUF's tensors that transformers' reader does not convert, under
    their GGUF names: llama.cpp's `rope_freqs.weight` (the rotary frequency
    divisors of Llama 3.x files), which xtl applies, and anything else, which
    the loader then refuses as unread."""
    import torch
    from gguf import GGUFReader, dequantize
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    reader = GGUFReader(str(checkpoint.gguf_path))
    model_type = hf_model.config.model_type
    processor = TENSOR_PROCESSORS.get(model_type, TensorProcessor)(config=hf_model.config.to_dict())
    mapped = get_gguf_hf_weights_map(hf_model, processor)
    dropped = {}
    for tensor in reader.tensors:
        if tensor.name == "output.weight" and hf_model.config.tie_word_embeddings:  # BLOOM: llama.cpp writes a copy
            values = torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).copy())
            if not torch.equal(values.reshape(-1), hf_model.get_input_embeddings().weight.detach().reshape(-1)):
                raise XtlError(
                    f"{str(checkpoint.gguf_path)!r} holds an output.weight other than its token embedding, which "
                    "transformers' GGUF reader uses in its place: this file is not supported."
                )
        elif tensor.name not in mapped:
            values = dequantize(tensor.data, tensor.tensor_type)
            dropped[tensor.name] = torch.from_numpy(values.copy()).reshape(-1 if values.ndim == 1 else values.shape)
    return dropped

