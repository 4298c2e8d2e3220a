"""Checks of user input that need neither torch nor a model.

The command line runs these before it imports torch or reads any weights, so a
typo in a layer spec, a number or a budget costs milliseconds, not a model load;
`xtl.model`, `xtl.generation` and `xtl.sweeping` use the same functions, so the
API and the CLI accept and refuse the same things. Each failure is one
`XtlError` sentence naming what was given and what is allowed.
"""

from __future__ import annotations

import operator
import re
from typing import Any

from xtl.errors import XtlError

DTYPE_NAMES: tuple[str, ...] = ("float32", "float64", "bfloat16", "float16")

PROMPT_FORMATS: tuple[str, ...] = ("raw", "chat")


def check_prompt_format(prompt_format: str) -> str:
    if prompt_format not in PROMPT_FORMATS:
        raise XtlError(
            f"unknown prompt format {prompt_format!r}: use 'raw' (the prompt as it is) or 'chat' "
            "(the prompt as one user turn of the model's chat template)."
        )
    return prompt_format


def check_prompt(text: str, what: str = "prompt") -> str:
    if not isinstance(text, str) or not text.strip():
        raise XtlError(f"the {what} is empty ({text!r}): give a non-empty prompt.")
    return text


def as_int(value: Any) -> int | None:
    """`value` as a Python int when it is an integer of any kind (int, numpy or
    pandas integer scalars: what a results table holds), else None. Booleans are not integers here."""
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_layer_index(layer: Any, n_layers: int, what: str = "layer") -> int:
    """`layer` as an int in 0..n_layers-1 (numpy and pandas integers accepted)."""
    number = as_int(layer)
    if number is None:
        raise XtlError(
            f"{what} {layer!r} is not a whole number: give a layer number 0..{n_layers - 1}."
        )
    if not 0 <= number < n_layers:
        raise XtlError(
            f"{what} {number} is outside this model: it has {n_layers} layers, numbered 0..{n_layers - 1}."
        )
    return number


def check_whole(value: Any, what: str, at_least: int, described: str | None = None) -> int:
    """`value` as an int of at least `at_least`, or one sentence: "{what} must be
    {described} (default: a whole number of at least N), not {value!r}."."""
    number = as_int(value)
    if number is None or number < at_least:
        raise XtlError(f"{what} must be {described or f'a whole number of at least {at_least}'}, not {value!r}.")
    return number


def check_max_new_tokens(max_new_tokens: Any, what: str = "max_new_tokens") -> int:
    return check_whole(max_new_tokens, what, 1, "a positive whole number")


def check_max_batch_rows(max_batch_rows: Any, what: str = "max_batch_rows") -> int | None:
    if max_batch_rows is None:
        return None
    why = "a whole number of at least 2 (a batch holds an instance's vanilla row and at least one configuration)"
    return check_whole(max_batch_rows, what, 2, why)


def check_n_ctx(n_ctx: Any, what: str = "n_ctx") -> int | None:
    return None if n_ctx is None else check_whole(n_ctx, what, 2, "a whole number of tokens of at least 2")


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPE_NAMES:
        raise XtlError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPE_NAMES)}.")
    return dtype


_DEVICE = re.compile(r"(cpu|mps|cuda(:\d+)?)")


def check_device_name(device: str | None) -> str | None:
    """The form of a device name (whether it is there is checked when the model is loaded)."""
    if device is None:
        return None
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise XtlError(f"unknown device {device!r}: use cpu, cuda, cuda:N (N a GPU number) or mps.")
    return device


_MEMORY_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
                 "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}  # fmt: skip


def parse_memory(text: str | int | None) -> int | None:
    """'auto' / None, a number of bytes, or '8GiB', '512MB', ..."""
    if text is None or text == "auto":
        return None
    number = as_int(text)
    if number is not None:
        if number <= 0:
            raise XtlError(f"memory budget {text!r} is not a positive number of bytes: use 'auto' or a size like 8GiB.")
        return number
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([kmgt]i?b|b)?", str(text).strip().lower().replace(" ", ""))
    amount = float(match.group(1)) if match else 0.0
    if not match or amount <= 0:
        raise XtlError(f"memory budget {text!r} is not understood: use 'auto' or a size like 8GiB, 512MiB, 2GB.")
    return int(amount * _MEMORY_UNITS[match.group(2) or ""])


def check_layer_spec(spec: str) -> str:
    """The form of a layer spec ('all', '0,2,5-7', 'SOURCES:TARGETS', groups joined by ';'),
    without knowing the model: whether the layers exist is checked once it is loaded
    (`parse_layers`)."""
    text = str(spec).strip().lower()
    allowed = "use 'all', a layer list like '0,2,5-7', or SOURCES:TARGETS groups like '0-31:0;5:7'"
    if text == "all":
        return spec
    groups = [g.strip() for g in text.split(";") if g.strip()]
    if not groups:
        raise XtlError(f"layer spec {spec!r} names no layers: {allowed}.")
    for group in groups:
        sides = group.split(":")
        if len(sides) > 2:
            raise XtlError(f"layer group {group!r} has {len(sides) - 1} colons, at most one (SOURCES:TARGETS): {allowed}.")
        for side in sides:
            items = [item.strip() for item in side.split(",") if item.strip()]
            if not items:
                raise XtlError(f"layer group {group!r} has an empty side: {allowed}.")
            for item in items:
                _check_layer_item(item, allowed)
    return spec


def _check_layer_item(item: str, allowed: str) -> None:
    if item == "all":
        return
    match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
    if not match:
        raise XtlError(f"layer {item!r} is not a layer number or range LOW-HIGH: {allowed}.")
    if match.group(2) is not None and int(match.group(1)) > int(match.group(2)):
        raise XtlError(
            f"layer range {item!r} runs backwards: write LOW-HIGH with LOW <= HIGH, e.g. "
            f"{match.group(2)}-{match.group(1)}."
        )


def parse_layers(spec: Any, n_layers: int) -> list[tuple[int, int]]:
    """The (source_layer, target_layer) pairs a layer spec names, sorted.

    "all"          every pair (n_layers^2)
    "0,2,5-7"      every pair among those layers
    "0-31:0"       SOURCES:TARGETS, every source into every target named
    "3:5;7:7"      several SOURCES:TARGETS groups, separated by ';'
    A list of (i, j) pairs (ints, numpy or pandas integers) is taken as is.
    """
    if not isinstance(spec, str):
        pairs = set()
        for pair in spec:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise XtlError(f"configuration {pair!r} is not a (source_layer, target_layer) pair.")
            pairs.add((check_layer_index(pair[0], n_layers, "source layer"),
                       check_layer_index(pair[1], n_layers, "target layer")))  # fmt: skip
        if not pairs:
            raise XtlError("no configurations given: name at least one (source_layer, target_layer) pair.")
        return sorted(pairs)
    check_layer_spec(spec)
    text = spec.strip().lower()
    if text == "all":
        return [(i, j) for i in range(n_layers) for j in range(n_layers)]
    pairs = set()
    for group in filter(None, (g.strip() for g in text.split(";"))):
        sides = [_layer_list(side, n_layers) for side in group.split(":")]
        sources, targets = sides if len(sides) == 2 else (sides[0], sides[0])
        pairs.update((i, j) for i in sources for j in targets)
    return sorted(pairs)


def _layer_list(text: str, n_layers: int) -> list[int]:
    layers: list[int] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        if item == "all":
            layers.extend(range(n_layers))
            continue
        low, _, high = item.partition("-")
        low_layer = check_layer_index(int(low), n_layers, "layer")
        high_layer = check_layer_index(int(high), n_layers, "layer") if high.strip() else low_layer
        layers.extend(range(low_layer, high_layer + 1))
    return layers


def check_threads(threads: Any, what: str = "--threads") -> int | None:
    return None if threads is None else check_whole(threads, what, 1)


def default_threads() -> int:
    """The torch threads for a CPU run when none are asked for: the cores this process may
    use that are not busy (1-minute load average), at least 1. On a busy 2-core machine one
    thread is faster than two threads fighting other work for the cores (measured:
    benchmarks/results/2026-12-07-cpu-demo-threads.md); $OMP_NUM_THREADS, when set, wins."""
    import os

    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))
MODES: tuple[str, ...] = ("generate", "score")  # a sweep's modes: greedy answers, or teacher-forced option scores


def check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise XtlError(f"unknown mode {mode!r}: the modes are {', '.join(MODES)}.")
    return mode
