"""A model built in code, for tests and notebooks that need a model without a
checkpoint. **It is not a trained language model.** `build_demo_model` makes a
6-layer Llama-architecture HookedTransformer (RMS norm, rotary, gated SiLU MLP)
from a seeded random generator, with a few weights shaped by hand so that its
greedy answers have the form of the paper's answers instead of random tokens:

- a few axes of the residual stream belong to a hand-made circuit, the
  others are "content"; every token embedding has
  random content of one fixed norm and a constant direction, and the answer
  markers (`(1)` `(2)` `(3)` `(A)` .. `(D)`) also carry a "marker" direction,
  an identity direction each, and an "answered" direction;
- head 0 of layer 0 copies options: its query (the constant direction) meets
  the marker direction of the keys, so it attends to the markers present in
  the prompt and writes one "copied" direction per marker found; a marker's
  unembedding reads its copied direction, so the options the prompt offers
  become the likely answers (an absent marker rarely wins);
- after a marker the model usually stops: the unembedding maps the "answered"
  direction to EOS (and away from markers);
- every other weight is random, and the random layers write only into the
  content directions. *Which* offered option wins is decided by the markers'
  random content unembeddings read against the prompt's content at the last
  position, which a transplant changes. Nothing in the model knows which
  answer is right, and nothing about any configuration is built in: accuracy,
  gains and every figure come from the run's own rows.

The tokenizer is a byte-level BPE trained in code on the demo prompts, with
the answer markers as single tokens, `<s>` `</s>` `<pad>` `<unk>` special
tokens, and a BOS added like a Llama tokenizer. Both are deterministic: the
same torch and tokenizers versions give the same weights, token ids and
fingerprint on every machine (weights are drawn on the CPU in float32).

The demo data (`xtl/demo_data/*.jsonl`, the pairs format of
`xtl.datasets.load_pairs`) was written for xtl in the formats of the paper's
benchmarks: an XNLI-like and an XCOPA-like task (English source, target in
de, sw, zh) and a GlobalOpinionQA-like task of country-specific questions
(source in de, sw, zh, English target; the gold answers are facts about the
named country, not survey results).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from xtl.errors import XtlError

if TYPE_CHECKING:  # the heavy imports stay inside the functions
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerFast

DEMO_MODEL_NAME = "xtl-demo"  # the model's name (`model.xtl.name`)
DEMO_BENCHMARKS = ("xnli", "xcopa", "globalopinionqa")  # the paper-format demo pairs its tokenizer is trained on
DEMO_SEED = 0

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>")  # ids 0..3
MARKERS = ("(1)", "(2)", "(3)", "(A)", "(B)", "(C)", "(D)")
BPE_VOCAB_SIZE = 1024  # before the markers are added

# The model's shape, and the scales of its weights (see the module docstring). The
# scales were chosen by looking at the form of the answers (mostly one option marker,
# then EOS) and at whether they vary with the prompt and the configuration; nothing
# was tuned towards particular answers or configurations being right.
_CONFIG = dict(n_layers=6, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_ctx=512)
_SCALES = dict(
    embed_content=1.0,  # random part of every embedding (one norm for every token)
    embed_constant=1.0,  # the constant direction every token carries (the copy head's query reads it)
    marker_key=1.0,  # marker embeddings: the marker direction (the copy head's keys read it)
    marker_identity=1.5,  # marker embeddings: their own identity direction (the copy head's values read it)
    answered=3.0,  # marker embeddings: the "answered" direction (the unembedding maps it to EOS)
    copy_rotary_pair=7,  # rotary pair of the copy head's query and key: 7 is the slowest of 0..7
    copy_query=6.0,
    copy_key=6.0,
    copy_output=8.0,  # copy head: each marker's identity -> its "copied" direction
    attn_qk=2.0,  # random queries and keys (larger: sharper, more content-specific attention)
    attn_ov=1.0,  # random attention outputs
    mlp_in=1.0,
    mlp_out=0.25,
    unembed_content=1.0,  # random unembedding of every token, over the content directions
    unembed_marker=4.0,  # a marker's logit from its "copied" direction
    unembed_marker_content=2.0,  # ... and from the content: this decides between the options offered
    unembed_eos=8.5,  # EOS from the "answered" direction
    marker_after_marker=-10.0,  # markers from the "answered" direction
    eos_bias=-2.0,
    unused_special_bias=-30.0,  # <s>, <pad>, <unk> are never generated
)


# --------------------------------------------------------------------------- data


def demo_data_dir() -> Path:
    """The folder of the shipped demo pairs files."""
    return Path(str(resources.files("xtl") / "demo_data"))


def demo_pairs_path(benchmark: str) -> Path:
    """The pairs file of one demo benchmark (`xnli`, `xcopa` or `globalopinionqa`)."""
    if benchmark not in DEMO_BENCHMARKS:
        raise XtlError(f"there is no demo benchmark {benchmark!r}; the demo has {', '.join(DEMO_BENCHMARKS)}.")
    return demo_data_dir() / f"{benchmark}-demo.jsonl"


def load_demo(benchmarks: tuple[str, ...] | list[str] = DEMO_BENCHMARKS, lang: str | None = None) -> list:
    """The demo instances (`xtl.datasets.Instance`), read with `load_pairs` like any pairs file."""
    from xtl.datasets import load_pairs

    instances = []
    for benchmark in benchmarks:
        instances += load_pairs(demo_pairs_path(benchmark), lang=lang)
    return instances


def _corpus() -> list[str]:
    """Every prompt of the demo data, in file order: what the tokenizer is trained on."""
    texts = []
    for instance in load_demo():
        texts += [instance.source, instance.target]
    return texts


# --------------------------------------------------------------------------- tokenizer


def build_demo_tokenizer() -> "PreTrainedTokenizerFast":
    """A byte-level BPE tokenizer trained in code on the demo prompts (deterministic).

    Special tokens `<s>` 0, `</s>` 1, `<pad>` 2, `<unk>` 3; the answer markers
    are single (non-special) tokens; a BOS is added like a Llama tokenizer.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer.add_tokens([AddedToken(marker, single_word=False, normalized=False) for marker in MARKERS])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=_CONFIG["n_ctx"],
        clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------- model


def build_demo_model(seed: int = DEMO_SEED) -> "HookedTransformer":
    """The demo model: deterministic, built in code, no download. Not a trained language model."""
    import torch
    from transformer_lens import HookedTransformerConfig

    from xtl.model import ModelInfo, fingerprint, new_hooked_transformer, use_hf_rotary_tables

    tokenizer = build_demo_tokenizer()
    d_vocab = len(tokenizer)
    c = _CONFIG
    cfg = HookedTransformerConfig(
        n_layers=c["n_layers"],
        d_model=c["d_model"],
        n_heads=c["n_heads"],
        d_head=c["d_head"],
        d_mlp=c["d_mlp"],
        n_ctx=c["n_ctx"],
        d_vocab=d_vocab,
        act_fn="silu",
        eps=1e-6,
        normalization_type="RMS",
        final_rms=True,
        gated_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=c["d_head"],
        rotary_adjacent_pairs=False,
        rotary_base=10000.0,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
        init_weights=False,
        dtype=torch.float32,
        device="cpu",
    )
    model = new_hooked_transformer(cfg)
    ids = {
        "eos": tokenizer.convert_tokens_to_ids("</s>"),
        "markers": [tokenizer.convert_tokens_to_ids(m) for m in MARKERS],
        "unused": [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "<unk>")],
    }
    with torch.no_grad():
        state = _demo_weights(cfg, ids, seed)
        unset = {name for name, _ in model.named_parameters()} - state.keys()
        assert not unset, f"demo weights missing for {sorted(unset)}"  # init_weights=False leaves them empty
        model.load_state_dict({**model.state_dict(), **state})
    use_hf_rotary_tables(model)
    model.eval()
    model.tokenizer = tokenizer
    model.xtl = ModelInfo(
        name=DEMO_MODEL_NAME,
        path=None,
        architecture="LlamaForCausalLM",
        fingerprint=fingerprint(model),
        eos_token_ids=(ids["eos"],),
    )
    return model


def _normal(generator, *shape: int):
    """Approximately standard normal float32 values (the sum of 12 uniforms, minus 6), made from
    random integers with exact arithmetic: the same bits on every CPU, unlike `torch.randn`,
    whose float32 kernel takes a vectorised path on some CPUs and not on others."""
    import torch

    uniforms = torch.randint(0, 1 << 24, (*shape, 12), generator=generator, dtype=torch.int64)
    return (uniforms.sum(dim=-1).to(torch.float64) / (1 << 24) - 6.0).to(torch.float32)


def _demo_weights(cfg, ids: dict, seed: int) -> dict:
    """Every parameter of the demo model, from one seeded CPU generator (see the module docstring).

    The circuit's directions are coordinate axes of the residual stream (RMS norm with unit
    weights treats every axis alike): 0 constant, 1 marker, 2 answered, then one identity
    axis and one "copied" axis per marker; the remaining axes are the content.
    """
    import torch

    s = _SCALES
    g = torch.Generator(device="cpu").manual_seed(seed)
    d, h, dh, dm, L, V = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.n_layers, cfg.d_vocab
    n_markers = len(ids["markers"])
    CONSTANT, MARKER, ANSWERED = 0, 1, 2
    identity = torch.arange(3, 3 + n_markers)  # what the copy head reads from a marker's embedding
    copied = torch.arange(3 + n_markers, 3 + 2 * n_markers)  # what it writes, and the unembedding reads
    circuit = 3 + 2 * n_markers  # axes 0..circuit-1 belong to the circuit; the rest is content
    n_content = d - circuit

    def randn(*shape: int) -> torch.Tensor:
        return _normal(g, *shape)

    # Embeddings: random content of one norm for every token, plus the constant axis;
    # markers also carry their circuit axes.
    content = randn(V, n_content).to(torch.float64)
    W_E = torch.zeros(V, d)
    W_E[:, circuit:] = (s["embed_content"] * d**0.5 * content / content.norm(dim=1, keepdim=True)).to(torch.float32)
    W_E[:, CONSTANT] = s["embed_constant"]
    markers = torch.tensor(ids["markers"])
    W_E[markers, MARKER] = s["marker_key"]
    W_E[markers, identity] = s["marker_identity"]
    W_E[markers, ANSWERED] = s["answered"]

    state: dict[str, torch.Tensor] = {"embed.W_E": W_E}
    for layer in range(L):
        p = f"blocks.{layer}."
        state[p + "ln1.w"] = torch.ones(d)
        state[p + "ln2.w"] = torch.ones(d)
        # Random attention, writing only into the content axes.
        W_Q = s["attn_qk"] * randn(h, d, dh) / d**0.5
        W_K = s["attn_qk"] * randn(h, d, dh) / d**0.5
        W_V = randn(h, d, dh) / d**0.5
        W_O = s["attn_ov"] * randn(h, dh, d) / dh**0.5
        W_O[:, :, :circuit] = 0.0
        if layer == 0:
            # Head 0 copies the markers of the prompt: every query (the constant axis) meets
            # the marker axis of the keys. Query and key sit in the slowest rotary pair, so
            # the score barely depends on distance.
            pair = int(s["copy_rotary_pair"])
            W_Q[0], W_K[0], W_V[0], W_O[0] = 0.0, 0.0, 0.0, 0.0
            W_Q[0, CONSTANT, pair] = s["copy_query"]
            W_K[0, MARKER, pair] = s["copy_key"]
            W_V[0, identity, torch.arange(n_markers)] = 1.0
            W_O[0, torch.arange(n_markers), copied] = s["copy_output"]
        state.update({p + "attn.W_Q": W_Q, p + "attn.W_K": W_K, p + "attn.W_V": W_V, p + "attn.W_O": W_O})
        for name in ("b_Q", "b_K", "b_V"):
            state[p + "attn." + name] = torch.zeros(h, dh)
        state[p + "attn.b_O"] = torch.zeros(d)
        # Random gated SiLU MLP, writing only into the content axes.
        state[p + "mlp.W_in"] = s["mlp_in"] * randn(d, dm) / d**0.5
        state[p + "mlp.W_gate"] = s["mlp_in"] * randn(d, dm) / d**0.5
        W_out = s["mlp_out"] * randn(dm, d) / dm**0.5 * d**0.5
        W_out[:, :circuit] = 0.0
        state[p + "mlp.W_out"] = W_out
        state[p + "mlp.b_in"] = torch.zeros(dm)
        state[p + "mlp.b_out"] = torch.zeros(d)
    state["ln_final.w"] = torch.ones(d)

    # Unembedding: random over the content axes; a marker also reads its "copied" axis,
    # and EOS the "answered" one.
    W_U = torch.zeros(d, V)
    W_U[circuit:] = s["unembed_content"] * randn(n_content, V) / d**0.5
    W_U[circuit:, markers] *= s["unembed_marker_content"] / s["unembed_content"]
    W_U[copied, markers] = s["unembed_marker"]
    W_U[ANSWERED, markers] = s["marker_after_marker"]
    W_U[ANSWERED, ids["eos"]] = s["unembed_eos"]
    b_U = torch.zeros(V)
    b_U[ids["eos"]] = s["eos_bias"]
    unused = torch.tensor(ids["unused"])
    W_U[:, unused] = 0.0
    b_U[unused] = s["unused_special_bias"]
    state["unembed.W_U"] = W_U
    state["unembed.b_U"] = b_U
    return state
