"""TransformerLens hook names: the site table's points in a given block, and the
keys and values the sweep reads from the target prefix. With `xtl.sites`, the
only place that names hooks."""

from __future__ import annotations

from transformer_lens import HookedTransformer

from xtl import sites
from xtl.checks import check_layer_index
from xtl.errors import XtlError


def check_layer(model: HookedTransformer, layer: int, what: str = "layer") -> int:
    return check_layer_index(layer, model.cfg.n_layers, what)


def check_model_site(model: HookedTransformer, site: str) -> str:
    """A site of the table that this model has: blocks that run attention and
    MLP in parallel (GPT-NeoX, Cohere) have no residual stream between them,
    so a site reading or writing it is refused."""
    row = sites.row(site)
    if model.cfg.parallel_attn_mlp and sites.RESID_MID in (row.read, row.write):
        architecture = model.cfg.original_architecture or "this model"
        raise XtlError(
            f"site {site!r} reads the residual stream between attention and MLP, but {architecture} runs attention "
            "and MLP in parallel from the same input, so there is no residual stream between them: use 'attn' or 'ffn'."
        )
    return site


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
