"""Click a gain-heatmap cell in Jupyter to list the instances that configuration flips.

`explore(df, ...)` shows `xtl.plots.gain_heatmap` as a plotly `FigureWidget`
above an HTML panel; clicking cell (i, j) of a panel fills the panel with
`on_cell_click`, the pure function that does the work (testable without a
browser): the instances vanilla got wrong and the transplant right ("gained")
and the reverse ("lost"), with both prompts and both answers.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from xtl import analysis, plots
from xtl.analysis import FilterValue

if TYPE_CHECKING:
    import ipywidgets

PROMPT_STYLE = "max-height:9em;overflow:auto;white-space:pre-wrap;font-family:monospace;font-size:90%"


def cell_flips(df: pd.DataFrame, group: Mapping[str, Any], source_layer: int, target_layer: int) -> pd.DataFrame:
    """`analysis.flips` for the group a heatmap trace carries in `trace.meta`."""
    return analysis.flips(
        df,
        group["site"],
        int(source_layer),
        int(target_layer),
        model=group["model"],
        benchmark=group["benchmark"],
        split=group["split"],
        lang=list(group["langs"]),
    )


def cell_moves(
    df: pd.DataFrame, group: Mapping[str, Any], source_layer: int, target_layer: int, metric: str, top: int = 10
) -> pd.DataFrame:
    """The `top` instances whose continuous `metric` (`xtl.analysis.METRICS`, a
    scoring run's) configuration (i, j) of `group` moves most against vanilla,
    largest change first: lang, instance_id, source, target, gold, vanilla,
    transplant (the metric's values), change, vanilla_text, transplant_text."""
    rows = analysis.with_metric(
        analysis.filter_rows(df, model=group["model"], benchmark=group["benchmark"], split=group["split"], lang=list(group["langs"])),
        metric,
    )
    vanilla = rows[rows["site"].isna()]
    cell = rows[(rows["site"] == group["site"]) & (rows["source_layer"] == int(source_layer)) & (rows["target_layer"] == int(target_layer))]
    keys = ["lang", "instance_id"]
    both = cell[[*keys, "source", "target", "gold", "correct", "text"]].merge(
        vanilla[[*keys, "correct", "text"]], on=keys, suffixes=("_t", "_v")
    )
    table = pd.DataFrame({
        "lang": both["lang"], "instance_id": both["instance_id"], "source": both["source"], "target": both["target"],
        "gold": both["gold"], "vanilla": both["correct_v"].astype(float), "transplant": both["correct_t"].astype(float),
        "vanilla_text": both["text_v"], "transplant_text": both["text_t"],
    })  # fmt: skip
    table["change"] = table["transplant"] - table["vanilla"]
    order = table["change"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].head(top).reset_index(drop=True)


def _moves_html(df: pd.DataFrame, group: Mapping[str, Any], source_layer: int, target_layer: int, metric: str) -> str:
    table = cell_moves(df, group, source_layer, target_layer, metric)
    title = (
        f"{group['site']}: source layer {int(source_layer)} → target layer {int(target_layer)} · "
        f"{group['model']} · {group['benchmark']}/{group['split']} · {', '.join(group['langs'])}"
    )
    head = (f"<h4>{html.escape(title)}</h4><p>the {len(table)} instances whose "
            f"{html.escape(analysis.metric_label(metric).removeprefix('mean '))} this configuration moves most</p>")
    header = "".join(f"<th>{h}</th>" for h in ("change", "lang", "instance", "target prompt", "gold", "vanilla", "transplant",
                                                 "vanilla choice", "transplant choice"))
    body = "".join(
        f'<tr><td style="color:{"#2c7fb8" if r.change > 0 else "#d7301f"}">{r.change:+.3f}</td><td>{html.escape(str(r.lang))}</td>'
        f"<td>{html.escape(str(r.instance_id))}</td><td><div style=\"{PROMPT_STYLE}\">{html.escape(str(r.target))}</div></td>"
        f"<td>{html.escape(str(r.gold))}</td><td>{r.vanilla:.3f}</td><td>{r.transplant:.3f}</td>"
        f"<td>{html.escape(str(r.vanilla_text))}</td><td>{html.escape(str(r.transplant_text))}</td></tr>"
        for r in table.itertuples(index=False)
    )
    return head + f'<table class="xtl-moves"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def on_cell_click(
    df: pd.DataFrame, group: Mapping[str, Any], source_layer: int, target_layer: int, metric: str = "accuracy"
) -> str:
    """HTML listing the instances configuration (source_layer, target_layer) of `group` flips against vanilla
    (for a continuous `metric`: the instances it moves most)."""
    if not analysis.is_share(metric):
        return _moves_html(df, group, source_layer, target_layer, metric)
    table = cell_flips(analysis.with_metric(df, metric), group, source_layer, target_layer)
    gained = int((table["direction"] == "gained").sum())
    lost = int((table["direction"] == "lost").sum())
    langs = ", ".join(group["langs"])
    title = (
        f"{group['site']}: source layer {int(source_layer)} → target layer {int(target_layer)} · "
        f"{group['model']} · {group['benchmark']}/{group['split']} · {langs}"
    )
    head = f"<h4>{html.escape(title)}</h4><p>{gained} gained (wrong → right), {lost} lost (right → wrong)</p>"
    if table.empty:
        return head + "<p><i>This configuration answers every instance as vanilla does.</i></p>"

    def cell(value: Any, style: str = "") -> str:
        text = "" if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA else str(value)
        inner = f'<div style="{style}">{html.escape(text)}</div>' if style else html.escape(text)
        return f"<td>{inner}</td>"

    columns = ("", "lang", "instance", "source prompt", "target prompt", "gold", "vanilla answer", "transplant answer")
    header = "".join(f"<th>{h}</th>" for h in columns)
    body = []
    for r in table.itertuples(index=False):
        mark = "✓ gained" if r.direction == "gained" else "✗ lost"
        color = "#2c7fb8" if r.direction == "gained" else "#d7301f"
        body.append(
            f'<tr class="{r.direction}"><td style="color:{color};white-space:nowrap">{mark}</td>'
            + cell(r.lang)
            + cell(r.instance_id)
            + cell(r.source, PROMPT_STYLE)
            + cell(r.target, PROMPT_STYLE)
            + cell(r.gold)
            + cell(r.vanilla_text, PROMPT_STYLE)
            + cell(r.transplant_text, PROMPT_STYLE)
            + "</tr>"
        )
    return head + f'<table class="xtl-flips"><thead><tr>{header}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def click_handler(df: pd.DataFrame, output: Any, metric: str = "accuracy") -> Callable[[Any, Any, Any], None]:
    """A `trace.on_click` callback that writes `on_cell_click` of the clicked cell into `output.value`."""

    def handle(trace: Any, points: Any, state: Any) -> None:
        if not points.point_inds:  # plotly calls every trace's callbacks; only the clicked one has points
            return
        source_layer, target_layer = int(points.ys[0]), int(points.xs[0])
        output.value = on_cell_click(df, trace.meta, source_layer, target_layer, metric)

    return handle


def json_safe(fig):
    """The figure with every NaN or infinity in its traces' data as None (a gap to plotly): a widget
    sends its data as JSON, which has no NaN, and Jupyter would refuse the message with a warning."""
    import math

    import numpy as np

    def clean(value):
        if isinstance(value, (list, tuple, np.ndarray)):
            return [clean(v) for v in value]
        if isinstance(value, (float, np.floating)) and not math.isfinite(value):
            return None
        return value.item() if isinstance(value, np.generic) else value

    for trace in fig.data:
        for name in ("x", "y", "z", "customdata"):
            values = getattr(trace, name, None)
            if values is not None:
                trace[name] = clean(values)
    return fig


def explore(
    df: pd.DataFrame,
    *,
    model: FilterValue = None,
    site: FilterValue = None,
    benchmark: FilterValue = None,
    split: FilterValue = None,
    lang: FilterValue = None,
    pooled: bool = True,
    facet: plots.Facet = "lang",
    columns: int = 4,
    metric: str = "accuracy",
) -> ipywidgets.VBox:
    """A widget: the gain heatmap (a `FigureWidget`) above the flipped instances of the clicked cell.

    Arguments as `xtl.plots.gain_heatmap`; by default one panel per language plus a pooled one.
    A continuous `metric` (a scoring run's gold margin, ...) lists the instances the cell moves most.
    """
    import ipywidgets
    import plotly.graph_objects as go

    fig = plots.gain_heatmap(
        df, model=model, site=site, benchmark=benchmark, split=split, lang=lang,
        pooled=pooled, facet=facet, columns=columns, metric=metric,
    )  # fmt: skip
    widget = go.FigureWidget(json_safe(plots.subtitle_in_title(fig)))
    output = ipywidgets.HTML(value="<i>Click a cell to list the instances that configuration flips.</i>")
    handler = click_handler(df, output, metric)
    for trace in widget.data:
        trace.on_click(handler)
    return ipywidgets.VBox([widget, output])
