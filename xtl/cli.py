"""The `xtl` command line.

Every module in `xtl.commands` is one subcommand (but `_options`, the argparse
pieces they share): it defines `register(subparsers)` (adds its parser and sets
`func`) and keeps heavy imports inside the function it runs, so `xtl --help`
stays fast. A command checks everything that needs no model
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

from xtl import commands  # noqa: E402
from xtl.errors import XtlError  # noqa: E402


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
        if info.name.startswith("_"):  # shared pieces, not a command
            continue
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
