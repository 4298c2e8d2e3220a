"""Argparse pieces shared by several commands, and the option objects they make
(`xtl.options`), checked without torch before anything is loaded."""

from __future__ import annotations

import argparse

from xtl import checks
from xtl.errors import XtlError
from xtl.options import LoadOptions


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --dtype, --device, --n-ctx, --trust-remote-code: shared by the commands that load a model."""
    parser.add_argument("--model", required=True, help="SmolLM2-135M-Instruct (the embedded model), a .gguf file, a local Hugging Face checkpoint directory, or a model name in the local HF cache (Llama, Mistral, Qwen2, BLOOM)")
    parser.add_argument("--dtype", default="float32", help="float32 (default), float64, bfloat16 or float16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--n-ctx", type=int, default=None, metavar="TOKENS", help="the context to load the model with, prompt plus new tokens (default: the checkpoint's, at most 4096)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own tokenizer code to run (off by default)")


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The model options given, checked without torch (run before anything is loaded)."""
    checks.check_n_ctx(args.n_ctx, "--n-ctx")
    return LoadOptions(str(args.model), args.dtype, args.device, args.n_ctx, args.trust_remote_code)


def add_prompt_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prompt-format", default="raw", choices=("raw", "chat"),
        help="raw (default, the paper's): each prompt as it is; chat: each prompt, source and target alike, "
        "as one user turn of the model's chat template",
    )  # fmt: skip


def add_ray_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
        help="spread the work over a Ray cluster, one worker per GPU: ADDRESS of a running cluster (ray start --head), or none for a local one (needs pip install 'xtl[ray]')",
    )  # fmt: skip


def check_at_least(flag: str, value: int | None, low: int = 1) -> None:
    """A count option (--limit, --gpus, --workers): None, or at least `low`."""
    if value is not None and value < low:
        raise XtlError(f"{flag} must be at least {low}, not {value}.")
