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
from xtl.analysis import GROUP_KEYS, POOLED, FilterValue
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
    model: FilterValue, site: FilterValue, benchmark: FilterValue, split: FilterValue, lang: FilterValue
) -> dict[str, FilterValue]:
    return {"model": model, "site": site, "benchmark": benchmark, "split": split, "lang": lang}


def _panels(df: pd.DataFrame, keys: tuple[str, ...], filters: dict[str, FilterValue]) -> list[dict[str, str]]:
    """One dict per combination of the facet keys present after filtering (sorted)."""
    transplants = _transplant_rows(df, filters)
    if transplants.empty:
        raise XtlError("the results table has no transplant rows for these filters; check model=, site=, lang=")
    if not keys:
        return [{}]
    combos = transplants[list(keys)].drop_duplicates().astype(str).sort_values(list(keys))
    return [dict(zip(keys, values, strict=True)) for values in combos.itertuples(index=False)]


def _transplant_rows(df: pd.DataFrame, filters: dict[str, FilterValue]) -> pd.DataFrame:
    rows = analysis.filter_rows(df, **filters)
    return rows[rows["site"].notna()]


def _common_title(df: pd.DataFrame, filters: dict[str, FilterValue], skip: Sequence[str]) -> str:
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


def _stats(ct: pd.DataFrame, filters: dict[str, FilterValue], pooled: bool) -> dict[str, dict[str, tuple[int, float]]]:
    """(n, vanilla accuracy) per language of the selected group, and for POOLED (every language summed)."""
    average = analysis.average_performance(analysis.filter_rows(ct, **{k: v for k, v in filters.items() if k != "lang"}))
    langs = set(analysis.filter_rows(ct, **filters)["lang"].astype(str))
    keep = average["lang"].isin(langs | ({POOLED} if pooled or len(langs) > 1 else set()))
    return {row.lang: (int(row.n), float(row.vanilla)) for row in average[keep].itertuples()}


def _gain_colorbar(metric: str) -> dict:
    """The colour bar of a gain heatmap: shares in percent, or nats."""
    if analysis.is_share(metric):
        return dict(title="gain", tickformat="+.0%")
    return dict(title="gain (nats)", tickformat="+.2f")


def _n_vanilla(n: int, vanilla: float, metric: str = "accuracy") -> str:
    return f"n = {n} · {_vanilla(vanilla, metric)}"


def _vanilla(vanilla: float, metric: str) -> str:
    return f"vanilla {vanilla:{analysis.metric_format(metric)}}"


def _all_wrong_note(ct: pd.DataFrame) -> str | None:
    """A note for a selection where no answer is right at all (every panel would be one flat colour)."""
    if len(ct) and not analysis.is_continuous(ct) and int(ct["correct"].sum()) == 0 and int(ct["vanilla_correct"].sum()) == 0:
        return "every answer is wrong, vanilla too (accuracy 0 everywhere): no gain to show"
    return None


TITLE_SIZE, SUBTITLE_SIZE, PANEL_TITLE_SIZE = 18, 13, 14
CHAR_EM = 0.5  # a generous average character width, in font sizes (Arial/Open Sans text measure ~0.45)
TITLE_X = 0.02  # the title's left edge, as a share of the figure's width


def text_px(text: str, size: float) -> float:
    """The estimated width in pixels of one line of `text` at font `size` (plotly cannot measure text)."""
    return len(text) * size * CHAR_EM


def wrap(text: str, size: float, width_px: float) -> str:
    """`text` broken with <br> at spaces so that no line is estimated wider than `width_px`."""
    lines: list[str] = []
    for word in text.replace("<br>", " ").split(" "):
        if lines and text_px(f"{lines[-1]} {word}", size) <= width_px:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return "<br>".join(lines)


def _titles(fig: go.Figure, subtitle: str | None = None) -> None:
    """Fit the title and subtitle to the figure's width (wrapped, never cut) and make the top
    margin hold them, above the panel titles."""
    width = fig.layout.width or 700
    room = width * (1 - 2 * TITLE_X)
    title = wrap(fig.layout.title.text or "", TITLE_SIZE, room)
    lines = title.count("<br>") + 1
    top = 14 + lines * TITLE_SIZE * 1.3
    layout: dict = dict(
        # plotly's yanchor "top" holds the last line of a multi-line title there: move it down by the others
        title=dict(text=title, x=TITLE_X, xanchor="left", xref="container",
                   y=1 - (14 + (lines - 1) * TITLE_SIZE * 1.3) / (fig.layout.height or 450),
                   yanchor="top", yref="container", font=dict(size=TITLE_SIZE)),
    )  # fmt: skip
    if subtitle:
        subtitle = wrap(subtitle, SUBTITLE_SIZE, room)
        layout["title"]["subtitle"] = dict(text=subtitle, font=dict(size=SUBTITLE_SIZE))
        top += 6 + (subtitle.count("<br>") + 1) * SUBTITLE_SIZE * 1.4
    panel_lines = _fit_panel_titles(fig)
    layout["margin"] = dict(t=int(top + 24 + panel_lines * PANEL_TITLE_SIZE * 1.3))
    fig.update_layout(**layout)


def _fit_panel_titles(fig: go.Figure) -> int:
    """Panel titles (make_subplots' annotations) in PANEL_TITLE_SIZE, wrapped to their panel's
    width; returns the most lines a title of the top row has."""
    margin = fig.layout.margin
    plot_px = (fig.layout.width or 700) - (margin.l if margin.l is not None else 80) - (margin.r if margin.r is not None else 80)
    domains = [fig.layout[name].domain for name in fig.layout if name.startswith("xaxis") and fig.layout[name].domain]
    most = 0
    for annotation in fig.layout.annotations or ():
        if annotation.xref != "paper" or annotation.yref != "paper" or annotation.yanchor != "bottom":
            continue  # not a panel title
        around = [d for d in domains if d[0] - 0.01 <= annotation.x <= d[1] + 0.01]
        panel_px = min(d[1] - d[0] for d in around) * plot_px if around else plot_px
        annotation.font.size = PANEL_TITLE_SIZE
        annotation.text = wrap(annotation.text, PANEL_TITLE_SIZE, panel_px + 0.06 * plot_px)
        if (annotation.y or 0) >= 0.999:
            most = max(most, annotation.text.count("<br>") + 1)
    return most


def subtitle_in_title(fig: go.Figure) -> go.Figure:
    """The subtitle as the title's last lines, in the subtitle's size: one text block, so a front end
    that places `title.subtitle` on its own (the Jupyter FigureWidget) cannot draw it above the title."""
    subtitle = fig.layout.title.subtitle.text
    if subtitle:
        lines = subtitle.split("<br>")
        spans = "<br>".join(f'<span style="font-size:{SUBTITLE_SIZE}px">{line}</span>' for line in lines)
        fig.update_layout(title_text=f"{fig.layout.title.text}<br>{spans}", title_subtitle_text=None)
    return fig


def _legend_below(fig: go.Figure, *, axis_title_px: int = 62) -> None:
    """A horizontal legend under the x-axis title (never on it), with the bottom margin to hold it."""
    height = fig.layout.height or 450
    top = fig.layout.margin.t or 100
    bottom = axis_title_px + 40
    plot_px = height - top - bottom
    fig.update_layout(
        legend=dict(orientation="h", xanchor="left", x=0, yanchor="top", y=-(axis_title_px + 4) / plot_px),
        margin=dict(b=bottom),
    )


def _share_title(label: str) -> str:
    """The axis title of an accuracy: of a greedy answer (generate runs) plainly, else saying which."""
    return "accuracy (share of n instances)" if label == "accuracy (greedy answer)" else f"{label.removesuffix(')')}, share of n instances)"


def _layer_dtick(n_layers: int) -> int:
    """Integer layer ticks: every layer for small models, every 2nd or 4th for large ones."""
    return 1 if n_layers <= 12 else 2 if n_layers <= 24 else 4


def _swept(grid: pd.DataFrame) -> tuple[list[int], list[int]]:
    """The source layers (rows) and target layers (columns) of a layer grid that hold a value:
    a sweep of a layer subset leaves the other layers empty."""
    sources = [layer for layer in grid.index if grid.loc[layer].notna().any()]
    targets = [layer for layer in grid.columns if grid[layer].notna().any()]
    return (sources or list(grid.index)), (targets or list(grid.columns))


def _layer_categories(layers: list[int]) -> dict:
    """A categorical layer axis: the swept layers in order, each labelled (every 2nd or 4th when many)."""
    step = _layer_dtick(len(layers))
    return dict(
        type="category", categoryorder="array", categoryarray=list(layers),
        tickmode="array", tickvals=list(layers)[::step], ticktext=[str(v) for v in list(layers)[::step]],
    )  # fmt: skip


def _grid_shape(n_panels: int, columns: int) -> tuple[int, int]:
    cols = max(1, min(columns, n_panels))
    return -(-n_panels // cols), cols


# --------------------------------------------------------------------------- gain heatmap


def gain_heatmap(
    df: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
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
    ct = analysis.config_table(analysis.filter_rows(df, **filters))  # once; the panels pivot it
    panels = _panels(ct, keys, {})
    panel_specs: list[tuple[dict[str, str], dict[str, FilterValue], bool]] = []
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
        langs = sorted(analysis.filter_rows(ct, **panel_filters)["lang"].astype(str).unique())
        sources, targets = _swept(grids["gain"])
        gain = grids["gain"].loc[sources, targets]
        custom = np.dstack([grids[v].loc[sources, targets].to_numpy(float) for v in ("accuracy", "gain", "gained", "lost", "n")])
        name = _label(panel) or _common_title(ct, panel_filters, skip=())
        trace = go.Heatmap(
            z=gain.to_numpy(float),
            x=targets,
            y=sources,
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
        # categorical: one cell and one tick per swept layer, none for the layers not swept
        fig.update_xaxes(**_layer_categories(targets), row=k // cols + 1, col=k % cols + 1)
        fig.update_yaxes(**_layer_categories(sources), row=k // cols + 1, col=k % cols + 1)
    fig.update_xaxes(title_text="target layer j", showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="source layer i", showgrid=False, zeroline=False)
    title = _common_title(ct, {}, skip=keys)
    fig.update_layout(
        title=f"Gain over vanilla per configuration · {title}",
        coloraxis=dict(
            colorscale=GAIN_COLORSCALE, cmid=0,
            colorbar=_gain_colorbar(metric),
        ),
        width=max(640, 80 + 340 * cols),
        height=150 + 320 * rows,
        plot_bgcolor="white",
    )
    _titles(fig, _all_wrong_note(analysis.filter_rows(ct, **filters)) or
              f"gain = {label} of the configuration (i, j) minus vanilla's, on the n instances of each panel")
    return fig


# --------------------------------------------------------------------------- layer-wise


def layerwise_heatmap(
    df: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
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
    ct = analysis.config_table(analysis.filter_rows(df, **filters))
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
        n_layers = int(analysis.filter_rows(ct, **panel)["n_layers"].iloc[0])
        for c, axis in enumerate(("source", "target"), start=1):
            part = table[(table["axis"] == axis)]
            for key, value in group.items():
                part = part[part[key] == value]
            order = list(dict.fromkeys(part["lang"]))  # languages sorted, pooled last
            grid = part.pivot(index="lang", columns="layer", values="gain").reindex(order)
            grid = grid[[layer for layer in range(n_layers) if layer in grid.columns and grid[layer].notna().any()]]
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
            fig.update_xaxes(title_text=f"{axis} layer", **_layer_categories(list(grid.columns)), row=r, col=c)
            fig.update_yaxes(
                autorange="reversed", type="category", tickvals=labels, ticktext=ticktext,
                showticklabels=c == 1, row=r, col=c,
            )  # fmt: skip
    title = _common_title(ct, {}, skip=(*keys, "lang"))
    fig.update_layout(
        title=f"Layer-wise gain over vanilla · {title}",
        coloraxis=dict(colorscale=GAIN_COLORSCALE, cmid=0, colorbar=_gain_colorbar(metric)),
        width=1100,
        height=height + 30,
        plot_bgcolor="white",
    )
    _titles(fig, _all_wrong_note(ct) or f"mean gain in {label} over vanilla of the configurations through each layer; "
              "each row: a language, its n instances and vanilla's value")
    return fig


# --------------------------------------------------------------------------- win / tie / lose


def win_tie_lose_bars(
    df: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
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
    ct = analysis.config_table(analysis.filter_rows(df, **filters))
    wtl = analysis.win_tie_lose(ct)
    panels = _panels(ct, keys, {})
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        subplot_titles=[_label(p) for p in panels] if keys else None,
        shared_yaxes=True,
        horizontal_spacing=0.09,
    )
    models = analysis.filter_rows(ct, **filters)["model"].nunique()
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
            fig.layout.annotations[c - 1].text += f" · {_vanilla(stats[POOLED][1], metric)} ({POOLED_LABEL})"
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
        height=340 + 30 * n_rows,
    )
    _titles(fig, _all_wrong_note(analysis.filter_rows(ct, **filters)) or
              ("configuration (i, j) wins when it gets more of the n instances right than vanilla, ties when as many, "
               if metric == "accuracy" else
               f"configuration (i, j) wins when its {label} over the n instances is higher than vanilla's, ties when equal, ")
              + f"loses when lower; {POOLED_LABEL}: every (configuration, language) pair")
    _legend_below(fig)
    return fig


# --------------------------------------------------------------------------- upper bounds


def upper_bound_curves(
    df: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
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
    share = analysis.is_share(metric)
    df = analysis.with_metric(df, metric)
    filters = _filters(model, site, benchmark, split, lang)
    keys = _facet_keys(facet)
    rows = analysis.filter_rows(df, **filters)  # once; each panel selects from these
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
        height=220 + 330 * len(panels),
    )
    explained = (
        "upper bound: the share of instances that some configuration of the layer gets right" if share else
        f"upper bound: the mean over instances of the best {label.removeprefix('mean ')} among the layer's configurations"
    )
    note = _all_wrong_note(analysis.config_table(rows)) or explained
    _titles(fig, note if keys else f"{stats_lines[0]} · {note}")
    _legend_below(fig)
    return fig


# --------------------------------------------------------------------------- instance-aware selection

SELECTION_COLORS = {"vanilla": "#d7301f", "upper_bound": "#08519c", "best_fixed": "#636363", "selector": "#74a9cf"}


def _selection_group(
    table: pd.DataFrame, filters: dict[str, FilterValue], what: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The rows of one (model, site, benchmark, split, lang) group of an `xtl.selection` table."""
    missing = [c for c in (*GROUP_KEYS, "selector", "accuracy") if c not in table.columns]
    if missing:
        raise XtlError(f"{what} draws the table of xtl.selection.{'evaluate_top_k' if 'k' in what else 'evaluate'}; "
                       f"this one lacks {', '.join(missing)}")  # fmt: skip
    rows = analysis.filter_rows(table, **{k: v for k, v in filters.items() if k != "lang"})
    wanted = filters.get("lang")
    if wanted is not None:
        rows = analysis.filter_rows(rows, lang=wanted)
    group = {key: analysis._require_one(rows, key) for key in GROUP_KEYS}
    return rows, group


def selection_bars(
    table: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = POOLED,
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
    longest = max([text_px(str(name), 12) for name in bars["selector"]] + [0.0])
    slant = 0.5  # sin and cos of the 30-degree tick labels, roughly
    fig.update_layout(
        title=f"Instance-aware selection · {where}",
        yaxis=dict(title="accuracy", range=[0, 1.02], tickformat=".0%"),
        xaxis=dict(title="selector", type="category", tickangle=30, tickfont=dict(size=12)),
        width=max(640, 90 * len(bars) + 240),
        height=420 + int(longest * slant),
        margin=dict(b=int(70 + longest * slant), r=int(max(40, longest * 0.87 - 30))),
    )
    _titles(fig, _selection_subtitle(rows, vanilla, upper))
    return fig


def _selection_subtitle(rows: pd.DataFrame, vanilla: float, upper: float) -> str:
    n = int(rows["n"].iloc[0])
    return (f"n = {n} instances · vanilla {vanilla:.1%} · upper bound {upper:.1%} "
            "(some candidate right) · each selector picks one row per instance without the gold answer")  # fmt: skip


def selection_top_k_curves(
    table: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = POOLED,
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
                  annotation_text=f"vanilla {vanilla:.1%}", annotation_position="top right")  # fmt: skip
    fig.add_hline(y=upper, line=dict(color=SELECTION_COLORS["upper_bound"], dash="dash", width=2),
                  annotation_text=f"upper bound, all configurations {upper:.1%}", annotation_position="top left")  # fmt: skip
    where = " · ".join([group["model"], group["site"], f"{group['benchmark']}/{group['split']}",
                        "all languages (pooled)" if group["lang"] == POOLED else group["lang"]])  # fmt: skip
    ks = sorted(int(k) for k in rows["k"].dropna().unique())
    fig.update_layout(
        title=f"Accuracy when only the k best PilotSet pairs may be tried · {where}",
        # log axis, ticked at the k values only (no minor ticks between them)
        xaxis=dict(title="k (best configurations on the PilotSet)", type="log", tickmode="array",
                   tickvals=ks, ticktext=[str(k) for k in ks], minor=dict(showgrid=False, ticks="")),
        yaxis=dict(title="accuracy", range=[0, 1.02], tickformat=".0%"),
        width=820,
        height=500,
    )  # fmt: skip
    _titles(fig, _selection_subtitle(rows, vanilla, upper))
    _legend_below(fig)
    return fig
