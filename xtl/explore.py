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


def on_cell_click(df: pd.DataFrame, group: Mapping[str, Any], source_layer: int, target_layer: int) -> str:
    """HTML listing the instances configuration (source_layer, target_layer) of `group` flips against vanilla."""
    table = cell_flips(df, group, source_layer, target_layer)
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


def click_handler(df: pd.DataFrame, output: Any) -> Callable[[Any, Any, Any], None]:
    """A `trace.on_click` callback that writes `on_cell_click` of the clicked cell into `output.value`."""

    def handle(trace: Any, points: Any, state: Any) -> None:
        if not points.point_inds:  # plotly calls every trace's callbacks; only the clicked one has points
            return
        source_layer, target_layer = int(points.ys[0]), int(points.xs[0])
        output.value = on_cell_click(df, trace.meta, source_layer, target_layer)

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
) -> ipywidgets.VBox:
    """A widget: the gain heatmap (a `FigureWidget`) above the flipped instances of the clicked cell.

    Arguments as `xtl.plots.gain_heatmap`; by default one panel per language plus a pooled one.
    """
    import ipywidgets
    import plotly.graph_objects as go

    fig = plots.gain_heatmap(
        df, model=model, site=site, benchmark=benchmark, split=split, lang=lang,
        pooled=pooled, facet=facet, columns=columns,
    )  # fmt: skip
    widget = go.FigureWidget(json_safe(plots.subtitle_in_title(fig)))
    output = ipywidgets.HTML(value="<i>Click a cell to list the instances that configuration flips.</i>")
    handler = click_handler(df, output)
    for trace in widget.data:
        trace.on_click(handler)
    return ipywidgets.VBox([widget, output])
