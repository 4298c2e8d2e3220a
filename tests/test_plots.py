"""xtl.plots: each figure holds exactly the numbers of the worked example (tests/test_analysis.py).

sw gains [[-1/5, 1/5], [-2/5, 1/5]], th gains [[0, -1/3], [0, 0]], pooled gains
[[-1/8, 0], [-2/8, 1/8]] (source layer x target layer).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
from xtl.testing.tables import SW, group, table, two_langs

from xtl import plots
from xtl.errors import XtlError


@pytest.fixture
def df():
    return two_langs()


def z(trace) -> np.ndarray:
    return np.asarray(trace.z, dtype=float)


def test_gain_heatmap_one_language(df):
    fig = plots.gain_heatmap(df, lang="sw")
    assert isinstance(fig, go.Figure)
    (trace,) = fig.data
    assert trace.type == "heatmap"
    np.testing.assert_allclose(z(trace), [[-1 / 5, 1 / 5], [-2 / 5, 1 / 5]], atol=1e-12)
    assert list(trace.y) == [0, 1] and list(trace.x) == [0, 1]  # rows: source layer, columns: target layer
    # cell (i=1, j=1): accuracy 3/5, gain 1/5, gained {1,3}, lost {4}, of 5
    np.testing.assert_allclose(np.asarray(trace.customdata)[1][1], [3 / 5, 1 / 5, 2, 1, 5], atol=1e-12)
    # cell (i=1, j=0): nothing right, vanilla {0,4} lost
    np.testing.assert_allclose(np.asarray(trace.customdata)[1][0], [0, -2 / 5, 0, 2, 5], atol=1e-12)
    for word in ("source layer", "target layer", "accuracy", "gain", "gained", "lost"):
        assert word in trace.hovertemplate
    assert trace.meta == {
        "model": "tiny-qwen2", "site": "ffn", "benchmark": "xnli", "split": "sample", "langs": ["sw"], "pooled": False,
    }  # fmt: skip
    assert fig.layout.coloraxis.cmid == 0


def test_gain_heatmap_pooled_and_per_language_panels(df):
    fig = plots.gain_heatmap(df, facet="lang", pooled=True)
    # every panel says its n and vanilla accuracy: sw 2 of 5, th 1 of 3, pooled 3 of 8
    assert [a.text for a in fig.layout.annotations] == [
        "all languages · n = 8 · vanilla 37.5%", "sw · n = 5 · vanilla 40.0%", "th · n = 3 · vanilla 33.3%",
    ]  # fmt: skip
    pooled, sw, th = fig.data
    np.testing.assert_allclose(z(pooled), [[-1 / 8, 0], [-2 / 8, 1 / 8]], atol=1e-12)
    np.testing.assert_allclose(z(sw), [[-1 / 5, 1 / 5], [-2 / 5, 1 / 5]], atol=1e-12)
    np.testing.assert_allclose(z(th), [[0, -1 / 3], [0, 0]], atol=1e-12)
    assert pooled.meta["langs"] == ["sw", "th"] and pooled.meta["pooled"]
    assert th.meta["langs"] == ["th"]
    # all panels share one colour axis centred on 0
    assert {t.coloraxis for t in fig.data} == {"coloraxis"}


def test_gain_heatmap_models_side_by_side(df):
    other = group(lang="sw", model="tiny-llama", n=2, n_layers=3, vanilla={0}, correct={(2, 1): {0, 1}})
    both = table(df, other)
    with pytest.raises(XtlError, match="2 models"):
        plots.gain_heatmap(both, lang="sw")
    fig = plots.gain_heatmap(both, lang="sw", facet="model")
    assert [a.text for a in fig.layout.annotations] == [
        "tiny-llama · n = 2 · vanilla 50.0%", "tiny-qwen2 · n = 5 · vanilla 40.0%",
    ]  # fmt: skip
    llama, qwen = fig.data
    # each model keeps its own layers, and shows only those it swept: llama ran (2, 1) alone
    assert z(llama).shape == (1, 1) and list(llama.y) == [2] and list(llama.x) == [1]
    assert z(llama)[0, 0] == pytest.approx(1 / 2)
    assert z(qwen).shape == (2, 2)
    assert llama.meta["model"] == "tiny-llama"


def test_heatmaps_of_a_layer_subset_show_only_the_swept_layers_on_categorical_axes(df):
    subset = group(lang="sw", n=2, n_layers=30, vanilla={0},
                   correct={(i, j): {0, 1} if i < j else set() for i in (0, 3, 7, 17) for j in (0, 3, 7, 17)})  # fmt: skip
    fig = plots.gain_heatmap(subset, lang="sw")
    (trace,) = fig.data
    assert list(trace.x) == [0, 3, 7, 17] and list(trace.y) == [0, 3, 7, 17] and z(trace).shape == (4, 4)
    assert not np.isnan(z(trace)).any()  # no empty rows or columns for the 26 layers not swept
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        assert axis.type == "category" and list(axis.tickvals) == [0, 3, 7, 17]
    layerwise = plots.layerwise_heatmap(subset, lang="sw")
    for trace, axis in zip(layerwise.data, (layerwise.layout.xaxis, layerwise.layout.xaxis2)):
        assert list(trace.x) == [0, 3, 7, 17] and axis.type == "category" and list(axis.tickvals) == [0, 3, 7, 17]


def test_gain_heatmap_needs_one_language_or_pooled(df):
    with pytest.raises(XtlError, match="lang=.*pooled=True"):
        plots.gain_heatmap(df)
    with pytest.raises(XtlError, match="facet='layer'"):
        plots.gain_heatmap(df, facet="layer")


def test_layerwise_heatmap(df):
    fig = plots.layerwise_heatmap(df)
    source, target = fig.data
    assert list(source.y) == ["sw", "th", "all languages"]
    # each row's label says its n and vanilla accuracy (left panel only: the rows are the same)
    assert list(fig.layout.yaxis.ticktext) == [
        "sw · n = 5 · vanilla 40.0%", "th · n = 3 · vanilla 33.3%", "all languages · n = 8 · vanilla 37.5%",
    ]  # fmt: skip
    assert fig.layout.yaxis2.showticklabels is False
    np.testing.assert_allclose(z(source), [[0, -1 / 10], [-1 / 6, 0], [-1 / 16, -1 / 16]], atol=1e-12)
    np.testing.assert_allclose(z(target), [[-3 / 10, 1 / 5], [0, -1 / 6], [-3 / 16, 1 / 16]], atol=1e-12)
    assert list(source.x) == [0, 1]


def test_layerwise_heatmap_sites_side_by_side():
    ffn = group(lang="sw", site="ffn", **SW)
    attn = group(lang="sw", site="attn", n=5, vanilla={0, 4}, correct={(0, 0): {0, 1, 2, 3, 4}})
    fig = plots.layerwise_heatmap(table(ffn, attn), facet="site")
    assert len(fig.data) == 4
    attn_source = fig.data[0]  # sites sorted: attn first
    # attn ran only (0,0): source layer 0 mean gain 3/5, layer 1 not run
    assert z(attn_source)[0, 0] == pytest.approx(3 / 5)
    assert list(attn_source.x) == [0]  # layer 1 not run: no empty column for it


def test_win_tie_lose_bars(df):
    fig = plots.win_tie_lose_bars(df)
    win, tie, lose = fig.data
    assert [t.name for t in fig.data] == ["win", "tie", "lose"]
    assert list(win.y) == ["sw", "th", "all languages"]
    assert list(fig.layout.yaxis.ticktext)[-1] == "all languages · n = 8 · vanilla 37.5%"
    # what is counted is said: configurations, not instances
    assert fig.layout.xaxis.title.text == "share of configurations"
    assert "configuration (i, j) wins when it gets more of the n instances right" in fig.layout.title.subtitle.text
    np.testing.assert_allclose(win.x, [2 / 4, 0, 2 / 8])
    np.testing.assert_allclose(tie.x, [0, 3 / 4, 3 / 8])
    np.testing.assert_allclose(lose.x, [2 / 4, 1 / 4, 3 / 8])
    assert fig.layout.barmode == "stack"


def test_upper_bound_curves_pooled(df):
    fig = plots.upper_bound_curves(df, pooled=True)
    by_panel = {}
    for trace in fig.data:
        by_panel.setdefault(trace.xaxis, {})[trace.name] = np.asarray(trace.y, dtype=float)
    source, target = by_panel["x"], by_panel["x2"]
    np.testing.assert_allclose(source["upper bound"], [5 / 8, 5 / 8])
    np.testing.assert_allclose(source["upper bound with vanilla"], [6 / 8, 7 / 8])
    np.testing.assert_allclose(target["upper bound"], [3 / 8, 5 / 8])
    np.testing.assert_allclose(target["upper bound with vanilla"], [5 / 8, 7 / 8])
    np.testing.assert_allclose(source["vanilla"], [3 / 8, 3 / 8])
    np.testing.assert_allclose(target["average of configurations"], [10 / 32, 10 / 32])
    assert fig.layout.title.subtitle.text.startswith("n = 8 · vanilla 37.5% · ")
    assert fig.layout.yaxis.title.text == "accuracy (share of n instances)"


def test_upper_bound_curves_one_language(df):
    fig = plots.upper_bound_curves(df, lang="th")
    source = {t.name: list(t.y) for t in fig.data if t.xaxis == "x"}
    assert source["upper bound"] == pytest.approx([1 / 3, 2 / 3])
    assert source["upper bound with vanilla"] == pytest.approx([2 / 3, 1])


def test_plot_functions_never_show_or_save(df, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a plot function showed or saved its figure")

    for method in ("show", "write_html", "write_image", "write_json"):
        monkeypatch.setattr(go.Figure, method, forbidden)
    figures = [
        plots.gain_heatmap(df, facet="lang", pooled=True),
        plots.layerwise_heatmap(df),
        plots.win_tie_lose_bars(df),
        plots.upper_bound_curves(df, pooled=True),
    ]
    assert all(isinstance(f, go.Figure) for f in figures)


def test_an_all_wrong_run_says_so_instead_of_grey_panels():
    zero = group(lang="sw", n=4, vanilla=set(), correct={(i, j): set() for i in range(2) for j in range(2)})
    figures = [plots.gain_heatmap(zero, lang="sw"), plots.layerwise_heatmap(zero), plots.win_tie_lose_bars(zero),
               plots.upper_bound_curves(zero, lang="sw")]  # fmt: skip
    for fig in figures:
        assert "every answer is wrong, vanilla too (accuracy 0 everywhere)" in fig.layout.title.subtitle.text
    # a run with right answers gets no such note
    assert "wrong" not in plots.gain_heatmap(two_langs(), lang="sw").layout.title.subtitle.text
