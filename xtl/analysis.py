"""Analyses of a results table: every number the figures and the report show.

Each function takes the one long results table (one row per instance x site x
source layer x target layer, plus one vanilla row per instance with `site` NA)
and computes a quantity of XTRANSPLANT_SPEC.md section 5. For one model, site,
benchmark, split and language with n instances, `C[i][j]` is the set of
instances answered correctly under configuration (i, j) and `V` the set correct
under vanilla.

Vanilla rows are shared by every site: the vanilla of a group (model, site,
benchmark, split, lang) is the rows with `site` NA and the same model,
benchmark, split and lang. A sweep may cover only some configurations: grids
then have NaN cells (still N x N, N from `n_layers`) and means run over the
configurations present. Every configuration present must cover the same
instances as vanilla.

Two shapes of function:

- tidy tables over every group (`config_table`, `average_performance`,
  `win_tie_lose`, `layerwise_gains`, `upper_bounds_table`,
  `selected_pairs_table`, `run_summary`); the rows with `lang == POOLED` pool
  the group's languages by summing counts;
- one-group functions (`accuracy_grid`, `gain_grid`, `upper_bounds`,
  `select_pair`, `apply_pair`, `flips`), which take the filters `model=`,
  `site=`, `benchmark=`, `split=`, `lang=` (a value or a list of values) and
  raise `XtlError` naming the groups present when the filtered table still
  holds several. `pooled=True` pools several languages into one group.

Rows with `correct` NA (no gold answer) cannot be scored: every function raises
`XtlError` for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from xtl.errors import XtlError

GROUP_KEYS: tuple[str, ...] = ("model", "site", "benchmark", "split", "lang")
"""The keys of one analysis group."""

VANILLA_KEYS: tuple[str, ...] = ("model", "benchmark", "split", "lang")
"""The keys a vanilla row is shared under (it has no site)."""

CONFIG_KEYS: tuple[str, ...] = (*GROUP_KEYS, "source_layer", "target_layer")

POOLED = "pooled"
"""The `lang` of rows that pool every language of a group (by summing counts)."""

REQUIRED_COLUMNS: tuple[str, ...] = (
    "model",
    "n_layers",
    "benchmark",
    "split",
    "lang",
    "instance_id",
    "site",
    "source_layer",
    "target_layer",
    "correct",
)

_FILTER_NAMES = ("model", "site", "benchmark", "split", "lang")
_KEY_WORDS = {
    "model": ("model", "models"),
    "site": ("site", "sites"),
    "benchmark": ("benchmark", "benchmarks"),
    "split": ("split", "splits"),
    "lang": ("language", "languages"),
}

FilterValue = str | Sequence[str] | None  # a filter of `filter_rows`: one value, several, or None (all)
PairMode = Literal["overall", "targetfirst"]

# metric -> (its words for axis titles, whether its values are shares); one row per metric
_METRIC_TABLE: dict[str, tuple[str, bool]] = {
    "accuracy": ("accuracy (greedy answer)", True),
    "option_accuracy": ("accuracy (best-scored option)", True),
    "option_accuracy_norm": ("accuracy (best option per token)", True),
    "gold_logprob": ("mean gold log-probability (nats)", False),
    "gold_margin": ("mean gold margin (nats, gold minus best other option)", False),
}
METRICS: tuple[str, ...] = tuple(_METRIC_TABLE)
"""What the grids, win/tie/lose, layer-wise gains and upper bounds measure (`metric=`):

- `accuracy`: the `correct` column: the greedy answer scored by the benchmark's
  rule in a generate run, the best-scored option in a scoring run;
- `option_accuracy` / `option_accuracy_norm` (scoring runs): the option of
  highest summed / per-token mean log-probability is the gold;
- `gold_logprob` (scoring runs): the gold option's log-probability (nats);
- `gold_margin` (scoring runs, two or more options): gold minus the best other option (nats).

For the continuous metrics every count of `config_table` becomes a sum of the
metric over instances (so `accuracy` is its mean, `gain` the difference of
means, and pooling languages weights them by n), `gained` / `lost` count the
instances whose value rose / fell, and an upper bound takes each instance's
best value over the configurations of its scope."""


# --------------------------------------------------------------------------
# Selecting rows
# --------------------------------------------------------------------------


def _as_list(value: FilterValue) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


def _check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise XtlError(
            f"the results table lacks the columns {', '.join(missing)}; "
            "pass the table that xtl.results.load returns"
        )


def _values(series: pd.Series) -> list[str]:
    return sorted(str(v) for v in series.dropna().unique())


def filter_rows(
    df: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
) -> pd.DataFrame:
    """The rows matching the filters (None keeps all); vanilla rows are kept for any site.

    Works on a results table and on the tables of this module (e.g. `config_table`).
    """
    missing = [c for c in _FILTER_NAMES if c not in df.columns]
    if missing:
        raise XtlError(
            f"the table lacks the columns {', '.join(missing)}; pass the table that xtl.results.load returns"
        )
    keep = None
    for key, value in zip(_FILTER_NAMES, (model, site, benchmark, split, lang), strict=True):
        wanted = _as_list(value)
        if wanted is None:
            continue
        match = df[key].isin(wanted).to_numpy(dtype=bool, na_value=False)
        found = set(df.loc[match, key].unique())
        unknown = [w for w in wanted if w not in found]
        if unknown:
            raise XtlError(
                f"{key}={unknown[0]!r} is not in the results table, which holds "
                f"{_KEY_WORDS[key][1]}: {', '.join(_values(df[key])) or 'none'}"
            )
        if key == "site":
            match = match | df[key].isna().to_numpy()
        keep = match if keep is None else keep & match
    return df if keep is None else df[keep]


def _require_scored(df: pd.DataFrame) -> None:
    unscored = df["correct"].isna()
    if unscored.any():
        where = df.loc[unscored, ["benchmark", "split", "lang"]].drop_duplicates()
        names = ", ".join(f"{b}/{s}/{lg}" for b, s, lg in where.itertuples(index=False))
        raise XtlError(
            f"{int(unscored.sum())} rows ({names}) have no gold answer (correct is NA) "
            "and cannot be scored; select benchmarks with gold answers"
        )


def single_group(
    df: pd.DataFrame,
    keys: Sequence[str] = ("model", "site", "benchmark", "split"),
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
) -> dict[str, str]:
    """The one value of each key after filtering; XtlError naming the values when a key has several."""
    rows = filter_rows(df, model=model, site=site, benchmark=benchmark, split=split, lang=lang)
    transplants = rows[rows["site"].notna()]
    if transplants.empty:
        raise XtlError("the results table has no transplant rows for these filters; check model=, site=, lang=")
    return {key: _require_one(transplants, key) for key in keys}


def _require_one(table: pd.DataFrame, key: str) -> str:
    values = _values(table[key])
    plural = _KEY_WORDS[key][1]
    if not values:
        raise XtlError(f"the results table holds no {plural} for these filters; check model=, site=, lang=")
    if len(values) > 1:
        raise XtlError(
            f"the results table holds {len(values)} {plural} ({', '.join(values)}); "
            f"choose one with {key}='...'"
        )
    return values[0]


# --------------------------------------------------------------------------
# The per-configuration counts everything else is built from
# --------------------------------------------------------------------------


def with_metric(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """The results table with `correct` holding `metric` (see METRICS): every
    function here then measures it. A config table passes unchanged."""
    check_metric(metric)
    if metric == "accuracy" or _is_config_table(df):
        return df
    modes = df["mode"].fillna("generate") if "mode" in df.columns else pd.Series("generate", index=df.index)
    if (modes != "score").any():
        raise XtlError(
            f"metric {metric!r} needs the option scores of a scoring run (xtl sweep --mode score); "
            "these rows were generated: use metric='accuracy'."
        )
    if metric in ("option_accuracy", "option_accuracy_norm"):
        column = "option_choice" if metric == "option_accuracy" else "option_choice_norm"
        several = df["option_logprobs"].map(len) > 1
        value = (df[column] == df["gold_option"]).astype("boolean").where(several & df["gold_option"].notna())
        return df.assign(correct=value)
    return df.assign(correct=df[metric].astype(float))


def check_metric(metric: Any) -> str:
    if metric not in _METRIC_TABLE:
        raise XtlError(f"unknown metric {metric!r}: the metrics are {', '.join(METRICS)}.")
    return metric


def metric_label(metric: str, df: pd.DataFrame | None = None) -> str:
    """What `metric` is, in words, for axis titles (`df`: the rows, to say which accuracy)."""
    if check_metric(metric) == "accuracy" and df is not None and "mode" in df.columns and (df["mode"] == "score").all() and len(df):
        return _METRIC_TABLE["option_accuracy"][0]
    return _METRIC_TABLE[metric][0]


def is_share(metric: str) -> bool:
    """Whether `metric`'s values are shares (accuracies), not nats."""
    return _METRIC_TABLE[check_metric(metric)][1]


def metric_format(metric: str) -> str:
    """The d3 number format of a value of `metric` (a share, or nats)."""
    return ".1%" if is_share(metric) else ".3f"


def is_continuous(df: pd.DataFrame) -> bool:
    """Whether `correct` holds a continuous metric (a float column, see `with_metric`)."""
    return pd.api.types.is_float_dtype(df["correct"].dtype)


def _transplants_with_vanilla(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Transplant rows joined to their instance's vanilla correctness, and the vanilla rows.

    Validates: correct not NA, no duplicate rows, a vanilla row for every instance,
    every configuration on exactly the vanilla instances, one N per model, layers in 0..N-1.
    """
    _check_columns(df)
    _require_scored(df)
    is_vanilla = df["site"].isna()
    vanilla = df[is_vanilla]
    rows = df[~is_vanilla]
    if rows.empty:
        raise XtlError("the results table has no transplant rows (only vanilla ones); run a sweep first")

    for name, frame, keys in (
        ("transplant", rows, [*CONFIG_KEYS, "instance_id"]),
        ("vanilla", vanilla, [*VANILLA_KEYS, "instance_id"]),
    ):
        dup = frame.duplicated(keys)
        if dup.any():
            first = frame.loc[dup].iloc[0]
            raise XtlError(
                f"the results table holds {int(dup.sum())} duplicate {name} rows "
                f"(e.g. instance {first['instance_id']} of {first['model']}); "
                "was the same run loaded twice?"
            )

    layers_per_model = df.groupby("model")["n_layers"].nunique()
    if (layers_per_model > 1).any():
        model = layers_per_model[layers_per_model > 1].index[0]
        raise XtlError(f"model {model!r} appears with different n_layers; its rows come from different models")
    n_layers = rows["n_layers"].astype(int)
    for column in ("source_layer", "target_layer"):
        layer = rows[column]
        bad = layer.isna() | (layer < 0) | (layer >= n_layers)
        if bad.any():
            raise XtlError(
                f"{int(bad.sum())} transplant rows have a {column} outside 0..n_layers-1 "
                f"(e.g. {rows.loc[bad, column].iloc[0]} with n_layers {int(n_layers[bad].iloc[0])})"
            )

    vkeys = [*VANILLA_KEYS, "instance_id"]
    v = vanilla[vkeys + ["correct"]].rename(columns={"correct": "vanilla_correct"})
    merged = rows.merge(v, on=vkeys, how="left", validate="many_to_one")
    merged.index = rows.index
    no_vanilla = merged["vanilla_correct"].isna()
    if no_vanilla.any():
        first = merged.loc[no_vanilla].iloc[0]
        raise XtlError(
            f"{int(no_vanilla.sum())} transplant rows have no vanilla row for their instance "
            f"(e.g. {first['instance_id']} of {first['model']}); every sweep records vanilla"
        )
    kind = float if is_continuous(df) else bool
    merged["correct"] = merged["correct"].astype(kind)
    merged["vanilla_correct"] = merged["vanilla_correct"].astype(kind)
    merged["source_layer"] = merged["source_layer"].astype("Int64")
    merged["target_layer"] = merged["target_layer"].astype("Int64")

    # Every configuration must cover exactly the vanilla instances of its group.
    # No duplicates and every row joined to a vanilla row, so equal counts mean equal sets.
    per_config = merged.groupby(list(CONFIG_KEYS)).size().rename("n").reset_index()
    vanilla_n = vanilla.groupby(list(VANILLA_KEYS)).size().rename("vanilla_n").reset_index()
    per_config = per_config.merge(vanilla_n, on=list(VANILLA_KEYS), how="left")
    short = per_config[per_config["n"] != per_config["vanilla_n"]]
    if not short.empty:
        r = short.iloc[0]
        raise XtlError(
            f"configuration {r['site']} ({r['source_layer']}, {r['target_layer']}) of "
            f"{r['model']} {r['benchmark']}/{r['split']}/{r['lang']} covers {r['n']} instances "
            f"but vanilla covers {r['vanilla_n']}; analyses need every configuration on the same "
            "instances (was the sweep interrupted?)"
        )
    return merged, vanilla


def _derive(ct: pd.DataFrame) -> pd.DataFrame:
    ct["accuracy"] = ct["correct"] / ct["n"]
    ct["vanilla_accuracy"] = ct["vanilla_correct"] / ct["n"]
    ct["gain"] = ct["accuracy"] - ct["vanilla_accuracy"]
    return ct


_COUNT_COLUMNS = ["n", "correct", "vanilla_correct", "gained", "lost"]


def _is_config_table(df: pd.DataFrame) -> bool:
    return "instance_id" not in df.columns and {"n", "correct", "vanilla_correct", "gained", "lost"} <= set(df.columns)


def config_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """One row per group and configuration: the counts and rates of spec section 5.

    Every function here that only needs these counts (grids, average performance,
    win/tie/lose, layer-wise gains, pair selection) also accepts this table in
    place of the results table, so a caller drawing many panels computes it once.

    Columns: model, site, benchmark, split, lang, n_layers, source_layer, target_layer,
    n (instances), correct (|C[i][j]|), vanilla_correct (|V|), gained (|C - V|),
    lost (|V - C|), accuracy, vanilla_accuracy, gain (accuracy - vanilla_accuracy).
    """
    df = with_metric(df, metric)
    if _is_config_table(df):
        return df.copy()
    merged, _ = _transplants_with_vanilla(df)
    return _config_counts(merged)


def _config_counts(merged: pd.DataFrame) -> pd.DataFrame:
    merged = merged.assign(
        gained=merged["correct"] > merged["vanilla_correct"],
        lost=merged["correct"] < merged["vanilla_correct"],
    )
    ct = (
        merged.groupby([*GROUP_KEYS, "n_layers", "source_layer", "target_layer"])
        .agg(
            n=("instance_id", "size"),
            correct=("correct", "sum"),
            vanilla_correct=("vanilla_correct", "sum"),
            gained=("gained", "sum"),
            lost=("lost", "sum"),
        )
        .reset_index()
    )
    ct["n_layers"] = ct["n_layers"].astype(int)
    for column in _COUNT_COLUMNS:
        ct[column] = ct[column].astype(_count_type(merged, column))
    return _derive(ct)


def _count_type(merged: pd.DataFrame, column: str) -> type:
    """int, or float for the sums of a continuous metric."""
    return float if column in ("correct", "vanilla_correct") and is_continuous(merged) else int


def _pool(ct: pd.DataFrame) -> pd.DataFrame:
    """Pool the languages of each (model, site, benchmark, split) by summing counts."""
    keys = ["model", "site", "benchmark", "split", "n_layers", "source_layer", "target_layer"]
    pooled = ct.groupby(keys)[_COUNT_COLUMNS].sum().reset_index()
    pooled["lang"] = POOLED
    pooled = pooled[[*GROUP_KEYS, "n_layers", "source_layer", "target_layer", *_COUNT_COLUMNS]]
    return _derive(pooled)


def _order(table: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Sort by group with each group's POOLED row last."""
    table = table.assign(_pooled=table["lang"] == POOLED)
    by = ["model", "site", "benchmark", "split", "_pooled", "lang", *extra]
    present = [c for c in by if c in table.columns]
    return table.sort_values(present, kind="stable").drop(columns="_pooled").reset_index(drop=True)


def _with_pooled(ct: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([ct, _pool(ct)], ignore_index=True)


def _one_group(
    df: pd.DataFrame,
    *,
    model: FilterValue,
    site: FilterValue,
    benchmark: FilterValue,
    split: FilterValue,
    lang: FilterValue,
    pooled: bool,
) -> pd.DataFrame:
    """The config_table rows of exactly one group (languages pooled when asked)."""
    rows = filter_rows(df, model=model, site=site, benchmark=benchmark, split=split, lang=lang)
    ct = config_table(rows)
    for key in ("model", "site", "benchmark", "split"):
        _require_one(ct, key)
    langs = _values(ct["lang"])
    if pooled:
        return _pool(ct)
    if len(langs) > 1:
        raise XtlError(
            f"the results table holds {len(langs)} languages ({', '.join(langs)}); "
            "choose one with lang='...' or pool them with pooled=True"
        )
    return ct


# --------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------


def _grid(ct: pd.DataFrame, value: str) -> pd.DataFrame:
    n = int(ct["n_layers"].iloc[0])
    grid = ct.pivot(index="source_layer", columns="target_layer", values=value).astype(float)
    grid.index = grid.index.astype(int)
    grid.columns = grid.columns.astype(int)
    grid = grid.reindex(index=range(n), columns=range(n))
    grid.index.name = "source_layer"
    grid.columns.name = "target_layer"
    return grid


def accuracy_grid(
    df: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
    pooled: bool = False,
    metric: str = "accuracy",
) -> pd.DataFrame:
    """`acc[i][j]` as an N x N DataFrame: index `source_layer`, columns `target_layer`; NaN where not run."""
    df = with_metric(df, metric)
    ct = _one_group(df, model=model, site=site, benchmark=benchmark, split=split, lang=lang, pooled=pooled)
    return _grid(ct, "accuracy")


def gain_grid(
    df: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
    pooled: bool = False,
    metric: str = "accuracy",
) -> pd.DataFrame:
    """`acc[i][j] - |V|/n` as an N x N DataFrame: index `source_layer`, columns `target_layer`
    (for a continuous `metric`, its mean under (i, j) minus its mean under vanilla)."""
    df = with_metric(df, metric)
    ct = _one_group(df, model=model, site=site, benchmark=benchmark, split=split, lang=lang, pooled=pooled)
    return _grid(ct, "gain")


GRID_VALUES: tuple[str, ...] = ("accuracy", "gain", "correct", "gained", "lost", "n")


def configuration_grids(
    df: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
    pooled: bool = False,
    metric: str = "accuracy",
) -> dict[str, pd.DataFrame]:
    """Every N x N grid of one group at once: accuracy, gain, correct, gained, lost, n (NaN where not run)."""
    df = with_metric(df, metric)
    ct = _one_group(df, model=model, site=site, benchmark=benchmark, split=split, lang=lang, pooled=pooled)
    return {value: _grid(ct, value) for value in GRID_VALUES}


def count_grid(
    df: pd.DataFrame,
    column: Literal["correct", "gained", "lost", "n"],
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
    pooled: bool = False,
) -> pd.DataFrame:
    """A count of config_table (`correct`, `gained`, `lost`, `n`) as an N x N grid (float, NaN where not run)."""
    if column not in ("correct", "gained", "lost", "n"):
        raise XtlError(f"count_grid column {column!r} is not one of correct, gained, lost, n")
    ct = _one_group(df, model=model, site=site, benchmark=benchmark, split=split, lang=lang, pooled=pooled)
    return _grid(ct, column)


# --------------------------------------------------------------------------
# Tidy tables over every group
# --------------------------------------------------------------------------


def average_performance(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mean accuracy of all configurations run against vanilla, per group and pooled.

    Columns: model, site, benchmark, split, lang, n_layers, n (instances),
    n_configurations, average, vanilla, difference (average - vanilla). The POOLED
    row divides the correct answers of all configurations and languages by their
    instances (the public code's "rate"); per language that is the plain mean of acc[i][j].
    """
    df = with_metric(df, metric)
    ct = _with_pooled(config_table(df))
    out = (
        ct.groupby(list(GROUP_KEYS))
        .agg(
            n_layers=("n_layers", "first"),
            n=("n", "max"),
            n_configurations=("n", "size"),
            correct=("correct", "sum"),
            vanilla_correct=("vanilla_correct", "sum"),
            n_total=("n", "sum"),
        )
        .reset_index()
    )
    out["average"] = out["correct"] / out["n_total"]
    out["vanilla"] = out["vanilla_correct"] / out["n_total"]
    out["difference"] = out["average"] - out["vanilla"]
    out = out.drop(columns=["correct", "vanilla_correct", "n_total"])
    return _order(out)


def win_tie_lose(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Win/tie/lose of every configuration against vanilla, per language and over configurations x languages.

    Columns: model, site, benchmark, split, lang, wins, ties, losses, total, win,
    tie, lose (rates, summing to 1). A configuration wins for a language when it
    gets more instances right than vanilla. The POOLED row counts every
    (configuration, language) pair of the group.
    """
    df = with_metric(df, metric)
    ct = config_table(df)
    ct["wins"] = (ct["correct"] > ct["vanilla_correct"]).astype(int)
    ct["ties"] = (ct["correct"] == ct["vanilla_correct"]).astype(int)
    ct["losses"] = (ct["correct"] < ct["vanilla_correct"]).astype(int)
    per_lang = ct.groupby(list(GROUP_KEYS))[["wins", "ties", "losses"]].sum().reset_index()
    pooled = ct.groupby(["model", "site", "benchmark", "split"])[["wins", "ties", "losses"]].sum().reset_index()
    pooled["lang"] = POOLED
    out = pd.concat([per_lang, pooled[per_lang.columns]], ignore_index=True)
    out["total"] = out["wins"] + out["ties"] + out["losses"]
    for count, rate in (("wins", "win"), ("ties", "tie"), ("losses", "lose")):
        out[rate] = out[count] / out["total"]
    return _order(out)


def layerwise_gains(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mean gain per source layer (over target layers) and per target layer (over source layers).

    Long table: model, site, benchmark, split, lang, axis ("source" or "target"),
    layer, gain, n_configurations (the configurations averaged). POOLED rows
    average the gains of the language-pooled grid.
    """
    df = with_metric(df, metric)
    ct = _with_pooled(config_table(df))
    parts = []
    for axis, column in (("source", "source_layer"), ("target", "target_layer")):
        part = (
            ct.groupby([*GROUP_KEYS, column])
            .agg(gain=("gain", "mean"), n_configurations=("gain", "size"))
            .reset_index()
            .rename(columns={column: "layer"})
        )
        part.insert(len(GROUP_KEYS), "axis", axis)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["layer"] = out["layer"].astype(int)
    return _order(out, extra=["axis", "layer"])


def _upper_bound_counts(merged: pd.DataFrame) -> pd.DataFrame:
    """Counts behind the upper bounds, per group and language (not pooled), from `_transplants_with_vanilla`."""
    keys = [*GROUP_KEYS, "n_layers"]
    parts = []
    for scope, layer_column in (("overall", None), ("source", "source_layer"), ("target", "target_layer")):
        by = keys + ([layer_column] if layer_column else [])
        per_instance = merged.groupby([*by, "instance_id"]).agg(
            hit=("correct", "max"), vanilla_correct=("vanilla_correct", "first")
        )  # (max: any, for accuracy; each instance's best value, for a continuous metric)
        per_instance["hit_with_vanilla"] = np.maximum(per_instance["hit"], per_instance["vanilla_correct"])
        counts = per_instance.groupby(by).agg(
            n=("hit", "size"),
            hits=("hit", "sum"),
            hits_with_vanilla=("hit_with_vanilla", "sum"),
            vanilla_correct=("vanilla_correct", "sum"),
        )
        counts = counts.reset_index()
        if layer_column:
            counts = counts.rename(columns={layer_column: "layer"})
        else:
            counts["layer"] = pd.NA
        counts.insert(len(keys), "scope", scope)
        parts.append(counts)
    out = pd.concat(parts, ignore_index=True)
    out["layer"] = out["layer"].astype("Int64")
    out["n"] = out["n"].astype(int)
    for column in ("hits", "hits_with_vanilla", "vanilla_correct"):
        out[column] = out[column].astype(float if is_continuous(merged) else int)
    return out


def _upper_bound_rates(counts: pd.DataFrame) -> pd.DataFrame:
    counts["upper_bound"] = counts["hits"] / counts["n"]
    counts["upper_bound_with_vanilla"] = counts["hits_with_vanilla"] / counts["n"]
    counts["vanilla"] = counts["vanilla_correct"] / counts["n"]
    return counts


def _pool_upper_bound_counts(counts: pd.DataFrame) -> pd.DataFrame:
    keys = ["model", "site", "benchmark", "split", "n_layers", "scope", "layer"]
    pooled = (
        counts.groupby(keys, dropna=False)[["n", "hits", "hits_with_vanilla", "vanilla_correct"]]
        .sum()
        .reset_index()
    )
    pooled["lang"] = POOLED
    return pooled[counts.columns]


def upper_bounds_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Instance-aware upper bounds of every group, per language and pooled by summing counts.

    Long table: model, site, benchmark, split, lang, n_layers, scope ("overall",
    "source" or "target"), layer (NA for overall), n, hits (instances right under
    some configuration of the scope), hits_with_vanilla (the same, with V in the
    union), vanilla_correct, upper_bound (hits / n), upper_bound_with_vanilla,
    vanilla (|V| / n). Only layers some configuration ran appear.
    """
    df = with_metric(df, metric)
    merged, _ = _transplants_with_vanilla(df)
    counts = _upper_bound_counts(merged)
    counts = pd.concat([counts, _pool_upper_bound_counts(counts)], ignore_index=True)
    scope_order = {"overall": 0, "source": 1, "target": 2}
    counts = counts.assign(_scope=counts["scope"].map(scope_order))
    counts = _order(counts, extra=["_scope", "layer"]).drop(columns="_scope")
    return _upper_bound_rates(counts)


@dataclass(frozen=True)
class UpperBounds:
    """Upper bounds of one group, as fractions in 0..1.

    `source_wise[i]` = |U_j C[i][j]| / n and `target_wise[j]` = |U_i C[i][j]| / n
    (Series indexed by layer 0..N-1, NaN for layers no configuration ran);
    `overall` = |U_ij C[i][j]| / n. The `*_with_vanilla` fields add V to each
    union (the public code does not). `vanilla` = |V| / n; `average` = mean
    accuracy of the configurations run (pooled by counts for pooled groups).
    """

    model: str
    site: str
    benchmark: str
    split: str
    lang: str
    n: int
    n_layers: int
    overall: float
    overall_with_vanilla: float
    source_wise: pd.Series
    source_wise_with_vanilla: pd.Series
    target_wise: pd.Series
    target_wise_with_vanilla: pd.Series
    vanilla: float
    average: float


def upper_bounds(
    df: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
    pooled: bool = False,
    metric: str = "accuracy",
) -> UpperBounds:
    """The upper bounds of one group (`pooled=True` sums the counts of several languages)."""
    df = with_metric(df, metric)
    rows = filter_rows(df, model=model, site=site, benchmark=benchmark, split=split, lang=lang)
    merged, _ = _transplants_with_vanilla(rows)  # once, for the counts and the average
    ct = _one_group(
        _config_counts(merged), model=None, site=None, benchmark=None, split=None, lang=None, pooled=pooled
    )
    counts = _upper_bound_counts(merged)
    if pooled:
        counts = _pool_upper_bound_counts(counts)
    counts = _upper_bound_rates(counts)
    n_layers = int(ct["n_layers"].iloc[0])
    overall = counts[counts["scope"] == "overall"].iloc[0]

    def per_layer(scope: str, column: str) -> pd.Series:
        part = counts[counts["scope"] == scope]
        series = pd.Series(part[column].to_numpy(float), index=part["layer"].astype(int).to_numpy())
        series = series.reindex(range(n_layers))
        series.index.name = f"{scope}_layer"
        series.name = column
        return series

    return UpperBounds(
        model=str(ct["model"].iloc[0]),
        site=str(ct["site"].iloc[0]),
        benchmark=str(ct["benchmark"].iloc[0]),
        split=str(ct["split"].iloc[0]),
        lang=str(ct["lang"].iloc[0]),
        n=int(overall["n"]),
        n_layers=n_layers,
        overall=float(overall["upper_bound"]),
        overall_with_vanilla=float(overall["upper_bound_with_vanilla"]),
        source_wise=per_layer("source", "upper_bound"),
        source_wise_with_vanilla=per_layer("source", "upper_bound_with_vanilla"),
        target_wise=per_layer("target", "upper_bound"),
        target_wise_with_vanilla=per_layer("target", "upper_bound_with_vanilla"),
        vanilla=float(overall["vanilla"]),
        average=float(ct["correct"].sum() / ct["n"].sum()),
    )


# --------------------------------------------------------------------------
# Choosing a configuration on one split and applying it to another
# --------------------------------------------------------------------------


def _best(ct: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Per group, the configuration with the most correct; ties: smallest j, then largest i."""
    if mode not in ("overall", "targetfirst"):
        raise XtlError(f"mode={mode!r} is not a pair selection mode; use 'overall' or 'targetfirst'")
    if mode == "targetfirst":
        ct = ct[ct["target_layer"] == 0]
    ranked = ct.sort_values(["correct", "target_layer", "source_layer"], ascending=[False, True, False], kind="stable")
    return ranked.groupby(list(GROUP_KEYS), sort=False).head(1)


def select_pair(
    df: pd.DataFrame,
    mode: PairMode = "overall",
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
) -> dict[str, tuple[int, int]]:
    """The chosen (source_layer, target_layer) per language of one model, site, benchmark and split.

    `overall`: the configuration with the most correct instances; `targetfirst`:
    the best source layer with the target layer fixed to 0. Ties go to the
    smallest target layer, then the largest source layer (the public code's rule).
    """
    rows = filter_rows(df, model=model, site=site, benchmark=benchmark, split=split, lang=lang)
    ct = config_table(rows)
    for key in ("model", "site", "benchmark", "split"):
        _require_one(ct, key)
    best = _best(ct, mode)
    missing = sorted(set(_values(ct["lang"])) - set(_values(best["lang"])))
    if missing:
        raise XtlError(
            f"no configuration with target layer 0 was run for {', '.join(missing)}; "
            "targetfirst needs the configurations (i, 0)"
        )
    return {
        str(r.lang): (int(r.source_layer), int(r.target_layer))
        for r in best.sort_values("lang").itertuples(index=False)
    }


def selected_pairs_table(df: pd.DataFrame, modes: Sequence[PairMode] = ("overall", "targetfirst")) -> pd.DataFrame:
    """The pair `select_pair` chooses for every group and mode, with its scores on the same table.

    Columns: model, site, benchmark, split, lang, mode, source_layer, target_layer,
    n, correct, accuracy, vanilla_accuracy, gain. Groups without a configuration
    (i, 0) have no targetfirst row.
    """
    ct = config_table(df)
    parts = []
    for mode in modes:
        best = _best(ct, mode).copy()
        best.insert(len(GROUP_KEYS), "mode", mode)
        parts.append(best)
    out = pd.concat(parts, ignore_index=True)
    columns = [*GROUP_KEYS, "mode", "source_layer", "target_layer", "n", "correct",
               "accuracy", "vanilla_accuracy", "gain"]  # fmt: skip
    out = out[columns]
    out = out.assign(_mode=out["mode"].map({m: k for k, m in enumerate(modes)}))
    return _order(out, extra=["_mode"]).drop(columns="_mode")


def apply_pair(
    df: pd.DataFrame,
    pairs: Mapping[str, tuple[int, int]],
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
) -> pd.DataFrame:
    """Score each language's chosen pair on (another split's) results, against vanilla there.

    `pairs` is what `select_pair` returns. One row per language of `pairs` plus a
    POOLED row (counts summed; its layers NA). Columns: lang, source_layer,
    target_layer, n, correct, accuracy, vanilla_correct, vanilla_accuracy, gain,
    gained, lost.
    """
    rows = filter_rows(df, model=model, site=site, benchmark=benchmark, split=split, lang=list(pairs))
    ct = config_table(rows)
    for key in ("model", "site", "benchmark", "split"):
        _require_one(ct, key)
    chosen = []
    for lang, (source_layer, target_layer) in pairs.items():
        hit = ct[(ct["lang"] == lang) & (ct["source_layer"] == source_layer) & (ct["target_layer"] == target_layer)]
        if hit.empty:
            raise XtlError(
                f"the results for {lang} do not include configuration ({source_layer}, {target_layer}); "
                "run the chosen pair on this split first"
            )
        chosen.append(hit)
    out = pd.concat(chosen, ignore_index=True)
    total = out[_COUNT_COLUMNS].sum()
    pooled = pd.DataFrame([{"lang": POOLED, "source_layer": pd.NA, "target_layer": pd.NA, **total.to_dict()}])
    out = pd.concat([out[["lang", "source_layer", "target_layer", *_COUNT_COLUMNS]], pooled], ignore_index=True)
    out["source_layer"] = out["source_layer"].astype("Int64")
    out["target_layer"] = out["target_layer"].astype("Int64")
    for column in _COUNT_COLUMNS:
        out[column] = out[column].astype(int)
    out = _derive(out)
    return out[["lang", "source_layer", "target_layer", "n", "correct", "accuracy", "vanilla_correct",
                "vanilla_accuracy", "gain", "gained", "lost"]]  # fmt: skip


# --------------------------------------------------------------------------
# Instances and run metadata
# --------------------------------------------------------------------------


def flips(
    df: pd.DataFrame,
    site: str,
    source_layer: int,
    target_layer: int,
    *,
    model: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
) -> pd.DataFrame:
    """The instances configuration (site, source_layer, target_layer) flips against vanilla.

    `lang=None` lists every language. Columns: lang, instance_id, source, target,
    gold, vanilla_text, transplant_text, direction ("gained": vanilla wrong,
    transplant right; "lost": the reverse). Gained first, then in table order.
    """
    rows = filter_rows(df, model=model, site=site, benchmark=benchmark, split=split, lang=lang)
    merged, vanilla = _transplants_with_vanilla(rows)
    for key in ("model", "benchmark", "split"):
        _require_one(merged, key)
    n_layers = int(merged["n_layers"].iloc[0])
    for name, layer in (("source_layer", source_layer), ("target_layer", target_layer)):
        if not 0 <= int(layer) < n_layers:
            raise XtlError(f"{name}={layer} is outside the model's layers 0..{n_layers - 1}")
    config = merged[(merged["source_layer"] == source_layer) & (merged["target_layer"] == target_layer)]
    if config.empty:
        raise XtlError(f"configuration {site} ({source_layer}, {target_layer}) is not in the results table")
    changed = config[config["correct"] != config["vanilla_correct"]]
    vkeys = [*VANILLA_KEYS, "instance_id"]
    texts = vanilla[[*vkeys, "text"]].rename(columns={"text": "vanilla_text"})
    out = changed.merge(texts, on=vkeys, how="left")
    out["transplant_text"] = out["text"]
    out["direction"] = np.where(out["correct"], "gained", "lost")
    gold = out["gold"] if "gold" in out.columns else pd.Series(pd.NA, index=out.index)
    source = out["source"] if "source" in out.columns else pd.Series(pd.NA, index=out.index)
    target = out["target"] if "target" in out.columns else pd.Series(pd.NA, index=out.index)
    out = out.assign(gold=gold, source=source, target=target)
    out = out.sort_values("direction", key=lambda s: s.map({"gained": 0, "lost": 1}), kind="stable")
    columns = ["lang", "instance_id", "source", "target", "gold", "vanilla_text", "transplant_text", "direction"]
    return out[columns].reset_index(drop=True)


def run_summary(df: pd.DataFrame) -> pd.DataFrame:
    """What the table holds, one row per (model, benchmark, split).

    Columns: model, model_fingerprint, n_layers, benchmark, split, run_ids,
    languages, sites (comma-separated), n_instances, n_configurations (distinct
    (site, i, j)), max_new_tokens, dtype, scored (every row has a gold answer).
    """
    _check_columns(df)
    out = []
    for (model, benchmark, split), part in df.groupby(["model", "benchmark", "split"], sort=True):
        transplants = part[part["site"].notna()]
        configs = transplants[["site", "source_layer", "target_layer"]].drop_duplicates()

        def joined(column: str, frame: pd.DataFrame = part) -> str:
            return ", ".join(_values(frame[column])) if column in frame.columns else ""

        out.append(
            {
                "model": model,
                "model_fingerprint": joined("model_fingerprint"),
                "n_layers": int(part["n_layers"].iloc[0]),
                "benchmark": benchmark,
                "split": split,
                "run_ids": joined("run_id"),
                "languages": joined("lang"),
                "sites": joined("site", transplants),
                "n_instances": int(part["instance_id"].nunique()),
                "n_configurations": len(configs),
                "max_new_tokens": joined("max_new_tokens") if "max_new_tokens" in part.columns else "",
                "dtype": joined("dtype"),
                "scored": bool(part["correct"].notna().all()),
            }
        )
    return pd.DataFrame(out)


def scored_groups(df: pd.DataFrame) -> pd.DataFrame:
    """The distinct (model, site, benchmark, split) groups whose rows all have gold answers.

    Columns: model, site, benchmark, split, n_layers, languages (list), scored (bool).
    Unscored groups are listed with scored False so a report can say so.
    """
    _check_columns(df)
    transplants = df[df["site"].notna()]
    out = []
    vanilla_rows = df[df["site"].isna()]
    for (model, site, benchmark, split), part in transplants.groupby(["model", "site", "benchmark", "split"]):
        same = (vanilla_rows["model"] == model) & (vanilla_rows["benchmark"] == benchmark)
        vanilla = vanilla_rows[same & (vanilla_rows["split"] == split)]
        scored = bool(part["correct"].notna().all() and vanilla["correct"].notna().all())
        out.append(
            {
                "model": model,
                "site": site,
                "benchmark": benchmark,
                "split": split,
                "n_layers": int(part["n_layers"].iloc[0]),
                "languages": _values(part["lang"]),
                "scored": scored,
            }
        )
    return pd.DataFrame(out, columns=["model", "site", "benchmark", "split", "n_layers", "languages", "scored"])


# --------------------------------------------------------------------------
# Effects with confidence intervals
# --------------------------------------------------------------------------

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


def paired_bootstrap(
    values: Sequence[float] | np.ndarray,
    reference: Sequence[float] | np.ndarray,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(mean of values - reference, and its 95% percentile interval): the
    instances resampled with replacement, the same resample for both (paired),
    `samples` times with a fixed seed."""
    difference = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    n = len(difference)
    if n == 0:
        return (np.nan, np.nan, np.nan)
    draws = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    means = difference[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(difference.mean()), float(low), float(high)


def average_effect(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """The effect of transplanting at all, free of any choice of configuration:
    per instance, the metric's mean over every configuration run minus its
    vanilla value; per group and pooled over languages, the mean of that and
    its 95% paired bootstrap interval.

    Columns: model, site, benchmark, split, lang, n, n_configurations, vanilla
    (mean), average (mean over configurations), effect (average - vanilla),
    ci_low, ci_high."""
    merged, _ = _transplants_with_vanilla(with_metric(df, metric))
    per_instance = (
        merged.groupby([*GROUP_KEYS, "instance_id"])
        .agg(average=("correct", "mean"), vanilla=("vanilla_correct", "first"), n_configurations=("correct", "size"))
        .reset_index()
    )
    pooled = per_instance.assign(lang=POOLED)
    rows = []
    for key, part in pd.concat([per_instance, pooled]).groupby(list(GROUP_KEYS), sort=False):
        effect, low, high = paired_bootstrap(part["average"].to_numpy(float), part["vanilla"].to_numpy(float))
        rows.append({
            **dict(zip(GROUP_KEYS, key)), "n": len(part), "n_configurations": int(part["n_configurations"].max()),
            "vanilla": float(part["vanilla"].astype(float).mean()), "average": float(part["average"].mean()),
            "effect": effect, "ci_low": low, "ci_high": high,
        })  # fmt: skip
    return _order(pd.DataFrame(rows))
