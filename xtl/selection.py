"""Instance-aware configuration selection: pick, per instance, which answer to trust.

The paper's central gap: the instance-aware upper bound (some configuration
answers the instance correctly) lies far above vanilla and above any one fixed
configuration. A **selector** closes part of that gap without looking at gold
answers: it maps the rows of one instance (its vanilla row and the row of every
configuration of one site) to one chosen row.

    candidates of one instance        selector            chosen row
    vanilla, (0,0), (0,1), ...   ──────────────────▶   e.g. (3, 5)

Built in (`SELECTORS` lists the names; `selector("...")` parses one):

- `vanilla`, `fixed(i,j)`: references;
- `best_fixed`: the pair `xtl.analysis.select_pair` chooses on the training
  split (the PilotSet), per language, applied to the evaluated split;
- `max_confidence(SIGNAL)`: the most confident row (`first_entropy` counts as
  confidence when low);
- `vote` / `vote(SIGNAL)`: the answer the most rows give, compared after the
  benchmark's own normalisation (`xtl.datasets.answer_key`: the option or
  letter named, else the normalised text); ties go to the most confident row,
  or without a signal to the first row in candidate order;
- `vanilla_unless(SIGNAL,THRESHOLD)`: vanilla, unless some configuration is more
  confident than vanilla by more than THRESHOLD; `vanilla_unless(SIGNAL)` picks
  the threshold that does best on the training split;
- `learned` / `learned(SIGNAL,...)`: a logistic regression on the signals and the
  layer pair, fit on the training split's rows (label: the row is correct) and
  choosing the row with the highest predicted probability on the evaluated one.

The **candidate order**, which breaks every remaining tie, is vanilla first,
then the smallest target layer, then the largest source layer (the public
code's tie rule for pairs).

The confidence **signals** are columns of the results table, one float per row:
`mean_logprob`, `min_logprob` (over the generated tokens), `first_logprob`,
`first_margin` (top-1 minus top-2 logit) and `first_entropy` of the first
generated token. Runs made before xtl recorded them have them null; the
selectors that need them then say so (`XtlError`).

`evaluate(table, selectors, train=)` scores every selector per (model, site,
benchmark, split, language) and pooled over languages, next to vanilla, the
best fixed pair and the **upper bound** (the oracle: an instance counts when any
candidate, vanilla included, is right), with `gap_closed` = (accuracy -
vanilla) / (upper bound - vanilla). Selectors never see `gold` or `correct` of
the evaluated table: those columns are dropped before a selector is called.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xtl import analysis
from xtl.analysis import GROUP_KEYS, POOLED, paired_bootstrap
from xtl.datasets import REGISTRY, answer_key
from xtl.errors import XtlError
from xtl.signals import ALL_SIGNALS, OPTION_SIGNALS, SIGNALS

LOW_IS_CONFIDENT: frozenset[str] = frozenset({"first_entropy", "option_entropy"})
"""Signals where a smaller value means more confident."""

SELECTORS: tuple[str, ...] = (
    "vanilla",
    "fixed(I,J)",
    "best_fixed",
    "max_confidence(SIGNAL)",
    "vote",
    "vote(SIGNAL)",
    "vanilla_unless(SIGNAL[,THRESHOLD])",
    "learned[(SIGNAL,...)]",
)
"""The built-in selectors, as `selector()` parses them."""

UPPER_BOUND = "upper_bound"



def answer_rules() -> dict[str, tuple[str, tuple[str, ...]]]:
    """How `vote` compares each benchmark's answers, (scorer, options), from the registry
    (`xtl.datasets.REGISTRY`). Other benchmarks (pairs files) compare the normalised text."""
    return {name: (benchmark.scorer, benchmark.options) for name, benchmark in REGISTRY.items()}


_INSTANCE = [*GROUP_KEYS, "instance_id"]
# what a selector never sees of the evaluated table
_HIDDEN = ("gold", "correct", "gold_option", "gold_logprob", "gold_margin")


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidates:
    """The rows selectors choose from, one block per instance and site.

    `rows`: the vanilla row (repeated for each site of its group) and every
    configuration row, sorted by group, instance and candidate order, with
    `is_vanilla`, `instance` (an integer per (group, instance)) and every
    signal column (NaN where absent); `gold` and `correct` removed. `correct`:
    whether each row is right (a bool array aligned with `rows`).
    """

    rows: pd.DataFrame
    correct: np.ndarray

    def subset(self, keep: np.ndarray) -> "Candidates":
        rows = self.rows[keep].reset_index(drop=True)
        rows["instance"] = rows.groupby(_INSTANCE, sort=False).ngroup().to_numpy()
        return Candidates(rows, self.correct[keep])


def option_signals(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with the OPTION_SIGNALS columns, from `option_logprobs` (NaN where a row has none)."""
    logprobs = rows["option_logprobs"] if "option_logprobs" in rows.columns else pd.Series(None, index=rows.index, dtype=object)

    def signals(values) -> tuple[float, float, float]:
        if values is None or (isinstance(values, float) and math.isnan(values)) or len(values) == 0:
            return (np.nan, np.nan, np.nan)
        ordered = np.sort(np.asarray(values, dtype=float))[::-1]
        shifted = ordered - ordered[0]
        p = np.exp(shifted) / np.exp(shifted).sum()
        entropy = float(-(p * np.log(np.where(p > 0, p, 1))).sum())
        return (float(ordered[0] - ordered[1]) if len(ordered) > 1 else np.nan, float(ordered[0]), entropy)

    values = np.array([signals(v) for v in logprobs], dtype=float).reshape(len(rows), 3)
    return rows.assign(**{name: values[:, k] for k, name in enumerate(OPTION_SIGNALS)})


def candidates(table: pd.DataFrame, metric: str = "accuracy") -> Candidates:
    """The candidates of a results table: each instance's vanilla row with every configuration of each site.
    `metric` (`xtl.analysis.METRICS`): what `Candidates.correct` holds (a float for a continuous one)."""
    table = option_signals(analysis.with_metric(table, metric))
    merged, vanilla = analysis._transplants_with_vanilla(table)  # validates: scored, complete, no duplicates
    sites = merged[["model", "benchmark", "split", "lang", "site"]].drop_duplicates()
    base = vanilla.drop(columns="site").merge(sites, on=["model", "benchmark", "split", "lang"], how="inner")
    base["is_vanilla"] = True
    configs = merged.drop(columns="vanilla_correct").assign(is_vanilla=False)
    rows = pd.concat([base, configs], ignore_index=True)
    for signal in ALL_SIGNALS:
        values = rows[signal] if signal in rows.columns else pd.Series(np.nan, index=rows.index)
        rows[signal] = pd.to_numeric(values, errors="coerce").astype(float)
    rows["source_layer"] = rows["source_layer"].astype("Int64")
    rows["target_layer"] = rows["target_layer"].astype("Int64")
    rows = _in_candidate_order(rows, _INSTANCE)
    correct = rows["correct"].astype(float if analysis.is_continuous(table) else bool).to_numpy()
    rows = rows.drop(columns=[c for c in _HIDDEN if c in rows.columns])
    rows["instance"] = rows.groupby(_INSTANCE, sort=False).ngroup().to_numpy()
    return Candidates(rows, correct)


def _in_candidate_order(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """`rows` sorted by `by`, then in candidate order: vanilla first, then by target layer,
    then the largest source layer first (the order ties go to)."""
    order = rows.assign(
        _v=~rows["is_vanilla"],
        _t=rows["target_layer"].fillna(-1).astype(int),
        _s=-rows["source_layer"].fillna(-1).astype(int),
    ).sort_values([*by, "_v", "_t", "_s"], kind="stable")
    return rows.loc[order.index].reset_index(drop=True)


def _first_best(instance: np.ndarray, keys: Sequence[np.ndarray]) -> np.ndarray:
    """Per instance (rows grouped and in candidate order), the position of the row with the largest keys.

    Keys are compared lexicographically, the first most significant; NaN counts as
    -inf; ties go to the earliest row.
    """
    position = np.arange(len(instance))
    cleaned = [np.nan_to_num(np.asarray(k, dtype=float), nan=-np.inf) for k in keys]
    # np.lexsort: the last key is the primary one.
    order = np.lexsort((position, *[-k for k in reversed(cleaned)], instance))
    first = np.ones(len(order), dtype=bool)
    first[1:] = instance[order][1:] != instance[order][:-1]
    return order[first]


# --------------------------------------------------------------------------- selectors


@dataclass
class Selector:
    """Maps each instance's candidate rows to one chosen row, without gold answers.

    Subclasses give `keys`: arrays aligned with the candidate rows, compared
    lexicographically per instance (largest wins; ties to candidate order).
    `fit` sees the training split's candidates, `correct` included.
    """

    name: str = field(init=False, default="selector")
    signals: tuple[str, ...] = field(init=False, default=())
    needs_train: bool = field(init=False, default=False)

    def fit(self, train: Candidates) -> "Selector":
        return self

    def keys(self, rows: pd.DataFrame) -> list[np.ndarray]:
        raise NotImplementedError

    def select(self, cands: Candidates) -> np.ndarray:
        """The position (in `cands.rows`) of the chosen row of every instance, in instance order."""
        for signal in self.signals:
            require_signal(cands.rows, signal, self.name)
        return _first_best(cands.rows["instance"].to_numpy(), self.keys(cands.rows))

    def choose(self, rows: pd.DataFrame) -> pd.Series:
        """The chosen row among the rows of one instance (its vanilla row and its configurations)."""
        if rows.empty:
            raise XtlError(f"{self.name}: no rows were given; pass the vanilla and configuration rows of one instance")
        rows = rows.drop(columns=[c for c in _HIDDEN if c in rows.columns]).reset_index(drop=True)
        ids = rows[[k for k in ("instance_id", "model", "benchmark", "lang") if k in rows.columns]].drop_duplicates()
        if len(ids) > 1:
            raise XtlError(f"{self.name}: the rows belong to {len(ids)} instances; pass the rows of one instance")
        rows = option_signals(rows.assign(is_vanilla=rows["site"].isna() if "site" in rows else rows["source_layer"].isna()))
        for signal in ALL_SIGNALS:
            if signal not in rows.columns:
                rows[signal] = np.nan
        rows = _in_candidate_order(rows, [])
        rows["instance"] = 0
        return rows.iloc[int(self.select(Candidates(rows, np.zeros(len(rows), bool)))[0])]


def confidence(rows: pd.DataFrame, signal: str) -> np.ndarray:
    """The signal as a confidence (larger = more confident): `first_entropy` negated."""
    values = rows[signal].to_numpy(dtype=float)
    return -values if signal in LOW_IS_CONFIDENT else values


def require_signal(rows: pd.DataFrame, signal: str, who: str) -> None:
    if signal not in ALL_SIGNALS:
        raise XtlError(f"{signal!r} is not a confidence signal; use one of {', '.join(ALL_SIGNALS)}")
    if signal not in rows.columns or rows[signal].isna().all():
        raise XtlError(
            f"{who} needs the {signal} column, which is null in every row of this table (a run made before "
            "xtl recorded confidence signals); sweep again, or use a signal-free selector (vanilla, fixed, "
            "best_fixed, vote)"
        )


def has_signals(table: pd.DataFrame, signals: Sequence[str] = ALL_SIGNALS) -> bool:
    """Whether any row holds one of `signals` (default: any; the option signals come
    from a scoring run's option log-probabilities)."""
    columns = {"option_logprobs" if s in OPTION_SIGNALS else s for s in signals}
    return any(c in table.columns and table[c].notna().any() for c in columns)


@dataclass
class Vanilla(Selector):
    def __post_init__(self) -> None:
        self.name = "vanilla"

    def keys(self, rows: pd.DataFrame) -> list[np.ndarray]:
        return [rows["is_vanilla"].to_numpy(float)]


@dataclass
class Fixed(Selector):
    source_layer: int = 0
    target_layer: int = 0

    def __post_init__(self) -> None:
        self.name = f"fixed({self.source_layer},{self.target_layer})"

    def keys(self, rows: pd.DataFrame) -> list[np.ndarray]:
        hit = _is_pair(rows, self.source_layer, self.target_layer)
        _require_everywhere(rows, hit, f"configuration ({self.source_layer}, {self.target_layer})", self.name)
        return [hit.astype(float)]


def _is_pair(rows: pd.DataFrame, source_layer: int, target_layer: int) -> np.ndarray:
    return (
        (rows["source_layer"] == source_layer) & (rows["target_layer"] == target_layer)
    ).to_numpy(dtype=bool, na_value=False)


def _require_everywhere(rows: pd.DataFrame, hit: np.ndarray, what: str, who: str) -> None:
    covered = pd.Series(hit).groupby(rows["instance"].to_numpy()).any()
    if not covered.all():
        missing = rows.loc[rows["instance"] == covered.index[~covered.to_numpy()][0]].iloc[0]
        raise XtlError(
            f"{who}: {what} was not run for {missing['model']} {missing['site']} "
            f"{missing['benchmark']}/{missing['split']}/{missing['lang']}; sweep it on this split first"
        )


@dataclass
class BestFixed(Selector):
    """The pair `xtl.analysis.select_pair` (mode `overall`) chooses per language on the training split."""

    mode: str = "overall"
    pairs: dict[tuple[str, str, str, str], tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = "best_fixed"
        self.needs_train = True

    def fit(self, train: Candidates) -> "BestFixed":
        table = _as_table(train)
        self.pairs = {}
        for (model, site, benchmark, split), _ in table[table["site"].notna()].groupby(
            ["model", "site", "benchmark", "split"], sort=True
        ):
            chosen = analysis.select_pair(table, self.mode, model=model, site=site, benchmark=benchmark, split=split)
            for lang, pair in chosen.items():
                self.pairs[(model, site, benchmark, lang)] = pair
        return self

    def keys(self, rows: pd.DataFrame) -> list[np.ndarray]:
        hit = np.zeros(len(rows), dtype=bool)
        for (model, site, benchmark, lang), part in rows.groupby(["model", "site", "benchmark", "lang"], sort=True):
            pair = self.pairs.get((model, site, benchmark, lang))
            if pair is None:
                raise XtlError(
                    f"best_fixed: the training split has no rows of {model} {site} {benchmark} {lang}; "
                    "sweep that language on the PilotSet too"
                )
            index = part.index.to_numpy()
            hit[index] = _is_pair(part, *pair)
        _require_everywhere(rows, hit, "the pair chosen on the training split", self.name)
        return [hit.astype(float)]


@dataclass
class MaxConfidence(Selector):
    signal: str = "mean_logprob"

    def __post_init__(self) -> None:
        self.name = f"max_confidence({self.signal})"
        self.signals = (self.signal,)

    def keys(self, rows: pd.DataFrame) -> list[np.ndarray]:
        return [confidence(rows, self.signal)]


@dataclass
class Vote(Selector):
    """The answer most rows give; ties to the most confident row (`signal`) or to candidate order."""

    signal: str | None = None
    answer_rules: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=answer_rules)

    def __post_init__(self) -> None:
        self.name = "vote" if self.signal is None else f"vote({self.signal})"
        self.signals = () if self.signal is None else (self.signal,)

    def keys(self, rows: pd.DataFrame) -> list[np.ndarray]:
        keys = answer_keys(rows, self.answer_rules)
        frame = pd.DataFrame({"instance": rows["instance"].to_numpy(), "key": keys})
        counts = frame.groupby(["instance", "key"], dropna=True)["key"].transform("size")
        votes = counts.fillna(0).to_numpy(float)  # rows that name no answer get no votes
        tie = np.zeros(len(rows)) if self.signal is None else confidence(rows, self.signal)
        return [votes, tie]


def answer_keys(rows: pd.DataFrame, rules: Mapping[str, tuple[str, tuple[str, ...]]] | None = None) -> pd.Series:
    """Each row's answer after its benchmark's normalisation (`xtl.datasets.answer_key`); None: no answer."""
    rules = answer_rules() if rules is None else rules
    out = []
    for benchmark, text in zip(rows["benchmark"], rows["text"], strict=True):
        scorer, options = rules.get(benchmark, ("span", ()))
        out.append(answer_key(str(text), scorer, options))
    return pd.Series(out, index=rows.index, dtype=object)


@dataclass
class VanillaUnless(Selector):
    """Vanilla, unless a configuration's confidence exceeds vanilla's by more than `threshold`.

    `threshold=None`: fit chooses it on the training split (the value, among the
    observed confidence differences, with the most correct answers; ties: the largest).
    """

    signal: str = "mean_logprob"
    threshold: float | None = 0.0

    def __post_init__(self) -> None:
        self._fit_threshold = self.threshold is None
        self.needs_train = self._fit_threshold
        self.signals = (self.signal,)
        self._name()

    def _name(self) -> None:
        shown = "fit" if self.threshold is None else f"{self.threshold:g}"
        self.name = f"vanilla_unless({self.signal},{shown})"

    def keys(self, rows: pd.DataFrame) -> list[np.ndarray]:
        if self.threshold is None:
            raise XtlError(f"{self.name}: the threshold is fit on a training split; pass train= (--train)")
        conf = confidence(rows, self.signal)
        return [np.where(rows["is_vanilla"].to_numpy(bool), conf + self.threshold, conf)]

    def fit(self, train: Candidates) -> "VanillaUnless":
        if not self._fit_threshold:
            return self
        rows = train.rows
        require_signal(rows, self.signal, self.name)
        conf = np.nan_to_num(confidence(rows, self.signal), nan=-np.inf)
        best_config = _first_best(rows["instance"].to_numpy(), [np.where(rows["is_vanilla"], -np.inf, conf)])
        vanilla_pos = _first_best(rows["instance"].to_numpy(), [rows["is_vanilla"].to_numpy(float)])
        margin = conf[best_config] - conf[vanilla_pos]  # per instance: how much more confident the best config is
        gain = train.correct[best_config].astype(int) - train.correct[vanilla_pos].astype(int)
        finite = np.isfinite(margin)
        # switching when margin > t: candidates t in {-inf} U margins; keep the best, ties -> largest t (closest to vanilla)
        observed = np.unique(margin[finite])
        thresholds = np.concatenate([[np.inf], observed, observed[:1] - 1.0])
        scores = [int(gain[finite & (margin > t)].sum()) for t in thresholds]
        best = max(range(len(thresholds)), key=lambda k: (scores[k], thresholds[k]))
        self.threshold = float(thresholds[best])
        self._name_fit()
        return self

    def _name_fit(self) -> None:
        self.name = f"vanilla_unless({self.signal},fit={self.threshold:.3g})"


@dataclass
class Learned(Selector):
    """Logistic regression P(row correct | signals, layer pair), fit on the training split.

    Features: each signal (standardised on the training rows; NaN -> the training
    mean), whether the row is vanilla, and one-hot source and target layers. One
    model per (model, site, benchmark), pooled over languages; L2 penalty `l2`.
    """

    signals_used: tuple[str, ...] = SIGNALS
    l2: float = 1.0
    weights: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray, np.ndarray, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.signals_used = tuple(self.signals_used)
        self.name = "learned" if self.signals_used == SIGNALS else f"learned({','.join(self.signals_used)})"
        self.signals = self.signals_used
        self.needs_train = True

    def _features(self, rows: pd.DataFrame, mean: np.ndarray, std: np.ndarray, n_layers: int) -> np.ndarray:
        values = rows[list(self.signals_used)].to_numpy(float)
        values = np.where(np.isnan(values), mean, values)
        is_vanilla = rows["is_vanilla"].to_numpy(bool)
        one_hot = np.zeros((len(rows), 2 * n_layers))
        where = ~is_vanilla
        source = rows["source_layer"].to_numpy(dtype=float, na_value=0).astype(int)
        target = rows["target_layer"].to_numpy(dtype=float, na_value=0).astype(int)
        one_hot[np.flatnonzero(where), source[where]] = 1.0
        one_hot[np.flatnonzero(where), n_layers + target[where]] = 1.0
        return np.column_stack([np.ones(len(rows)), (values - mean) / std, is_vanilla.astype(float), one_hot])

    def fit(self, train: Candidates) -> "Learned":
        rows = train.rows
        for signal in self.signals_used:
            require_signal(rows, signal, self.name)
        self.weights = {}
        for key, part in rows.groupby(["model", "site", "benchmark"], sort=True):
            values = part[list(self.signals_used)].to_numpy(float)
            mean = np.nanmean(values, axis=0)
            mean = np.where(np.isnan(mean), 0.0, mean)
            std = np.nanstd(values, axis=0)
            std = np.where((std > 0) & np.isfinite(std), std, 1.0)
            n_layers = int(part["n_layers"].iloc[0])
            x = self._features(part, mean, std, n_layers)
            y = train.correct[part.index.to_numpy()].astype(float)
            self.weights[key] = (_logistic_regression(x, y, self.l2), mean, std, n_layers)
        return self

    def keys(self, rows: pd.DataFrame) -> list[np.ndarray]:
        if not self.weights:
            raise XtlError(f"{self.name} is fit on a training split; pass train= (--train RUN_DIR)")
        score = np.full(len(rows), np.nan)
        for key, part in rows.groupby(["model", "site", "benchmark"], sort=True):
            if key not in self.weights:
                raise XtlError(
                    f"{self.name}: the training split has no rows of {' '.join(key)}; "
                    "train on a PilotSet of the same model, site and benchmark"
                )
            w, mean, std, n_layers = self.weights[key]
            if int(part["n_layers"].iloc[0]) != n_layers:
                raise XtlError(f"{self.name}: {key[0]} has {n_layers} layers in the training split but not here")
            score[part.index.to_numpy()] = self._features(part, mean, std, n_layers) @ w
        return [score]


def _logistic_regression(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
    """Weights minimising the mean log loss + l2/2 |w|^2 / n (intercept unpenalised), by Newton's method."""
    n, d = x.shape
    w = np.zeros(d)
    penalty = np.full(d, l2 / max(n, 1))
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) / n + penalty * w
        hess = (x * (p * (1 - p))[:, None]).T @ x / n + np.diag(penalty) + 1e-9 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w


# --------------------------------------------------------------------------- names


_CALL = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$")


def selector(name: str | Selector) -> Selector:
    """A selector from its name, e.g. `vote`, `fixed(3,5)`, `max_confidence(first_margin)`,
    `vanilla_unless(mean_logprob,0.5)`, `learned(mean_logprob,first_margin)` (see SELECTORS)."""
    if isinstance(name, Selector):
        return name
    match = _CALL.match(str(name))
    allowed = f"use one of {', '.join(SELECTORS)}; SIGNAL is one of {', '.join(ALL_SIGNALS)}"
    if not match:
        raise XtlError(f"selector {name!r} is not a selector name; {allowed}")
    kind, inside = match.group(1), match.group(2)
    args = [a.strip() for a in inside.split(",")] if inside is not None and inside.strip() else []

    def signal(value: str) -> str:
        if value not in ALL_SIGNALS:
            raise XtlError(f"selector {name!r}: {value!r} is not a confidence signal; use one of {', '.join(ALL_SIGNALS)}")
        return value

    def count(allowed_counts: Iterable[int]) -> None:
        if len(args) not in allowed_counts:
            raise XtlError(f"selector {name!r} has {len(args)} arguments; {allowed}")

    if kind in ("vanilla", "best_fixed"):
        count([0])
        return Vanilla() if kind == "vanilla" else BestFixed()
    if kind == "fixed":
        count([2])
        try:
            source_layer, target_layer = (int(a) for a in args)
        except ValueError:
            raise XtlError(f"selector {name!r}: fixed takes two layer numbers, e.g. fixed(3,5)") from None
        return Fixed(source_layer, target_layer)
    if kind == "max_confidence":
        count([1])
        return MaxConfidence(signal(args[0]))
    if kind == "vote":
        count([0, 1])
        return Vote(signal(args[0]) if args else None)
    if kind == "vanilla_unless":
        count([1, 2])
        threshold = None
        if len(args) == 2:
            try:
                threshold = float(args[1])
            except ValueError:
                raise XtlError(f"selector {name!r}: the threshold {args[1]!r} is not a number") from None
            if not math.isfinite(threshold):
                raise XtlError(f"selector {name!r}: the threshold must be a finite number")
        return VanillaUnless(signal(args[0]), threshold)
    if kind == "learned":
        return Learned(tuple(signal(a) for a in args) if args else SIGNALS)
    raise XtlError(f"unknown selector {name!r}; {allowed}")


def default_selectors(table: pd.DataFrame, train: pd.DataFrame | None = None) -> list[Selector]:
    """Every built-in selector the tables allow: the signal ones only when the signals are there,
    the trained ones only with a training split."""
    family = OPTION_SIGNALS if has_signals(table, OPTION_SIGNALS) else SIGNALS
    signals = has_signals(table, family) and (train is None or has_signals(train, family))
    first = "option_top_margin" if family == OPTION_SIGNALS else "mean_logprob"
    out: list[Selector] = [Vanilla()]
    if train is not None:
        out.append(BestFixed())
    if signals:
        out.append(Vote(first))
        out += [MaxConfidence(s) for s in family]
        out.append(VanillaUnless(first, None if train is not None else 0.0))
        if train is not None:
            out.append(Learned(family))
    else:
        out.append(Vote())
    return out


# --------------------------------------------------------------------------- evaluation


def _as_table(cands: Candidates) -> pd.DataFrame:
    """Candidates back as a results table (one vanilla row per instance, `correct` restored)."""
    rows = cands.rows.assign(correct=pd.array(cands.correct, dtype="boolean"))
    rows["site"] = rows["site"].where(~rows["is_vanilla"], None)
    rows = rows[~(rows["is_vanilla"] & rows.duplicated(["model", "benchmark", "split", "lang", "instance_id", "is_vanilla"]))]
    return rows.drop(columns=["instance", "is_vanilla"]).reset_index(drop=True)


def _fit(chosen: Sequence[Selector], train: Candidates | None) -> list[Selector]:
    for sel in chosen:
        if train is not None:
            sel.fit(train)
        elif sel.needs_train:
            raise XtlError(f"{sel.name} is fit on a training split (the PilotSet); pass train= (--train RUN_DIR)")
    return list(chosen)


def choices(table: pd.DataFrame, selector_: str | Selector, train: pd.DataFrame | None = None) -> pd.DataFrame:
    """The row a selector chooses for every instance of `table`, with `correct` (scored after choosing)."""
    cands = candidates(table)
    (sel,) = _fit([selector(selector_)], None if train is None else candidates(train))
    picked = sel.select(cands)
    out = cands.rows.iloc[picked].drop(columns="instance").reset_index(drop=True)
    out.insert(len(out.columns), "correct", cands.correct[picked])
    out.insert(0, "selector", sel.name)
    return out


def _summarise(cands: Candidates, chosen_correct: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per group and pooled: n, correct (or the sum of a continuous metric) of each
    selector, vanilla and the upper bound, gap closed, and each selector's
    difference from the reference (best_fixed, else vanilla) with its paired
    bootstrap interval."""
    rows = cands.rows
    instance = rows["instance"].to_numpy()
    keys = rows.groupby("instance", sort=True)[list(GROUP_KEYS)].first()
    best = pd.Series(cands.correct).groupby(instance).max().to_numpy()  # any right; or the best value
    vanilla_pos = _first_best(instance, [rows["is_vanilla"].to_numpy(float)])
    per_instance = keys.assign(_vanilla=cands.correct[vanilla_pos], _upper=best)
    names = list(chosen_correct)
    for k, name in enumerate(names):
        per_instance[f"_s{k}"] = chosen_correct[name]
    reference = "best_fixed" if "best_fixed" in names else "vanilla"
    value_columns = ["_vanilla", "_upper", *[f"_s{k}" for k in range(len(names))]]
    groups = [(dict(zip(GROUP_KEYS, key)), part) for key, part in per_instance.groupby(list(GROUP_KEYS))]
    pooled_keys = ["model", "site", "benchmark", "split"]
    groups += [({**dict(zip(pooled_keys, key)), "lang": POOLED}, part) for key, part in per_instance.groupby(pooled_keys)]
    out = []
    for where, part in groups:
        n = len(part)
        sums = part[value_columns].astype(float).sum()
        vanilla, upper = sums["_vanilla"] / n, sums["_upper"] / n
        ref = part[f"_s{names.index(reference)}"].to_numpy(float)
        entries = [*[(name, f"_s{k}") for k, name in enumerate(names)], (UPPER_BOUND, "_upper")]
        for name, column in entries:
            accuracy = sums[column] / n
            gap = upper - vanilla
            difference, low, high = paired_bootstrap(part[column].to_numpy(float), ref)
            out.append(
                {
                    **where,
                    "selector": name,
                    "n": n,
                    "correct": sums[column] if cands.correct.dtype.kind == "f" else int(sums[column]),
                    "accuracy": accuracy,
                    "vanilla_accuracy": vanilla,
                    "upper_bound": upper,
                    "gap_closed": (accuracy - vanilla) / gap if gap > 0 else np.nan,
                    "versus": reference,
                    "difference": difference,
                    "ci_low": low,
                    "ci_high": high,
                    "beats": bool(low > 0) if name != reference else False,
                }
            )
    table = pd.DataFrame(out)
    order = {name: k for k, name in enumerate([*names, UPPER_BOUND])}
    table = table.assign(_sel=table["selector"].map(order))
    return analysis._order(table, extra=["_sel"]).drop(columns="_sel")


def evaluate(
    table: pd.DataFrame,
    selectors: Sequence[str | Selector] | None = None,
    train: pd.DataFrame | None = None,
    metric: str = "accuracy",
) -> pd.DataFrame:
    """Accuracy of each selector on `table`, per group and pooled, against vanilla and the upper bound.

    `selectors`: names or `Selector`s (default: `default_selectors`). `train`: the
    results table of another split of the same models, sites, benchmarks and
    languages (the PilotSet): `best_fixed`, `learned` and a fitted
    `vanilla_unless` learn there and are scored here, on other instances.
    `vanilla` and `upper_bound` are always in, and `best_fixed` whenever `train` is given.

    One row per (model, site, benchmark, split, lang) and selector, with the
    language-pooled rows (`lang == "pooled"`, counts summed) after each group's
    languages. Columns: model, site, benchmark, split, lang, selector, n, correct,
    accuracy, vanilla_accuracy, upper_bound, gap_closed ((accuracy - vanilla) /
    (upper bound - vanilla); NaN when the upper bound equals vanilla), and
    against the reference `versus` (best_fixed when trained, else vanilla):
    `difference` (mean per instance of the selector's minus the reference's),
    `ci_low` / `ci_high` (its 95% paired bootstrap interval over the instances,
    BOOTSTRAP_SAMPLES resamples, a fixed seed) and `beats` (the interval lies above 0).

    `metric` (`xtl.analysis.METRICS`): what is measured of the chosen rows; with a
    continuous one (a scoring run's `gold_margin`, say) `correct` is the metric's
    sum and `accuracy` its mean. Selectors still never see the gold.
    """
    cands = candidates(table, metric)
    train_cands = None if train is None else candidates(train)
    if train_cands is not None:
        _check_train(cands, train_cands)
    chosen = default_selectors(table, train) if selectors is None else [selector(s) for s in selectors]
    names = [s.name for s in chosen]
    if "vanilla" not in names:
        chosen.insert(0, Vanilla())
    if train is not None and "best_fixed" not in [s.name for s in chosen]:
        chosen.insert(1, BestFixed())
    _fit(chosen, train_cands)
    results: dict[str, np.ndarray] = {}
    for sel in chosen:
        if sel.name in results:
            raise XtlError(f"selector {sel.name} was given twice; give each selector once")
        results[sel.name] = cands.correct[sel.select(cands)]
    return _summarise(cands, results)


def _check_train(cands: Candidates, train: Candidates) -> None:
    for column, what in (("benchmark", "benchmark"), ("model", "model"), ("site", "site")):
        evaluated, trained = set(cands.rows[column].dropna()), set(train.rows[column].dropna())
        if evaluated and trained and not evaluated & trained:
            raise XtlError(
                f"the training run is another {what} ({', '.join(sorted(map(str, trained)))}; the evaluated run: "
                f"{', '.join(sorted(map(str, evaluated)))}): train on a run of the same {what}, such as its PilotSet"
            )
    here = cands.rows[["model", "site", "benchmark", "split"]].drop_duplicates()
    there = train.rows[["model", "site", "benchmark", "split"]].drop_duplicates()
    same_split = here.merge(there, on=["model", "site", "benchmark", "split"])
    if not same_split.empty:
        r = same_split.iloc[0]
        shared = set(cands.rows["instance_id"]) & set(train.rows["instance_id"])
        if shared:
            raise XtlError(
                f"the training table and the evaluated table share {len(shared)} instances of "
                f"{r['benchmark']}/{r['split']}; train on the PilotSet (sample) and evaluate another split"
            )


def rank_configurations(train: pd.DataFrame) -> pd.DataFrame:
    """The configurations of each (model, site, benchmark, lang) ranked by training accuracy.

    Ties: smallest target layer, then largest source layer (`select_pair`'s rule).
    Columns: model, site, benchmark, lang, source_layer, target_layer, correct, rank (1 = best).
    """
    ct = analysis.config_table(train)
    ranked = ct.sort_values(
        ["model", "site", "benchmark", "lang", "correct", "target_layer", "source_layer"],
        ascending=[True, True, True, True, False, True, False],
        kind="stable",
    )
    ranked["rank"] = ranked.groupby(["model", "site", "benchmark", "lang"]).cumcount() + 1
    return ranked[["model", "site", "benchmark", "lang", "source_layer", "target_layer", "correct", "rank"]]


def evaluate_top_k(
    table: pd.DataFrame,
    train: pd.DataFrame,
    ks: Sequence[int] | None = None,
    selectors: Sequence[str | Selector] | None = None,
) -> pd.DataFrame:
    """`evaluate` when selectors may only try vanilla and the k best configurations of the training split.

    The configurations are ranked per (model, site, benchmark, lang) by
    `rank_configurations(train)`; for each k the candidates (here, and for
    fitting, in `train`) are vanilla and the configurations ranked 1..k. The
    rows with selector `upper_bound` are then the oracle among those k + 1 rows.
    `ks` default: 1, 2, 4, 8, ... up to all configurations. Columns: those of
    `evaluate` and `k`; the `upper_bound` column and `gap_closed` refer to the
    upper bound of all configurations, so the curves share one scale.
    """
    if train is None:
        raise XtlError("ranking the configurations needs a training split; pass train= (--train RUN_DIR)")
    ranks = rank_configurations(train)
    n_configs = int(ranks["rank"].max())
    if ks is None:
        ks = sorted({*(2**p for p in range(int(math.log2(n_configs)) + 1)), n_configs})
    bad = [k for k in ks if not isinstance(k, (int, np.integer)) or k < 1]
    if bad:
        raise XtlError(f"k={bad[0]!r} is not a number of configurations; give whole numbers from 1")
    cands = candidates(table)
    train_cands = candidates(train)
    _check_train(cands, train_cands)
    full = evaluate(table, [], train=None)  # the upper bound of all configurations, per group
    full_upper = full[full["selector"] == UPPER_BOUND].set_index(list(GROUP_KEYS))["upper_bound"]
    keys = ["model", "site", "benchmark", "lang", "source_layer", "target_layer"]
    parts = []
    for k in ks:
        allowed = ranks[ranks["rank"] <= k][keys].assign(_ok=True)
        chosen = [Vanilla(), *(selector(s) for s in (selectors or [Vote()]))]
        chosen = [sel for n, sel in enumerate(chosen) if sel.name not in [c.name for c in chosen[:n]]]
        here = _restrict(cands, allowed, keys)
        there = _restrict(train_cands, allowed, keys)
        _fit(chosen, there)
        results = {sel.name: here.correct[sel.select(here)] for sel in chosen}
        part = _summarise(here, results)
        part.insert(len(GROUP_KEYS), "k", int(k))
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    upper = out.set_index(list(GROUP_KEYS)).index.map(full_upper).to_numpy(float)
    out["upper_bound"] = upper
    gap = upper - out["vanilla_accuracy"].to_numpy(float)
    out["gap_closed"] = np.where(gap > 0, (out["accuracy"] - out["vanilla_accuracy"]) / np.where(gap > 0, gap, 1), np.nan)
    return out


def _restrict(cands: Candidates, allowed: pd.DataFrame, keys: list[str]) -> Candidates:
    rows = cands.rows[keys].merge(allowed, on=keys, how="left")
    keep = rows["_ok"].fillna(False).to_numpy(bool) | cands.rows["is_vanilla"].to_numpy(bool)
    return cands.subset(keep)
