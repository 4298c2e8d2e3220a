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
