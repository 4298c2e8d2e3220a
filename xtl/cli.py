"""The `xtl` command line.

Every module in `xtl.commands` is one subcommand: it defines `register(subparsers)`
(adds its parser and sets `func`) and keeps heavy imports inside the function it
runs, so `xtl --help` stays fast. User mistakes (`XtlError`) become one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from xtl import commands
from xtl.errors import XtlError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --dtype, --device, --trust-remote-code: shared by the commands that load a model."""
    parser.add_argument("--model", required=True, help="SmolLM2-135M-Instruct (the embedded model), a .gguf file, a local Hugging Face checkpoint directory, or a model name in the local HF cache (Llama, Mistral, Qwen2)")
    parser.add_argument("--dtype", default="float32", help="float32 (default), float64, bfloat16 or float16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own tokenizer code to run (off by default)")


def add_prompt_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prompt-format", default="raw", choices=("raw", "chat"),
        help="raw (default, the paper's): each prompt as it is; chat: each prompt, source and target alike, "
        "as one user turn of the model's chat template",
    )


def load_model_from_args(args: argparse.Namespace):
    from xtl.model import load_model

    return load_model(args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtl",
        description="Cross-lingual latent transplantation (XTransplant) on HookedTransformer models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"xtl.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except XtlError as error:
        print(f"xtl {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `xtl benchmarks --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"xtl {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
