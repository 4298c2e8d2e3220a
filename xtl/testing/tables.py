"""Small results tables built by hand, in the schema of `xtl.results.load`, for tests.

`group(...)` writes the rows of one (model, site, benchmark, split, lang): instance
k is correct under configuration (i, j) iff k is in `correct[(i, j)]`, and
correct under vanilla iff k is in `vanilla`. `table(*groups)` concatenates them,
keeping one vanilla row per instance (vanilla rows are shared by every site).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd


def group(
    *,
    n: int,
    vanilla: Iterable[int],
    correct: Mapping[tuple[int, int], Iterable[int]],
    site: str = "ffn",
    lang: str = "sw",
    model: str = "tiny-qwen2",
    n_layers: int = 2,
    benchmark: str = "xnli",
    split: str = "sample",
    gold: str | None = "1",
) -> pd.DataFrame:
    """Rows for one group: n instances, vanilla rows, and every configuration in `correct`."""
    vanilla = set(vanilla)
    rows = []

    def row(k: int, site_: str | None, i: int | None, j: int | None, right: bool) -> dict:
        return {
            "run_id": f"run-{model}-{benchmark}",
            "model": model,
            "model_fingerprint": f"fp-{model}",
            "n_layers": n_layers,
            "benchmark": benchmark,
            "split": split,
            "lang": lang,
            "instance_id": f"{benchmark}/{split}/{lang}/{k}",
            "source": f"source prompt {k} (en)",
            "target": f"target prompt {k} ({lang})",
            "gold": gold,
            "site": site_,
            "source_layer": i,
            "target_layer": j,
            "token_ids": [1, 2, 3],
            "text": ("(1) right" if right else "(2) wrong")
            + (f" [{site_} {i}->{j}]" if site_ else " [vanilla]")
            + f" #{k}",
            "correct": None if gold is None else right,
            "max_new_tokens": 20,
            "dtype": "float32",
        }

    for k in range(n):
        rows.append(row(k, None, None, None, k in vanilla))
    for (i, j), right in correct.items():
        right = set(right)
        for k in range(n):
            rows.append(row(k, site, i, j, k in right))
    return _typed(pd.DataFrame(rows))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df["source_layer"] = df["source_layer"].astype("Int64")
    df["target_layer"] = df["target_layer"].astype("Int64")
    df["correct"] = df["correct"].astype("boolean")
    df["n_layers"] = df["n_layers"].astype(int)
    return df


def table(*groups: pd.DataFrame) -> pd.DataFrame:
    """Concatenate groups, keeping one vanilla row per (model, benchmark, split, lang, instance)."""
    df = pd.concat(groups, ignore_index=True)
    is_vanilla = df["site"].isna()
    dup = is_vanilla & df.duplicated(["model", "benchmark", "split", "lang", "instance_id", "site"])
    return _typed(df[~dup].reset_index(drop=True))


def full(n: int, n_layers: int, vanilla: Iterable[int], rule, **kwargs) -> pd.DataFrame:
    """A group with every (i, j) run; instance k is right under (i, j) iff rule(i, j, k)."""
    correct = {
        (i, j): {k for k in range(n) if rule(i, j, k)} for i in range(n_layers) for j in range(n_layers)
    }
    return group(n=n, vanilla=vanilla, correct=correct, n_layers=n_layers, **kwargs)


# The worked example of the analysis tests (N = 2, site ffn): sw and th.
SW = dict(n=5, vanilla={0, 4}, correct={(0, 0): {4}, (0, 1): {0, 1, 2}, (1, 0): set(), (1, 1): {0, 1, 3}})
TH = dict(n=3, vanilla={2}, correct={(0, 0): {0}, (0, 1): set(), (1, 0): {1}, (1, 1): {0}})


def two_langs(**kwargs) -> pd.DataFrame:
    """sw (5 instances) and th (3 instances) of one model and site; kwargs go to `group`."""
    return table(group(lang="sw", **SW, **kwargs), group(lang="th", **TH, **kwargs))
