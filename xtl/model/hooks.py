"""TransformerLens hook names: the site table's points in a given block, and the
keys and values the sweep reads from the target prefix. With `xtl.sites`, the
only place that names hooks."""

from __future__ import annotations

from transformer_lens import HookedTransformer

from xtl import sites
from xtl.checks import check_layer_index


def check_layer(model: HookedTransformer, layer: int, what: str = "layer") -> int:
    return check_layer_index(layer, model.cfg.n_layers, what)


def read_hook(site: str, layer: int) -> str:
    """The hook whose last-position value is taken from the source prompt."""
    return f"blocks.{layer}.{sites.row(site).read}"


def write_hook(site: str, layer: int) -> str:
    """The hook whose last-position value is replaced in the target prompt."""
    return f"blocks.{layer}.{sites.row(site).write}"


def key_value_hooks(model: HookedTransformer, layer: int) -> tuple[str, str]:
    """The hooks of block `layer` holding the keys (rotated, for rotary models)
    and the values its attention reads, (pos, kv_head, d_head) per prompt."""
    key = "hook_rot_k" if model.cfg.positional_embedding_type == "rotary" else "hook_k"
    return f"blocks.{layer}.attn.{key}", f"blocks.{layer}.attn.hook_v"
