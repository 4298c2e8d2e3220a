"""What the benchmark scripts share: a Markdown report that is printed as it
grows, its header (date, machine, software), and `main`, which parses the
arguments, runs the benchmark and writes the report to `--out`."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
from pathlib import Path
from typing import Callable

import torch

import xtl


class Report:
    """Lines of Markdown, each printed as it is added: `say(text)`."""

    def __init__(self, title: str):
        self.lines: list[str] = []
        self(f"# {title}")
        self()

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def header(self, *, threads: bool = True, gpu: str = "none") -> None:
        """The date, the machine (with torch's thread count unless the run varies it) and the software."""
        cpu = platform.processor() or platform.machine()
        thread_count = f"; torch threads {torch.get_num_threads()}" if threads else ""
        self(f"- date: {dt.datetime.now().isoformat(timespec='seconds')}")
        self(f"- machine: {platform.node()}; {os.cpu_count()} CPU cores ({cpu}){thread_count}; GPU: {gpu}")
        self(f"- software: python {platform.python_version()}, torch {torch.__version__}, xtl {xtl.__version__}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], str]) -> None:
    """Parse the arguments (with `--out`), run, and write the report there if asked."""
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    args = parser.parse_args()
    report = run(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
