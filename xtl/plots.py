"""Figures of a results table. Each function returns a `plotly.graph_objects.Figure`
and never shows or saves it; every number comes from `xtl.analysis`.

The selection keywords (`model=`, `site=`, `benchmark=`, `split=`, `lang=`) are
those of `xtl.analysis`. `facet=` names one key or several (e.g. `"model"`,
`("model", "site")`) to draw one panel per value present, side by side; every
other key must then hold one value after filtering.

Heatmap traces carry their group in `trace.meta` (model, site, benchmark,
split, langs, pooled) so that `xtl.explore` can list a clicked cell's instances.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xtl import analysis
from xtl.analysis import GROUP_KEYS, POOLED, Selector
from xtl.errors import XtlError

Facet = str | Sequence[str] | None

WIN_TIE_LOSE_COLORS = {"win": "#2c7fb8", "tie": "#bdbdbd", "lose": "#d7301f"}
GAIN_COLORSCALE = "RdBu"
_GROUP_WITHOUT_LANG = ("model", "site", "benchmark", "split")


def _facet_keys(facet: Facet, allowed: Sequence[str] = GROUP_KEYS) -> tuple[str, ...]:
    if facet is None:
        return ()
    keys = (facet,) if isinstance(facet, str) else tuple(facet)
    bad = [k for k in keys if k not in allowed]
    if bad:
        raise XtlError(f"facet={bad[0]!r} is not a key these panels can split by; use one of {', '.join(allowed)}")
    return keys


def _filters(
    model: Selector, site: Selector, benchmark: Selector, split: Selector, lang: Selector
) -> dict[str, Selector]:
    return {"model": model, "site": site, "benchmark": benchmark, "split": split, "lang": lang}


def _panels(df: pd.DataFrame, keys: tuple[str, ...], filters: dict[str, Selector]) -> list[dict[str, str]]:
    """One dict per combination of the facet keys present after filtering (sorted)."""
    transplants = _transplant_rows(df, filters)
    if transplants.empty:
        raise XtlError("the results table has no transplant rows for these filters; check model=, site=, lang=")
    if not keys:
        return [{}]
    combos = transplants[list(keys)].drop_duplicates().astype(str).sort_values(list(keys))
    return [dict(zip(keys, values, strict=True)) for values in combos.itertuples(index=False)]


def _transplant_rows(df: pd.DataFrame, filters: dict[str, Selector]) -> pd.DataFrame:
    rows = analysis.select(df, **filters)
    return rows[rows["site"].notna()]


def _common_title(df: pd.DataFrame, filters: dict[str, Selector], skip: Sequence[str]) -> str:
    """The values every panel shares, e.g. 'tiny-qwen2 · ffn · xnli/sample'."""
    transplants = _transplant_rows(df, filters)
    shared = {}
    for key in GROUP_KEYS:
        values = sorted(transplants[key].dropna().astype(str).unique())
        if key not in skip and len(values) == 1:
            shared[key] = values[0]
    if "benchmark" in shared and "split" in shared:
        shared["benchmark"] = f"{shared['benchmark']}/{shared.pop('split')}"
    return " · ".join(shared.values())


POOLED_LABEL = "all languages"  # the one name of the pooled group, in every figure and table


def lang_label(lang: str) -> str:
    return POOLED_LABEL if lang == POOLED else lang


def _label(panel: dict[str, str]) -> str:
    return " · ".join(lang_label(v) for v in panel.values())


def _stats(ct: pd.DataFrame, filters: dict[str, Selector], pooled: bool) -> dict[str, dict[str, tuple[int, float]]]:
    """(n, vanilla accuracy) per language of the selected group, and for POOLED (every language summed)."""
    average = analysis.average_performance(analysis.select(ct, **{k: v for k, v in filters.items() if k != "lang"}))
    langs = set(analysis.select(ct, **filters)["lang"].astype(str))
    keep = average["lang"].isin(langs | ({POOLED} if pooled or len(langs) > 1 else set()))
    return {row.lang: (int(row.n), float(row.vanilla)) for row in average[keep].itertuples()}


def _n_vanilla(n: int, vanilla: float, metric: str = "accuracy") -> str:
    value = f"{vanilla:.1%}" if analysis.metric_format(metric).endswith("%") else f"{vanilla:.3f}"
    return f"n = {n} · vanilla {value}"


def _all_wrong_note(ct: pd.DataFrame) -> str | None:
    """A note for a selection where no answer is right at all (every panel would be one flat colour)."""
    if len(ct) and not analysis.is_continuous(ct) and int(ct["correct"].sum()) == 0 and int(ct["vanilla_correct"].sum()) == 0:
        return "every answer is wrong, vanilla too (accuracy 0 everywhere): no gain to show"
    return None


def _subtitle(fig: go.Figure, text: str | None) -> None:
    if text:
        fig.update_layout(title_subtitle_text=text, title_subtitle_font_size=13)


def _share_title(label: str) -> str:
    """The axis title of an accuracy: of a greedy answer (generate runs) plainly, else saying which."""
    return "accuracy (share of n instances)" if label == "accuracy (greedy answer)" else f"{label.removesuffix(')')}, share of n instances)"


def _layer_dtick(n_layers: int) -> int:
    """Integer layer ticks: every layer for small models, every 2nd or 4th for large ones."""
    return 1 if n_layers <= 12 else 2 if n_layers <= 24 else 4


def _grid_shape(n_panels: int, columns: int) -> tuple[int, int]:
    cols = max(1, min(columns, n_panels))
    return -(-n_panels // cols), cols


# --------------------------------------------------------------------------- gain heatmap


def gain_heatmap(
    df: pd.DataFrame,
    *,
    model: Selector = None,
    site: Selector = None,
    benchmark: Selector = None,
    split: Selector = None,
    lang: Selector = None,
    pooled: bool = False,
    facet: Facet = None,
    columns: int = 4,
    metric: str = "accuracy",
) -> go.Figure:
    """The N x N gain heatmap (y: source layer i, x: target layer j), one panel per facet value.

    With `facet="lang"` and `pooled=True` the first panel pools every language.
    Hover: source and target layer, the metric, gain, instances gained and lost.
    `metric`: see `xtl.analysis.METRICS` (a scoring run's gold margin, ...).
    """
    label, fmt = analysis.metric_label(metric, df), analysis.metric_format(metric)
    df = analysis.with_metric(df, metric)
    filters = _filters(model, site, benchmark, split, lang)
    keys = _facet_keys(facet)
    ct = analysis.config_table(analysis.select(df, **filters))  # once; the panels pivot it
    panels = _panels(ct, keys, {})
    panel_specs: list[tuple[dict[str, str], dict[str, Selector], bool]] = []
    if "lang" in keys:
        if pooled:
            for combo in _panels(ct, tuple(k for k in keys if k != "lang"), {}):
                pooled_panel = {k: (POOLED if k == "lang" else combo[k]) for k in keys}
                panel_specs.append((pooled_panel, combo, True))
        panel_specs += [(panel, panel, False) for panel in panels]
    else:
        panel_specs = [(panel, panel, pooled) for panel in panels]

    rows, cols = _grid_shape(len(panel_specs), columns)
    panel_stats = []
    for panel, panel_filters, panel_pooled in panel_specs:
        stats = _stats(ct, panel_filters, panel_pooled)
        lang_key = POOLED if panel_pooled or len(stats) > 1 else next(iter(stats))
        panel_stats.append(_n_vanilla(*stats[lang_key], metric))
    titles = [" · ".join(filter(None, (_label(p), st))) for (p, _, _), st in zip(panel_specs, panel_stats)]
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.08 if cols > 1 else 0.02,
        vertical_spacing=min(0.12, 0.3 / rows) if rows > 1 else 0.1,
    )
    for k, (panel, panel_filters, panel_pooled) in enumerate(panel_specs):
        grids = analysis.configuration_grids(ct, **panel_filters, pooled=panel_pooled)
        group = analysis.single_group(ct, **panel_filters)
        langs = sorted(analysis.select(ct, **panel_filters)["lang"].astype(str).unique())
        gain = grids["gain"]
        layers = list(gain.index)
        custom = np.dstack([grids[v].to_numpy(float) for v in ("accuracy", "gain", "gained", "lost", "n")])
        name = _label(panel) or _common_title(ct, panel_filters, skip=())
        trace = go.Heatmap(
            z=gain.to_numpy(float),
            x=layers,
            y=layers,
            customdata=custom,
            coloraxis="coloraxis",
            hoverongaps=False,
            name=name,
            hovertemplate=(
                "source layer %{y} → target layer %{x}<br>"
                f"{label} %{{customdata[0]:{fmt}}}<br>"
                f"gain %{{customdata[1]:+{fmt}}}<br>"
                "gained %{customdata[2]:.0f}, lost %{customdata[3]:.0f} of %{customdata[4]:.0f}"
                f"<extra>{name}</extra>"
            ),
            meta={**group, "langs": langs, "pooled": bool(panel_pooled or len(langs) > 1)},
        )
        fig.add_trace(trace, row=k // cols + 1, col=k % cols + 1)
        tick = dict(tickmode="linear", tick0=0, dtick=_layer_dtick(len(layers)))
        fig.update_xaxes(**tick, row=k // cols + 1, col=k % cols + 1)
        fig.update_yaxes(**tick, row=k // cols + 1, col=k % cols + 1)
    fig.update_xaxes(title_text="target layer j", showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="source layer i", showgrid=False, zeroline=False)
    title = _common_title(ct, {}, skip=keys)
    fig.update_layout(
        title=f"Gain over vanilla per configuration · {title}",
        coloraxis=dict(
            colorscale=GAIN_COLORSCALE, cmid=0,
            colorbar=dict(title="gain" if metric == "accuracy" else "gain (nats)" if fmt == ".3f" else "gain",
                          tickformat="+.0%" if fmt.endswith("%") else "+.2f"),
        ),
        width=max(640, 80 + 340 * cols),
        height=150 + 320 * rows,
        margin=dict(t=120),
        plot_bgcolor="white",
    )
    _subtitle(fig, _all_wrong_note(analysis.select(ct, **filters)) or
              f"gain = {label} of the configuration (i, j) minus vanilla's, on the n instances of each panel")
    return fig


# --------------------------------------------------------------------------- layer-wise


def layerwise_heatmap(
    df: pd.DataFrame,
    *,
    model: Selector = None,
    site: Selector = None,
    benchmark: Selector = None,
    split: Selector = None,
    lang: Selector = None,
    facet: Facet = None,
    metric: str = "accuracy",
) -> go.Figure:
    """Language x layer heatmaps of the mean gain per source layer (left) and per target layer (right).

    One row of panels per facet value; the last row of each heatmap pools the languages.
    `metric`: see `xtl.analysis.METRICS`.
    """
    label, fmt = analysis.metric_label(metric, df), analysis.metric_format(metric)
    df = analysis.with_metric(df, metric)
    filters = _filters(model, site, benchmark, split, lang)
    keys = _facet_keys(facet, allowed=_GROUP_WITHOUT_LANG)
    ct = analysis.config_table(analysis.select(df, **filters))
    table = analysis.layerwise_gains(ct)
    panels = _panels(ct, keys, {})
    titles = []
    for panel in panels:
        suffix = f" · {_label(panel)}" if panel else ""
        titles += [f"per source layer i (mean over j){suffix}", f"per target layer j (mean over i){suffix}"]
    n_langs = len(ct["lang"].unique()) + 1  # and the pooled row
    panel_px, gap_px = max(160, 40 + 22 * n_langs), 90
    height = 130 + len(panels) * panel_px + (len(panels) - 1) * gap_px + 60
    fig = make_subplots(
        rows=len(panels),
        cols=2,
        subplot_titles=titles,
        horizontal_spacing=0.1,
        vertical_spacing=gap_px / (height - 200) if len(panels) > 1 else 0.0,  # of the plot area
    )
    for r, panel in enumerate(panels, start=1):
        group = analysis.single_group(ct, **panel)
        n_layers = int(analysis.select(ct, **panel)["n_layers"].iloc[0])
        for c, axis in enumerate(("source", "target"), start=1):
            part = table[(table["axis"] == axis)]
            for key, value in group.items():
                part = part[part[key] == value]
            order = list(dict.fromkeys(part["lang"]))  # languages sorted, pooled last
            grid = part.pivot(index="lang", columns="layer", values="gain").reindex(order)
            grid = grid.reindex(columns=range(n_layers))
            labels = [lang_label(v) for v in grid.index]
            stats = _stats(ct, panel, pooled=True)
            ticktext = [f"{lang_label(v)} · {_n_vanilla(*stats[v], metric)}" if v in stats else lang_label(v) for v in grid.index]
            fig.add_trace(
                go.Heatmap(
                    z=grid.to_numpy(float),
                    x=list(grid.columns),
                    y=labels,
                    coloraxis="coloraxis",
                    hoverongaps=False,
                    hovertemplate=f"%{{y}}, {axis} layer %{{x}}: mean gain %{{z:+{fmt}}}<extra></extra>",
                    name=f"{axis}-wise",
                ),
                row=r,
                col=c,
            )
            fig.update_xaxes(
                title_text=f"{axis} layer", tickmode="linear", tick0=0, dtick=_layer_dtick(n_layers), row=r, col=c
            )
            fig.update_yaxes(
                autorange="reversed", type="category", tickvals=labels, ticktext=ticktext,
                showticklabels=c == 1, row=r, col=c,
            )  # fmt: skip
    title = _common_title(ct, {}, skip=(*keys, "lang"))
    fig.update_layout(
        title=f"Layer-wise gain over vanilla · {title}",
        coloraxis=dict(colorscale=GAIN_COLORSCALE, cmid=0, colorbar=dict(
            title="gain" if fmt.endswith("%") else "gain (nats)", tickformat="+.0%" if fmt.endswith("%") else "+.2f")),
        width=1100,
        height=height + 30,
        margin=dict(t=130),
        plot_bgcolor="white",
    )
    _subtitle(fig, _all_wrong_note(ct) or f"mean gain in {label} over vanilla of the configurations through each layer; "
              "each row: a language, its n instances and vanilla's value")
    return fig


# --------------------------------------------------------------------------- win / tie / lose


def win_tie_lose_bars(
    df: pd.DataFrame,
    *,
    model: Selector = None,
    site: Selector = None,
    benchmark: Selector = None,
    split: Selector = None,
    lang: Selector = None,
    facet: Facet = None,
    metric: str = "accuracy",
) -> go.Figure:
    """Stacked bars of the win/tie/lose rates of the configurations, per language and over all languages.
    `metric`: see `xtl.analysis.METRICS` (a continuous one: the configuration's mean against vanilla's).

    What is counted is configurations, not instances: a configuration (i, j) wins
    for a language when it gets more of its n instances right than vanilla, ties
    when as many, loses when fewer; the all-languages bar counts every
    (configuration, language) pair."""
    label = analysis.metric_label(metric, df)
    df = analysis.with_metric(df, metric)
    filters = _filters(model, site, benchmark, split, lang)
    keys = _facet_keys(facet, allowed=_GROUP_WITHOUT_LANG)
    ct = analysis.config_table(analysis.select(df, **filters))
    wtl = analysis.win_tie_lose(ct)
    panels = _panels(ct, keys, {})
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        subplot_titles=[_label(p) for p in panels] if keys else None,
        shared_yaxes=True,
        horizontal_spacing=0.09,
    )
    models = analysis.select(ct, **filters)["model"].nunique()
    for c, panel in enumerate(panels, start=1):
        group = analysis.single_group(ct, **panel)
        table = wtl
        for key, value in group.items():
            table = table[table[key] == value]
        labels = [lang_label(v) for v in table["lang"]]
        stats = _stats(ct, panel, pooled=True)
        # one model: the vanilla accuracy of each language is the same in every panel
        ticktext = [
            f"{lang_label(v)} · " + (_n_vanilla(*stats[v], metric) if models == 1 else f"n = {stats[v][0]}")
            for v in table["lang"]
        ]
        if models > 1 and keys:
            fig.layout.annotations[c - 1].text += f" · {_n_vanilla(*stats[POOLED], metric).split(' · ')[1]} ({POOLED_LABEL})"
        for rate, count in (("win", "wins"), ("tie", "ties"), ("lose", "losses")):
            fig.add_trace(
                go.Bar(
                    x=table[rate],
                    y=labels,
                    orientation="h",
                    name=rate,
                    legendgroup=rate,
                    showlegend=c == 1,
                    marker_color=WIN_TIE_LOSE_COLORS[rate],
                    customdata=np.stack([table[count], table["total"]], axis=-1),
                    hovertemplate=(
                        f"%{{y}}: {rate} %{{customdata[0]}} of %{{customdata[1]}} (%{{x:.1%}})<extra></extra>"
                    ),
                ),
                row=1,
                col=c,
            )
        fig.update_xaxes(
            range=[0, 1], tickvals=[0, 0.25, 0.5, 0.75, 1], tickformat=".0%",
            title_text="share of configurations", row=1, col=c,
        )  # fmt: skip
        fig.update_yaxes(tickvals=labels, ticktext=ticktext, row=1, col=c)
    fig.update_yaxes(autorange="reversed", type="category")
    n_rows = len(ct["lang"].unique()) + 1  # and the pooled row
    title = _common_title(ct, {}, skip=(*keys, "lang"))
    fig.update_layout(
        title=f"Win / tie / lose of the configurations against vanilla ({label}) · {title}",
        barmode="stack",
        width=max(760, 300 * len(panels) + 300),
        height=300 + 26 * n_rows,
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
        margin=dict(t=120, b=110),
    )
    _subtitle(fig, _all_wrong_note(analysis.select(ct, **filters)) or
              ("configuration (i, j) wins when it gets more of the n instances right than vanilla, ties when as many, "
               if metric == "accuracy" else
               f"configuration (i, j) wins when its {label} over the n instances is higher than vanilla's, ties when equal, ")
              + f"loses when lower; {POOLED_LABEL}: every (configuration, language) pair")
    return fig


# --------------------------------------------------------------------------- upper bounds


def upper_bound_curves(
    df: pd.DataFrame,
    *,
    model: Selector = None,
    site: Selector = None,
    benchmark: Selector = None,
    split: Selector = None,
    lang: Selector = None,
    pooled: bool = False,
    facet: Facet = None,
    metric: str = "accuracy",
) -> go.Figure:
    """Source-wise (left) and target-wise (right) upper bounds per layer, with vanilla and average lines.
    `metric`: see `xtl.analysis.METRICS` (a continuous one: the mean of each instance's best value).

    Solid: the union over configurations (the public code's upper bound);
    dashed: the union with vanilla. One row of panels per facet value.
    """
    label, fmt = analysis.metric_label(metric, df), analysis.metric_format(metric)
    share = fmt.endswith("%")
    df = analysis.with_metric(df, metric)
    filters = _filters(model, site, benchmark, split, lang)
    keys = _facet_keys(facet)
    rows = analysis.select(df, **filters)  # once; each panel selects from these
    panels = _panels(rows, keys, {})
    titles = []
    for panel in panels:
        suffix = f" · {_label(panel)}" if panel else ""
        titles += [f"source-wise (union over j){suffix}", f"target-wise (union over i){suffix}"]
    fig = make_subplots(rows=len(panels), cols=2, subplot_titles=titles, horizontal_spacing=0.08)
    styles = {
        "upper bound": dict(color="#08519c", dash="solid"),
        "upper bound with vanilla": dict(color="#6baed6", dash="dash"),
        "average of configurations": dict(color="#636363", dash="dot"),
        "vanilla": dict(color="#d7301f", dash="solid"),
    }
    stats_lines = []
    for r, panel in enumerate(panels, start=1):
        ub = analysis.upper_bounds(rows, **panel, pooled=pooled and "lang" not in panel)
        stats_lines.append(_n_vanilla(ub.n, ub.vanilla, metric))
        if panel:
            k = 2 * (r - 1)
            for annotation in fig.layout.annotations[k : k + 2]:
                annotation.text += f" · {stats_lines[-1]}"
        layers = list(range(ub.n_layers))
        for c, (wise, wise_v) in enumerate(
            ((ub.source_wise, ub.source_wise_with_vanilla), (ub.target_wise, ub.target_wise_with_vanilla)), start=1
        ):
            lines = {
                "upper bound": wise.to_numpy(float),
                "upper bound with vanilla": wise_v.to_numpy(float),
                "average of configurations": np.full(len(layers), ub.average),
                "vanilla": np.full(len(layers), ub.vanilla),
            }
            for name, values in lines.items():
                flat = name in ("average of configurations", "vanilla")
                fig.add_trace(
                    go.Scatter(
                        x=layers,
                        y=values,
                        mode="lines" if flat else "lines+markers",
                        connectgaps=True,  # a sweep over a layer subset leaves the other layers empty
                        name=name,
                        legendgroup=name,
                        showlegend=r == 1 and c == 1,
                        line=dict(width=1.5 if flat else 2, **styles[name]),
                        hovertemplate=f"{name}<br>layer %{{x}}: %{{y:{fmt}}}<extra>n = {ub.n}</extra>",
                    ),
                    row=r,
                    col=c,
                )
            fig.update_xaxes(
                title_text="source layer i" if c == 1 else "target layer j",
                tickmode="linear", tick0=0, dtick=_layer_dtick(ub.n_layers), row=r, col=c,
            )  # fmt: skip
            fig.update_yaxes(
                range=[0, 1.02] if share else None, tickformat=".0%" if share else ".2f",
                title_text=(_share_title(label) if share else label) if c == 1 else None, row=r, col=c,
            )  # fmt: skip
    title = _common_title(rows, {}, skip=keys)
    fig.update_layout(
        title=f"Instance-aware upper bounds · {title}",
        width=1000,
        height=200 + 330 * len(panels),
        legend=dict(orientation="h", yanchor="top", y=-0.2 if len(panels) == 1 else -0.1, xanchor="left", x=0),
        margin=dict(t=120, b=130),
    )
    explained = (
        "upper bound: the share of instances that some configuration of the layer gets right" if share else
        f"upper bound: the mean over instances of the best {label.removeprefix('mean ')} among the layer's configurations"
    )
    note = _all_wrong_note(analysis.config_table(rows)) or explained
    _subtitle(fig, note if keys else f"{stats_lines[0]} · {note}")
    return fig


# --------------------------------------------------------------------------- instance-aware selection

SELECTION_COLORS = {"vanilla": "#d7301f", "upper_bound": "#08519c", "best_fixed": "#636363", "selector": "#74a9cf"}


def _selection_group(
    table: pd.DataFrame, filters: dict[str, Selector], what: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The rows of one (model, site, benchmark, split, lang) group of an `xtl.selection` table."""
    missing = [c for c in (*GROUP_KEYS, "selector", "accuracy") if c not in table.columns]
    if missing:
        raise XtlError(f"{what} draws the table of xtl.selection.{'evaluate_top_k' if 'k' in what else 'evaluate'}; "
                       f"this one lacks {', '.join(missing)}")  # fmt: skip
    rows = analysis.select(table, **{k: v for k, v in filters.items() if k != "lang"})
    wanted = filters.get("lang")
    if wanted is not None:
        rows = analysis.select(rows, lang=wanted)
    group = {key: analysis._require_one(rows, key) for key in GROUP_KEYS}
    return rows, group


def selection_bars(
    table: pd.DataFrame,
    *,
    model: Selector = None,
    site: Selector = None,
    benchmark: Selector = None,
    split: Selector = None,
    lang: Selector = POOLED,
) -> go.Figure:
    """Accuracy of each selector of one group (`xtl.selection.evaluate`'s table) as bars, with
    vanilla and the upper bound as horizontal lines. Hover: correct of n and the gap closed."""
    rows, group = _selection_group(
        table, _filters(model, site, benchmark, split, lang), "selection_bars"
    )
    bars = rows[~rows["selector"].isin(["vanilla", "upper_bound"])]
    vanilla = float(rows["vanilla_accuracy"].iloc[0])
    upper = float(rows["upper_bound"].iloc[0])
    colors = [SELECTION_COLORS["best_fixed"] if s == "best_fixed" else SELECTION_COLORS["selector"] for s in bars["selector"]]
    gap = bars["gap_closed"].map(lambda v: "–" if pd.isna(v) else f"{v:+.0%}")
    fig = go.Figure(
        go.Bar(
            x=bars["selector"],
            y=bars["accuracy"],
            marker_color=colors,
            name="selector",
            customdata=np.stack([bars["correct"], bars["n"], gap], axis=-1),
            hovertemplate="%{x}: %{y:.1%} (%{customdata[0]} of %{customdata[1]}); gap closed %{customdata[2]}<extra></extra>",
            showlegend=False,
        )
    )
    for name, value, dash in (("vanilla", vanilla, "solid"), ("upper_bound", upper, "dash")):
        label = "upper bound (some candidate right)" if name == "upper_bound" else "vanilla"
        fig.add_hline(
            y=value, line=dict(color=SELECTION_COLORS[name], dash=dash, width=2),
            annotation_text=f"{label} {value:.1%}", annotation_position="top left",
        )  # fmt: skip
    where = " · ".join([group["model"], group["site"], f"{group['benchmark']}/{group['split']}",
                        "all languages (pooled)" if group["lang"] == POOLED else group["lang"]])  # fmt: skip
    fig.update_layout(
        title=f"Instance-aware selection · {where}",
        yaxis=dict(title="accuracy", range=[0, 1.02], tickformat=".0%"),
        xaxis=dict(title="selector", type="category"),
        width=max(640, 90 * len(bars) + 240),
        height=460,
        margin=dict(b=140),
    )
    return fig


def selection_top_k_curves(
    table: pd.DataFrame,
    *,
    model: Selector = None,
    site: Selector = None,
    benchmark: Selector = None,
    split: Selector = None,
    lang: Selector = POOLED,
) -> go.Figure:
    """Accuracy against k, the number of best PilotSet configurations a selector may try
    (`xtl.selection.evaluate_top_k`'s table): one line per selector, the oracle among the k,
    vanilla and the upper bound of all configurations as horizontal lines."""
    if "k" not in table.columns:
        raise XtlError("selection_top_k_curves draws the table of xtl.selection.evaluate_top_k, which has a k column")
    rows, group = _selection_group(
        table, _filters(model, site, benchmark, split, lang), "selection_top_k_curves"
    )
    fig = go.Figure()
    for name, part in rows.groupby("selector", sort=False):
        if name == "vanilla":
            continue
        part = part.sort_values("k")
        oracle = name == "upper_bound"
        fig.add_trace(
            go.Scatter(
                x=part["k"],
                y=part["accuracy"],
                mode="lines+markers",
                name="oracle among the k" if oracle else name,
                line=dict(color=SELECTION_COLORS["upper_bound"] if oracle else None, width=2),
                customdata=np.stack([part["correct"], part["n"]], axis=-1),
                hovertemplate=f"{name}, k = %{{x}}: %{{y:.1%}} (%{{customdata[0]}} of %{{customdata[1]}})<extra></extra>",
            )
        )
    vanilla = float(rows["vanilla_accuracy"].iloc[0])
    upper = float(rows["upper_bound"].iloc[0])
    fig.add_hline(y=vanilla, line=dict(color=SELECTION_COLORS["vanilla"], width=2),
                  annotation_text=f"vanilla {vanilla:.1%}", annotation_position="bottom right")  # fmt: skip
    fig.add_hline(y=upper, line=dict(color=SELECTION_COLORS["upper_bound"], dash="dash", width=2),
                  annotation_text=f"upper bound, all configurations {upper:.1%}", annotation_position="top left")  # fmt: skip
    where = " · ".join([group["model"], group["site"], f"{group['benchmark']}/{group['split']}",
                        "all languages (pooled)" if group["lang"] == POOLED else group["lang"]])  # fmt: skip
    fig.update_layout(
        title=f"Accuracy when only the k best PilotSet pairs may be tried · {where}",
        xaxis=dict(title="k (best configurations on the PilotSet)", type="log"),
        yaxis=dict(title="accuracy", range=[0, 1.02], tickformat=".0%"),
        width=820,
        height=460,
    )
    return fig
