"""xtl.explore without a browser: the pure click function, and that the widget wires it.

In the worked example (tests/test_analysis.py) sw configuration (1, 1) has
C = {0, 1, 3} against V = {0, 4}: instances 1 and 3 gained, 4 lost.
"""

from __future__ import annotations

import plotly.graph_objects as go
from xtl.testing.tables import two_langs

from xtl import explore

SW_GROUP = {"model": "tiny-qwen2", "site": "ffn", "benchmark": "xnli", "split": "sample", "langs": ["sw"]}


def rows_of(html: str, direction: str) -> int:
    return html.count(f'<tr class="{direction}">')


def test_on_cell_click_lists_gained_and_lost_with_prompts_and_answers():
    df = two_langs()
    html = explore.on_cell_click(df, SW_GROUP, 1, 1)
    assert "source layer 1 → target layer 1" in html
    assert "2 gained (wrong → right), 1 lost (right → wrong)" in html
    assert (rows_of(html, "gained"), rows_of(html, "lost")) == (2, 1)
    for k in (1, 3, 4):
        assert f"xnli/sample/sw/{k}</td>" in html
        assert f"source prompt {k} (en)" in html and f"target prompt {k} (sw)" in html
    assert "xnli/sample/sw/0</td>" not in html  # right under both: not a flip
    assert "(2) wrong [vanilla] #1" in html and "(1) right [ffn 1-&gt;1] #1" in html
    # gained rows come first
    assert html.index("xnli/sample/sw/3") < html.index("xnli/sample/sw/4")


def test_on_cell_click_pooled_panel_lists_every_language():
    df = two_langs()
    html = explore.on_cell_click(df, {**SW_GROUP, "langs": ["sw", "th"]}, 1, 1)
    # th (1,1): C = {0}, V = {2}
    assert (rows_of(html, "gained"), rows_of(html, "lost")) == (3, 2)
    assert "xnli/sample/th/0</td>" in html and "xnli/sample/th/2</td>" in html


def test_on_cell_click_escapes_prompts_and_reports_no_flips():
    df = two_langs()
    df.loc[df["instance_id"] == "xnli/sample/sw/1", "target"] = "<script>alert(1)</script>"
    html = explore.on_cell_click(df, SW_GROUP, 1, 1)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    quiet = two_langs()
    quiet = quiet[~((quiet["lang"] == "sw") & (quiet["instance_id"] != "xnli/sample/sw/2"))]
    # sw reduced to instance 2: wrong under vanilla and under (1,0) -> no flip
    html = explore.on_cell_click(quiet, SW_GROUP, 1, 0)
    assert "answers every instance as vanilla does" in html


def test_explore_widget_wires_clicks_to_on_cell_click():
    df = two_langs()
    box = explore.explore(df)
    widget, output = box.children
    assert isinstance(widget, go.FigureWidget)
    assert len(widget.data) == 3  # pooled, sw, th
    assert all(len(trace._click_callbacks) == 1 for trace in widget.data)
    assert "Click a cell" in output.value

    # the message the browser sends when cell (i=1, j=1) of the sw panel (trace 1) is clicked
    widget._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"xs": [1], "ys": [1], "point_indexes": [[1, 1]], "trace_indexes": [1]},
        "device_state": None,
        "selector": None,
    }
    assert output.value == explore.on_cell_click(df, widget.data[1].meta, 1, 1)
    assert (rows_of(output.value, "gained"), rows_of(output.value, "lost")) == (2, 1)

    # a click on the pooled panel (trace 0) at (i=0, j=1) lists both languages
    widget._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"xs": [1], "ys": [0], "point_indexes": [[0, 1]], "trace_indexes": [0]},
    }
    assert "sw, th" in output.value
    assert output.value == explore.on_cell_click(df, {**SW_GROUP, "langs": ["sw", "th"]}, 0, 1)
