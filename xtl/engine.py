"""The sweep's arithmetic: one position per row, TransformerLens weights read directly.

`xtl.sweep` plans batches and keeps records; this module computes. A row is one
generation (vanilla or one configuration). At every step each row adds one
position: its query attends over the instance's shared prompt prefix (keys and
values computed once, `(kv_head, prefix_pos, d_head)`) and over its own keys and
values (`(row, kv_head, slot, d_head)`), which is all a row ever stores.

What the engine implements is what TransformerLens' HookedTransformer computes
for the decoders xtl loads (`xtl.model.families`): LayerNorm or RMSNorm,
grouped-query attention with optional q/k/v biases, QK-norm (per head, or over
all heads as OLMo 2), attention and logit soft-capping, sliding-window (local)
layers alternating with global ones, norms before and after each sublayer
(Gemma 2/3) or after only (OLMo 2), attention and MLP in parallel (GPT-NeoX,
Cohere), partial rotary, gated or plain MLPs (with HF's gate bias for
`mlp_bias`), tied or untied unembedding.
Anything else is refused by `fast_path_refusal` in one sentence naming
`xtl.transplant`, which runs the model's own forward pass. Positions are
pluggable: rotary rotates queries and keys (`Engine.rotate`), ALiBi (BLOOM)
adds a per-head bias slope * (key_pos - query_pos) to the scores
(`Engine.attend`); a LayerNorm after the embedding is TransformerLens' own
`embed` module.

Rows do not depend on how they were batched: every matrix product over the
row dimension runs over a multiple of `MIN_ROWS` rows (zero rows added),
because the CPU BLAS kernels used for 1 to 4 rows sum in another order than
those for more, and a product split across threads hands each thread a
share of the rows: with a multiple of 8 rows, every share is whole 8-row
blocks, and a row's result does not depend on the others or on its place.
The MLP activation and the logits (from which the signals are computed) keep
the padding rows for the same reason: elementwise kernels compute the end of
each thread's share in scalar code, whose exp() rounds differently. (Products
alone: checked with 1, 2, 4 and 8 threads; whole sweeps with 1 and 2 threads
in benchmarks/batch_invariance.py.)

On the CPU in float32 the row-wise products run on oneDNN, which PyTorch
bundles (`torch.ops.mkldnn._linear_pointwise`, the kernel `torch.compile`
uses for CPU linear layers), instead of the BLAS behind `@`: it is faster
(measured in benchmarks/results/2026-11-27-cpu-sweep-speed.md), and it sums
each row in an order that depends neither on the other rows (from 2 rows on)
nor on the thread count (tests/test_engine.py checks it wherever it runs). It is IEEE float32 like the BLAS, in another summation order (results
differ in the last bits, as two BLAS kernels' do); `ONEDNN = False` sends
every product to `@`. Other dtypes and devices use `@`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch.overrides import TorchFunctionMode
from transformer_lens import HookedTransformer
from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES
from transformer_lens.utilities.activation_functions import apply_softcap

from xtl.errors import XtlError

MIN_ROWS = 8  # matrix products over rows run over a multiple of this many rows (see above)
# Row-wise float32 products on the CPU through oneDNN (see above); False: through `@`.
ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


# The MLP modules the engine computes: TransformerLens' own, and xtl's gated MLP with biases (mlp_bias).
_KNOWN_MLPS = ("MLP", "GatedMLP", "BiasedGatedMLP")


def _unsupported(model: HookedTransformer) -> str | None:
    """What in this model the hand-written path does not implement, or None."""
    cfg = model.cfg
    checks = [
        (
            cfg.positional_embedding_type not in ("rotary", "alibi"),
            f"{cfg.positional_embedding_type!r} positions (only rotary and ALiBi)",
        ),
        (cfg.clip_qkv is not None, "clipped q/k/v"),
        (cfg.use_logn_attn, "log-n attention scaling"),
        (cfg.use_dynamic_ntk_rope, "dynamic NTK rotary scaling"),
        (cfg.attn_only, "an attention-only model"),
        (
            cfg.original_architecture in POST_NORM_ARCHITECTURES and cfg.original_architecture != "Olmo2ForCausalLM",
            f"{cfg.original_architecture}'s post-norm blocks",
        ),
        (cfg.load_in_4bit, "4-bit weights"),
        (bool(cfg.num_experts), "mixture-of-experts MLPs"),
        (
            not cfg.num_experts and not all(type(b.mlp).__name__ in _KNOWN_MLPS for b in model.blocks),
            f"the MLP {type(model.blocks[0].mlp).__name__}",
        ),
        (cfg.scale_attn_by_inverse_layer_idx, "attention scaled by layer index"),
        (cfg.use_attention_sinks, "attention sinks"),
        (cfg.attention_dir != "causal", "non-causal attention"),
        (cfg.use_split_qkv_input or cfg.use_attn_in, "split q/k/v inputs"),
        (cfg.use_attn_result, "per-head attention results (use_attn_result)"),
        (cfg.ungroup_grouped_query_attention, "ungrouped grouped-query attention"),
        (cfg.is_layer_norm_activation(), f"the {cfg.act_fn} activation with a LayerNorm"),
        (cfg.normalization_type not in ("RMS", "RMSPre", "LN", "LNPre", None), f"{cfg.normalization_type} normalization"),
        (cfg.d_vocab_out != cfg.d_vocab, "an output vocabulary unlike the input one"),
    ]
    found = [what for bad, what in checks if bad]
    return ", ".join(found) if found else None


def fast_path_refusal(model: HookedTransformer) -> str | None:
    """The one sentence `xtl.sweep` answers with when it cannot compute exactly
    what `xtl.transplant` computes for this model, or None when it can."""
    unsupported = _unsupported(model)
    if unsupported:
        return (
            f"xtl.sweep's batched engine does not implement {unsupported} of this model "
            "and will not guess: run these configurations with xtl.transplant, which uses the model's own forward pass."
        )
    hooked = sorted(
        name
        for name, module in model.named_modules()
        if module._forward_hooks or module._forward_pre_hooks or getattr(module, "_backward_hooks", None)
    )
    if hooked:
        return (
            f"the model carries hooks you added ({', '.join(hooked[:3])}{', ...' if len(hooked) > 3 else ''}), "
            "which xtl.sweep's batched engine would not run: remove them (model.reset_hooks()) "
            "or use xtl.transplant, which applies them."
        )
    return None


def onednn_for(dtype: torch.dtype, device) -> bool:
    """Whether products in `dtype` on `device` run on oneDNN (see above)."""
    return ONEDNN and dtype == torch.float32 and torch.device(device).type == "cpu"


def onednn_product(
    x: Float[torch.Tensor, "*row d_in"], weight: Float[torch.Tensor, "d_out d_in"], bias: torch.Tensor | None = None
) -> Float[torch.Tensor, "*row d_out"]:
    """`F.linear(x, weight, bias)` on oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _LinearOnOneDNN(TorchFunctionMode):
    """Within it, `F.linear` runs on oneDNN where `onednn_for` says so; other
    functions run as they are."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and onednn_for(args[0].dtype, args[0].device) and args[1].dim() == 2:
            return onednn_product(args[0], args[1], args[2] if len(args) > 2 else kwargs.get("bias"))
        return func(*args, **kwargs)


def onednn_linear(model: HookedTransformer) -> contextlib.AbstractContextManager:
    """A context in which the model's own forward pass (TransformerLens' linear
    layers, all `F.linear`) runs its products on oneDNN, as the engine does:
    the sweep's per-instance source and prefix passes use it."""
    return _LinearOnOneDNN() if onednn_for(model.cfg.dtype, model.cfg.device) else contextlib.nullcontext()


def _padded_rows(n: int) -> int:
    """The row count a product over `n` rows is computed with: a multiple of MIN_ROWS."""
    return -(-max(n, 1) // MIN_ROWS) * MIN_ROWS


def _pad_rows(x: Float[torch.Tensor, "row *rest"]) -> Float[torch.Tensor, "padded_row *rest"]:
    """x with zero rows added up to a multiple of MIN_ROWS."""
    n = x.shape[0]
    rows = _padded_rows(n)
    if rows == n:
        return x
    padded = torch.zeros((rows,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:n] = x
    return padded


class _Product:
    """`x @ weight` for rows x, over a multiple of MIN_ROWS rows (zero rows
    added), so a row's result does not depend on how many rows came with it.
    The weight is kept in the layout its kernel reads: (d_out, d_in) for
    oneDNN (a view where the model stores it so, as xtl's loader does; else a
    copy, counted in `nbytes`), (d_in, d_out) for `@`."""

    def __init__(self, weight: Float[torch.Tensor, "d_in d_out"]):
        self.onednn = onednn_for(weight.dtype, weight.device)
        self.nbytes = 0
        if self.onednn:
            out_in = weight.T
            if not out_in.is_contiguous():
                out_in = out_in.contiguous()
                self.nbytes = out_in.numel() * out_in.element_size()
            weight = out_in
        self.weight = weight

    def padded(self, x: Float[torch.Tensor, "row d_in"]) -> Float[torch.Tensor, "padded_row d_out"]:
        """The product of x and of its padding rows."""
        x = _pad_rows(x).contiguous()
        return onednn_product(x, self.weight) if self.onednn else x @ self.weight

    def __call__(self, x: Float[torch.Tensor, "row d_in"]) -> Float[torch.Tensor, "row d_out"]:
        return self.padded(x)[: x.shape[0]]


def _bias(bias: torch.Tensor | None) -> torch.Tensor | None:
    """The bias, or None when it is all zeros (adding zeros changes no value)."""
    return None if bias is None or not bool(bias.any()) else bias


def _add(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x if bias is None else x + bias


def _rows_bmm(a: Float[torch.Tensor, "batch m k"], b: Float[torch.Tensor, "batch k n"]) -> Float[torch.Tensor, "batch m n"]:
    """a @ b per batch entry over a multiple of MIN_ROWS rows in `m` (see _Product)."""
    m = a.shape[1]
    rows = _padded_rows(m)
    if rows == m:
        return a @ b
    padded = torch.zeros(a.shape[0], rows, a.shape[2], dtype=a.dtype, device=a.device)
    padded[:, :m] = a
    return (padded @ b)[:, :m]


@dataclass
class _Layer:
    """One block's weights in the layouts the row-wise products want."""

    w_qkv: _Product  # d_model -> [W_Q | W_K | W_V], heads flattened; built once per sweep
    b_qkv: Float[torch.Tensor, "qkv"] | None  # None: all zeros
    w_o: _Product  # head_d_head -> d_model, W_O
    b_o: Float[torch.Tensor, "d_model"] | None
    w_gate: _Product | None  # d_model -> d_mlp (None: not a gated MLP)
    w_in: _Product  # d_model -> d_mlp
    w_out: _Product  # d_mlp -> d_model
    b_in: Float[torch.Tensor, "d_mlp"] | None
    b_out: Float[torch.Tensor, "d_model"] | None
    b_gate: Float[torch.Tensor, "d_mlp"] | None  # HF's gate bias (mlp_bias): b_in then comes before the product
    window: int | None  # local attention: a query sees the last `window` positions
    scale: float
    rotary_cos: Float[torch.Tensor, "n_ctx rotary_dim"] | None  # None: not rotary
    rotary_sin: Float[torch.Tensor, "n_ctx rotary_dim"] | None


def _logit_rows(cfg) -> int | None:
    """Rows whose logits are computed at once (None: all rows). On the CPU, as many as
    fit in 24 MiB (192 rows at a 32k vocabulary in float32): a block stays in the
    cache for the log-softmax passes that follow, and its memory is reused from step
    to step, where the logits of every row (over glibc's 32 MiB mmap threshold) would
    be a fresh mapping whose pages fault in at every step (measured in
    benchmarks/results/2026-11-27-cpu-sweep-speed.md)."""
    if torch.device(cfg.device).type != "cpu":
        return None
    element = torch.empty((), dtype=cfg.dtype).element_size()
    return max(MIN_ROWS, (24 << 20) // (cfg.d_vocab * element) // MIN_ROWS * MIN_ROWS)


class Engine:
    """The TransformerLens-aware pieces for one model, built once per sweep."""

    def __init__(self, model: HookedTransformer):
        refusal = fast_path_refusal(model)
        if refusal:
            raise XtlError(refusal)
        self.model, self.cfg = model, model.cfg
        cfg = model.cfg
        self.n_kv = cfg.n_key_value_heads or cfg.n_heads
        self.group = cfg.n_heads // self.n_kv
        self.rotary = cfg.positional_embedding_type == "rotary"
        self.parallel = cfg.parallel_attn_mlp  # the MLP reads the residual entering the block, as attention does
        self.post_norm = cfg.original_architecture in POST_NORM_ARCHITECTURES  # OLMo 2: norms after sublayers only
        self.full_width_qk_norm = self.post_norm  # OLMo 2 normalizes all heads' queries (keys) at once
        # ALiBi: TransformerLens' per-head slopes, (kv_head, 1, group, 1) to match the scores
        self.alibi_slopes = (
            type(model.blocks[0].attn).create_alibi_multipliers(cfg.n_heads, cfg.device).view(self.n_kv, 1, self.group, 1)
            if cfg.positional_embedding_type == "alibi"
            else None
        )
        self.alibi_tables = [self._alibi_table(block) for block in model.blocks]
        self.nbytes = 0  # what the engine holds beyond the model's own weights (`_layer` counts its copies)
        self.layers: list[_Layer] = [self._layer(block) for block in model.blocks]
        self.w_u = _Product(model.unembed.W_U)
        self.nbytes += self.w_u.nbytes
        self.b_u = _bias(model.unembed.b_U)
        self.logit_rows = _logit_rows(cfg)

    def _alibi_table(self, block) -> torch.Tensor | None:
        """ALiBi as a table (kv_head, 1, group, key_pos), where the model holds one that does
        not depend on the query (xtl's BLOOM loader installs Hugging Face's own bias, slope * key_pos):
        the scores then get exactly the values TransformerLens' forward pass adds."""
        alibi = getattr(block.attn, "alibi", None)
        if isinstance(alibi, torch.Tensor) and alibi.shape[1] == 1:
            return alibi[:, 0, :].reshape(self.n_kv, 1, self.group, -1)
        return None

    def _layer(self, block) -> "_Layer":
        """One block's weights as the engine multiplies them."""
        cfg, attn, mlp = self.cfg, block.attn, block.mlp
        if self.rotary and attn.rotary_cos.shape[0] < cfg.n_ctx:
            attn._extend_rotary_embeddings(cfg.n_ctx)
        grouped = self.n_kv != cfg.n_heads  # grouped-query attention: the keys' and values' own heads
        w_k, w_v = (attn._W_K, attn._W_V) if grouped else (attn.W_K, attn.W_V)
        b_k, b_v = (attn._b_K, attn._b_V) if grouped else (attn.b_K, attn.b_V)
        # (head, d_model, d_head) -> (head * d_head, d_model), seen as (d_model, head * d_head)
        w_qkv = torch.cat([w.permute(0, 2, 1).reshape(-1, cfg.d_model) for w in (attn.W_Q, w_k, w_v)]).T
        b_qkv = torch.cat([b.reshape(-1) for b in (attn.b_Q, b_k, b_v)])
        products = dict(
            w_qkv=_Product(w_qkv),
            w_o=_Product(attn.W_O.reshape(cfg.n_heads * cfg.d_head, cfg.d_model)),
            w_gate=_Product(mlp.W_gate) if cfg.gated_mlp else None,
            w_in=_Product(mlp.W_in),
            w_out=_Product(mlp.W_out),
        )
        self.nbytes += w_qkv.numel() * w_qkv.element_size() + sum(p.nbytes for p in products.values() if p is not None)
        return _Layer(
            **products,
            b_qkv=_bias(b_qkv),
            b_o=_bias(attn.b_O),
            b_in=_bias(mlp.b_in),
            b_out=_bias(mlp.b_out),
            b_gate=getattr(mlp, "b_gate", None),
            window=cfg.window_size if attn.attn_type == "local" else None,
            scale=attn.attn_scale,
            rotary_cos=attn.rotary_cos if self.rotary else None,
            rotary_sin=attn.rotary_sin if self.rotary else None,
        )

    # --- one position per row ----------------------------------------------------------

    def embed(self, tokens: Int[torch.Tensor, "row"]) -> Float[torch.Tensor, "row d_model"]:
        return self.model.embed(tokens[:, None])[:, 0]

    def qkv(
        self, layer: int, resid_pre: Float[torch.Tensor, "row d_model"]
    ) -> tuple[
        Float[torch.Tensor, "row kv_head group d_head"],
        Float[torch.Tensor, "row kv_head d_head"],
        Float[torch.Tensor, "row kv_head d_head"],
    ]:
        """Queries, keys and values of each row's position (not yet rotated)."""
        cfg, weights, attn = self.cfg, self.layers[layer], self.model.blocks[layer].attn
        normalized = resid_pre if self.post_norm else self.model.blocks[layer].ln1(resid_pre[:, None])[:, 0]
        qkv = _add(weights.w_qkv(normalized), weights.b_qkv)
        n, q_size, kv_size = qkv.shape[0], cfg.n_heads * cfg.d_head, self.n_kv * cfg.d_head
        q, k = qkv[:, :q_size], qkv[:, q_size : q_size + kv_size]
        if attn.q_norm is not None and self.full_width_qk_norm:
            q, k = attn.q_norm(q[:, None])[:, 0], attn.k_norm(k[:, None])[:, 0]
        elif attn.q_norm is not None:  # per head, as TransformerLens' _apply_qk_norm
            q = attn.q_norm(q.reshape(-1, cfg.d_head)).reshape(n, q_size)
            k = attn.k_norm(k.reshape(-1, cfg.d_head)).reshape(n, kv_size)
        q = q.reshape(n, self.n_kv, self.group, cfg.d_head)
        k = k.reshape(n, self.n_kv, cfg.d_head)
        v = qkv[:, q_size + kv_size :].view(n, self.n_kv, cfg.d_head)
        return q, k, v

    def rotate(
        self, layer: int, x: Float[torch.Tensor, "row *head d_head"], positions: Int[torch.Tensor, "row"]
    ) -> Float[torch.Tensor, "row *head d_head"]:
        """TransformerLens' rotary embedding, each row at its own position
        (unchanged for positions that are not rotary)."""
        if not self.rotary:
            return x
        weights, rotary_dim = self.layers[layer], self.cfg.rotary_dim
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (rotary_dim,)
        cos = weights.rotary_cos[positions].view(shape)
        sin = weights.rotary_sin[positions].view(shape)
        x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
        rotated = x_rot * cos + self.model.blocks[layer].attn.rotate_every_two(x_rot) * sin
        return torch.cat([rotated, x_pass], dim=-1) if x_pass.shape[-1] else rotated

    def attend(
        self,
        layer: int,
        q: Float[torch.Tensor, "row kv_head group d_head"],
        prefix_keys: Float[torch.Tensor, "kv_head prefix_pos d_head"],
        prefix_values: Float[torch.Tensor, "kv_head prefix_pos d_head"],
        own_keys: Float[torch.Tensor, "row kv_head slot d_head"],
        own_values: Float[torch.Tensor, "row kv_head slot d_head"],
        position: int,
    ) -> Float[torch.Tensor, "row head_d_head"]:
        """Attention of rows of one instance, all at `position`, over the shared
        prefix (positions 0..) and their own keys/values (slots 0..slot, the last
        one the current position). A local layer sees only the last `window`
        positions; ALiBi adds slope * (key_pos - position) to the scores."""
        weights, d_head = self.layers[layer], self.cfg.d_head
        window = weights.window
        first_key = 0
        if window is not None:
            n_prefix, n_own = prefix_keys.shape[1], own_keys.shape[2]
            keep_own = min(n_own, window)
            keep_prefix = max(0, min(n_prefix, window - keep_own))
            prefix_keys, prefix_values = prefix_keys[:, n_prefix - keep_prefix :], prefix_values[:, n_prefix - keep_prefix :]
            first_key = n_prefix - keep_prefix
            own_keys, own_values = own_keys[:, :, n_own - keep_own :], own_values[:, :, n_own - keep_own :]
        n, n_kv, group = q.shape[0], q.shape[1], q.shape[2]
        n_prefix = prefix_keys.shape[1]
        # The shared prefix: every row's queries against it in one product per kv head.
        q_by_head = q.permute(1, 0, 2, 3).reshape(n_kv, n * group, d_head)
        prefix_scores = _rows_bmm(q_by_head, prefix_keys.transpose(1, 2)).view(n_kv, n, group, n_prefix)
        own_scores = (q @ own_keys.transpose(2, 3)).permute(1, 0, 2, 3)  # (kv_head, row, group, slot)
        scores = apply_softcap(torch.cat([prefix_scores, own_scores], dim=-1) / weights.scale, self.cfg.attn_scores_soft_cap)
        if self.alibi_slopes is not None:
            # keys: the kept prefix positions, then the own slots up to `position`
            n_keys = scores.shape[-1]
            key_positions = torch.cat([
                torch.arange(first_key, first_key + n_prefix, device=scores.device),
                torch.arange(position - (n_keys - n_prefix) + 1, position + 1, device=scores.device),
            ])
            table = self.alibi_tables[layer]
            if table is not None:
                bias = table[..., key_positions]
            else:
                bias = self.alibi_slopes * (key_positions - position).to(torch.float32)
            scores = (scores + bias).to(scores.dtype)  # as TransformerLens' in-place add rounds it
        pattern = F.softmax(scores, dim=-1)
        z_prefix = _rows_bmm(pattern[..., :n_prefix].reshape(n_kv, n * group, n_prefix), prefix_values)
        z_own = pattern[..., n_prefix:].permute(1, 0, 2, 3) @ own_values  # (row, kv_head, group, d_head)
        z = z_prefix.view(n_kv, n, group, d_head).permute(1, 0, 2, 3) + z_own
        return z.reshape(n, n_kv * group * d_head)

    def attn_out(self, layer: int, z: Float[torch.Tensor, "row head_d_head"]) -> Float[torch.Tensor, "row d_model"]:
        """What attention adds to the residual stream: the output projection,
        then the norm after it where the block has one (Gemma 2/3, OLMo 2)."""
        block, weights = self.model.blocks[layer], self.layers[layer]
        out = _add(weights.w_o(z), weights.b_o)
        if self.cfg.use_normalization_before_and_after:
            out = block.ln1_post(out[:, None])[:, 0]
        if self.post_norm:
            out = block.ln1(out[:, None])[:, 0]
        return out

    def mlp(self, layer: int, resid_mid: Float[torch.Tensor, "row d_model"]) -> Float[torch.Tensor, "row d_model"]:
        """TransformerLens' MLP (gated or plain) after ln2, as row-wise products.
        The activation runs over the padded rows too: elementwise kernels split
        their work across threads by element count and compute the ends of the
        pieces in scalar code, which rounds exp() differently, so a row's place
        would matter unless the pieces are whole blocks of rows."""
        block, weights = self.model.blocks[layer], self.layers[layer]
        x = _pad_rows(resid_mid if self.post_norm else block.ln2(resid_mid[:, None])[:, 0])
        if weights.b_gate is not None:  # HF's biased gated MLP (xtl.model.families.BiasedGatedMLP)
            gate = weights.w_gate.padded(x) + weights.b_gate
            hidden = block.mlp.act_fn(gate) * _add(weights.w_in.padded(x), weights.b_in)
        elif weights.w_gate is not None:
            hidden = _add(block.mlp.act_fn(weights.w_gate.padded(x)) * weights.w_in.padded(x), weights.b_in)
        else:
            hidden = block.mlp.act_fn(_add(weights.w_in.padded(x), weights.b_in))
        out = _add(weights.w_out.padded(hidden)[: resid_mid.shape[0]], weights.b_out)
        if self.cfg.use_normalization_before_and_after:
            out = block.ln2_post(out[:, None])[:, 0]
        if self.post_norm:
            out = block.ln2(out[:, None])[:, 0]
        return out

    def logits(self, resid: Float[torch.Tensor, "row d_model"]) -> Float[torch.Tensor, "padded_row vocab"]:
        """The logits of every row, and of the padding rows after them (see
        `_padded_rows`): the signals computed from them (exp over the whole
        tensor) then do not depend on a row's place either."""
        logits = _add(self.w_u.padded(self.model.ln_final(resid[:, None])[:, 0]), self.b_u)
        return apply_softcap(logits, self.cfg.output_logits_soft_cap)
