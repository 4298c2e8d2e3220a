"""Argparse pieces shared by several commands, and the option objects they make
(`xtl.options`), checked without torch before anything is loaded."""

from __future__ import annotations

import argparse

from xtl import checks
from xtl.options import LoadOptions


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --dtype, --device, --n-ctx, --trust-remote-code: shared by the commands that load a model."""
    parser.add_argument("--model", required=True, help="SmolLM2-135M-Instruct (the embedded model), a .gguf file, a local Hugging Face checkpoint directory, or a model name in the local HF cache (the families of the README's table: Llama, Mistral, Qwen2/3, Gemma 1-3, Phi-3, OLMo 2, GPT-NeoX, Cohere, Mixtral, BLOOM)")
    parser.add_argument("--dtype", default="float32", help="float32 (default), float64, bfloat16 or float16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--n-ctx", type=int, default=None, metavar="TOKENS", help="the context to load the model with, prompt plus new tokens (default: the checkpoint's, at most 4096)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own tokenizer code to run (off by default)")
    add_threads_argument(parser)


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The model options given, checked without torch (run before anything is loaded)."""
    checks.check_n_ctx(args.n_ctx, "--n-ctx")
    checks.check_threads(args.threads)
    return LoadOptions(str(args.model), args.dtype, args.device, args.n_ctx, args.trust_remote_code)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="torch CPU threads (default: the cores not busy with other work, from the load average, at least 1; "
        "$OMP_NUM_THREADS when set)",
    )  # fmt: skip


def use_threads(args: argparse.Namespace, say=None) -> int:
    """Set torch's CPU threads from --threads or `checks.default_threads()`; returns the number."""
    threads = checks.check_threads(getattr(args, "threads", None)) or checks.default_threads()
    import torch  # after the check: a wrong --threads is one sentence, before torch's import time

    torch.set_num_threads(threads)
    if say is not None:
        say(f"{threads} torch thread{'s' if threads > 1 else ''}" + ("" if args.threads else " (--threads N to choose)"))
    return threads


def layers_of(args: argparse.Namespace) -> int | None:
    """The --model's layer count from its config.json or GGUF header (no torch, no weights), or None
    when that cannot be read here (the loader then names the problem)."""
    from xtl.checkpoints import model_layers

    return model_layers(args.model)


def add_prompt_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prompt-format", default="raw", choices=("raw", "chat"),
        help="raw (default, the paper's): each prompt as it is; chat: each prompt, source and target alike, "
        "as one user turn of the model's chat template",
    )  # fmt: skip


def add_ray_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
        help="spread the work over a Ray cluster, one worker per GPU: ADDRESS of a running cluster (ray start --head), or none for a local one (needs pip install 'xtransplant[ray]')",
    )  # fmt: skip

