"""Every figure's text fits it, and every chart says its n.

plotly cannot measure text, so this checks with an estimate of text width
(0.5 of the font size per character: Arial/Open Sans text measures ~0.45) what
a figure must satisfy for nothing to be cut: each title and subtitle line fits
the figure's width, the top margin holds the title block, each panel title fits
its panel, a horizontal legend lies below the x-axis title and inside the
bottom margin. The figures are those of the report (every kind the demo and the
notebooks draw) on a table with long names, the selection charts, and the
explore widget (whose data must also be JSON without NaN)."""

from __future__ import annotations

import json
import math
import re

from xtl.testing import tables as h
import numpy as np
import pytest

from xtl import explore, plots, report, selection

EM = 0.5
LONG = "a-model-with-a-rather-long-name-Qwen2-7B-Instruct-bf16"


def lines(text: str | None) -> list[str]:
    return [re.sub(r"<[^>]+>", "", line) for line in (text or "").split("<br>") if line]


def px(text: str, size: float) -> float:
    return len(text) * size * EM


def figures() -> list[tuple[str, object]]:
    """The report's figures (gain, layer-wise, win/tie/lose, upper bounds, side by side, selection)
    on a table with a long model name, a layer subset and two sites, and the top-k curves."""
    def grid(site: str, model: str = LONG):
        return h.full(5, 6, {0, 1}, lambda i, j, k: (i + j + k) % 3 == 0, lang="sw", site=site, model=model)

    sw_th = h.table(grid("ffn"), grid("attn-paper"),
                    h.full(3, 6, {2}, lambda i, j, k: i == k, lang="th", site="ffn", model=LONG))  # fmt: skip
    named = [(f.name, f.figure) for s in report.report_sections(sw_th) for f in s.figures]
    train = h.table(h.full(5, 3, {0}, lambda i, j, k: i == k, split="sample", model=LONG))
    test = h.table(h.full(4, 3, {0}, lambda i, j, k: j == k, split="unseen", model=LONG))
    result = selection.evaluate(test, train=train)
    named.append(("selection_bars", plots.selection_bars(result)))
    named.append(("top_k", plots.selection_top_k_curves(selection.evaluate_top_k(test, train, ks=[1, 2, 4, 9]))))
    return named


FIGURES = figures()


@pytest.mark.parametrize("name, fig", FIGURES, ids=[n for n, _ in FIGURES])
def test_titles_fit_the_figure_and_its_top_margin(name, fig):
    width, layout = fig.layout.width, fig.layout
    title_size = layout.title.font.size or 17
    title_lines = lines(layout.title.text)
    assert title_lines, f"{name} has no title"
    sub_size = (layout.title.subtitle.font.size or 13) if layout.title.subtitle.text else 0
    sub_lines = lines(layout.title.subtitle.text)
    left = (layout.title.x or 0) * width
    for line in title_lines:
        assert left + px(line, title_size) <= width, f"{name}: title line {line!r} runs past {width} px"
    for line in sub_lines:
        assert left + px(line, sub_size) <= width, f"{name}: subtitle line {line!r} runs past {width} px"
    block = len(title_lines) * title_size * 1.2 + len(sub_lines) * sub_size * 1.2
    assert layout.margin.t >= block + 20, f"{name}: a top margin of {layout.margin.t} px under a {block:.0f} px title"


@pytest.mark.parametrize("name, fig", FIGURES, ids=[n for n, _ in FIGURES])
def test_panel_titles_fit_their_panels(name, fig):
    plot_width = fig.layout.width - (fig.layout.margin.l or 80) - (fig.layout.margin.r or 80)
    for annotation in fig.layout.annotations:
        if annotation.xref != "paper" or annotation.yref != "paper" or (annotation.y or 0) < 0.999:
            continue  # not a panel title
        axes = [a for a in fig.layout if a.startswith("xaxis")]
        domains = [fig.layout[a].domain for a in axes]
        panel = min((d for d in domains if d[0] - 0.01 <= annotation.x <= d[1] + 0.01), key=lambda d: d[1] - d[0])
        size = annotation.font.size or 16
        for line in lines(annotation.text):
            gap = 0.08 * plot_width  # the spacing beside a panel is free for its title
            assert px(line, size) <= (panel[1] - panel[0]) * plot_width + gap, f"{name}: panel title {line!r} too wide"


@pytest.mark.parametrize("name, fig", FIGURES, ids=[n for n, _ in FIGURES])
def test_a_legend_below_the_plot_sits_under_the_axis_title_and_inside_the_figure(name, fig):
    legend = fig.layout.legend
    if legend.orientation != "h" or legend.y is None or legend.y >= 0:
        return
    plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    below = -legend.y * plot_px
    assert below >= 55, f"{name}: the legend starts {below:.0f} px under the plot, on the x-axis title"
    assert fig.layout.margin.b >= below + 25, f"{name}: the legend runs out of the {fig.layout.margin.b} px margin"


@pytest.mark.parametrize("name, fig", FIGURES, ids=[n for n, _ in FIGURES])
def test_every_chart_says_its_n(name, fig):
    texts = [fig.layout.title.text, fig.layout.title.subtitle.text]
    texts += [a.text for a in fig.layout.annotations]
    for axis in (a for a in fig.layout if a.startswith(("xaxis", "yaxis"))):
        texts += list(fig.layout[axis].ticktext or ())
    assert any(re.search(r"\bn = \d+", t or "") for t in texts), f"{name} does not say its n"


def test_the_explore_widget_sends_json_without_nan_and_one_title_block():
    # a SOURCES:TARGETS sweep leaves cells of the grid empty: NaN, which JSON cannot carry
    df = h.table(h.group(lang="sw", n=3, vanilla={0}, n_layers=4, correct={(0, 1): {1}, (2, 3): {0, 2}}))
    box = explore.explore(df, lang="sw", facet=None, pooled=False)
    widget = box.children[0]
    (trace,) = widget.data
    assert any(v is None for row in trace.z for v in row)  # the empty cells are gaps

    def numbers(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from numbers(v)
        elif isinstance(value, (list, tuple, np.ndarray)):
            for v in value:
                yield from numbers(v)
        elif isinstance(value, (float, np.floating)):
            yield float(value)

    assert all(math.isfinite(v) for v in numbers(widget._widget_data))
    json.dumps(widget._widget_data, allow_nan=False, default=lambda o: o.tolist())
    assert not widget.layout.title.subtitle.text and "<br>" in widget.layout.title.text  # subtitle below the title
