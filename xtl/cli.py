"""The `xtl` command line.

Every module in `xtl.commands` is one subcommand: it defines `register(subparsers)`
(adds its parser and sets `func`) and keeps heavy imports inside the function it
runs, so `xtl --help` stays fast. A command checks everything that needs no model
(`xtl.checks`: layer specs, numbers, budgets, the out directory, data files)
before it imports torch or reads weights. User mistakes (`XtlError`) become one
line on stderr and exit status 2, never a traceback; Ctrl-C is exit status 130,
from the first millisecond on.
"""

from __future__ import annotations

import signal
import sys


def _interrupted(signum, frame):  # until main() runs: Ctrl-C while Python imports xtl
    print("xtl: interrupted", file=sys.stderr)
    raise SystemExit(130)


try:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
except ValueError:  # imported outside the main thread: signals are not ours to handle
    pass

import argparse  # noqa: E402
import importlib  # noqa: E402
import pkgutil  # noqa: E402

from xtl import checks, commands  # noqa: E402
from xtl.errors import XtlError  # noqa: E402


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --dtype, --device, --n-ctx, --trust-remote-code: shared by the commands that load a model."""
    parser.add_argument("--model", required=True, help="SmolLM2-135M-Instruct (the embedded model), a .gguf file, a local Hugging Face checkpoint directory, or a model name in the local HF cache (the families of the README's table: Llama, Mistral, Qwen2/3, Gemma 1-3, Phi-3, OLMo 2, GPT-NeoX, Cohere, Mixtral, BLOOM)")
    parser.add_argument("--dtype", default="float32", help="float32 (default), float64, bfloat16 or float16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--n-ctx", type=int, default=None, metavar="TOKENS", help="the context to load the model with, prompt plus new tokens (default: the checkpoint's, at most 4096)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own tokenizer code to run (off by default)")


def check_model_arguments(args: argparse.Namespace) -> None:
    """What can be said about the model options without torch (run before anything is loaded)."""
    checks.check_dtype(args.dtype)
    checks.check_device_name(args.device)
    checks.check_n_ctx(args.n_ctx, "--n-ctx")


def add_prompt_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prompt-format", default="raw", choices=("raw", "chat"),
        help="raw (default, the paper's): each prompt as it is; chat: each prompt, source and target alike, "
        "as one user turn of the model's chat template",
    )


def load_model_from_args(args: argparse.Namespace):
    from xtl.model import load_model

    return load_model(
        args.model, dtype=args.dtype, device=args.device, n_ctx=args.n_ctx, trust_remote_code=args.trust_remote_code
    )


def _version() -> str:
    import xtl

    return xtl.__version__  # the one source: pyproject reads its version from it too


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtl",
        description="Cross-lingual latent transplantation (XTransplant) on HookedTransformer models.",
    )
    parser.add_argument("--version", action="version", version=f"xtl {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"xtl.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    command = "xtl"
    try:
        if signal.getsignal(signal.SIGINT) is _interrupted:  # from here on, KeyboardInterrupt
            signal.signal(signal.SIGINT, signal.default_int_handler)
        args = build_parser().parse_args(argv)
        command = f"xtl {args.command}"
        status = args.func(args)
    except XtlError as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `xtl benchmarks --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
