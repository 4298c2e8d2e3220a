"""Every notebook runs top to bottom on its defaults (offline, on CPU) and shows what it
promises. The kernel is this interpreter: jupyter_client runs a kernelspec whose
command is `python` with `sys.executable`, and the first cell checks it."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from xtl import analysis, results
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = (
    "01_casual_transplant",
    "02_sweep_and_heatmaps",
    "03_upper_bounds",
    "04_reproduce_paper_figures",
    "05_instance_aware_selection",
)
PLOTLY = "application/vnd.plotly.v1+json"


def execute(name: str, monkeypatch, **parameters) -> nbformat.NotebookNode:
    """Run a notebook in notebooks/ (the kernel inherits the environment); `parameters`
    are assigned in a cell right after the one tagged `parameters`, as papermill does."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    tagged = next(k for k, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
    if parameters:
        nb.cells.insert(tagged + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items())))
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    # Several torch threads fighting for 2 busy cores make the model many times slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = NotebookClient(nb, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    assert nb.cells[0].outputs[0]["text"].strip() == sys.executable
    return nb


def pngs(nb: nbformat.NotebookNode) -> int:
    """How many outputs carry a static PNG (the fallback GitHub and nbconvert show)."""
    return sum("image/png" in output.get("data", {}) for output in outputs(nb))


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def text_of(nb: nbformat.NotebookNode) -> str:
    parts = []
    for output in outputs(nb):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        for mime in ("text/plain", "text/html"):
            if mime in output.get("data", {}):
                parts.append(output["data"][mime])
    return "\n".join(parts)


def figures(nb: nbformat.NotebookNode) -> list[dict]:
    return [output["data"][PLOTLY] for output in outputs(nb) if PLOTLY in output.get("data", {})]


def shape(array) -> tuple[int, ...]:
    """The shape of an array in a plotly figure's JSON (a nested list, or plotly's typed-array dict)."""
    if isinstance(array, dict):
        return tuple(int(n) for n in str(array["shape"]).split(","))
    return (len(array), len(array[0]))


def test_notebooks_are_stored_with_outputs_png_fallbacks_and_parameters():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == list(NAMES)
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert all(cell.execution_count is not None for cell in code), name  # run top to bottom, stored with outputs
        tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1 and tagged[0] is code[0], name  # papermill: the first code cell
        assert "SmolLM2-135M-Instruct" in tagged[0].source, name  # the real model by default
        assert "progress=False" not in "".join(cell.source for cell in code), name
        if figures(nb):  # every stored plotly figure has its static image beside it
            assert pngs(nb) == len(figures(nb)), name
    assert "The capital of France is Paris." in text_of(nbformat.read(NOTEBOOKS / "01_casual_transplant.ipynb", as_version=4))


def test_01_casual_transplant_fixes_the_french_answer(monkeypatch):
    nb = execute("01_casual_transplant", monkeypatch, max_new_tokens=10, scan_step=3)
    text = text_of(nb)
    assert "SmolLM2-135M-Instruct: 30 layers" in text
    assert "La capitale de la France est la France." in text  # vanilla: wrong
    assert "ffn 7 → 10" in text and "The capital of France is Paris." in text  # the transplant: right
    assert "read    blocks.7.hook_mlp_out" in text and "written blocks.10.hook_mlp_out" in text
    scan = [o["data"]["text/html"] for o in outputs(nb) if "same as vanilla" in o.get("data", {}).get("text/html", "")]
    assert len(scan) == 1 and scan[0].count("<tr") == 1 + 10  # the header and one row per scanned source layer (0, 3, .., 27)


def test_02_sweep_and_heatmaps(monkeypatch, tmp_path):
    run_dir = tmp_path / "run"
    nb = execute("02_sweep_and_heatmaps", monkeypatch, layers="0,7,10", limit=4, run_dir=str(run_dir))
    text = text_of(nb)
    assert "40 rows: 4 instances of facts fr x (1 vanilla + 9 configurations) on SmolLM2-135M-Instruct" in text
    heatmaps = [f for f in figures(nb) if any(t.get("type") == "heatmap" for t in f["data"])]
    swept = [0, 7, 10]
    trace = heatmaps[0]["data"][0] if heatmaps else {}
    # the gain grid of the swept layers only (of a 30-layer model), on categorical axes naming them
    assert shape(trace["z"]) == (3, 3) and [int(v) for v in trace["y"]] == swept and [int(v) for v in trace["x"]] == swept
    # every cell shows the gain the analysis computes from the stored rows (rows: source layer, columns: target)
    shown = grid(trace["z"])
    gain = analysis.gain_grid(results.load(run_dir), site="ffn", lang="fr")
    assert [v for row in shown for v in row] == pytest.approx(gain.loc[swept, swept].to_numpy().ravel().tolist())
    assert gain.loc[7, 10] > 0  # the French question fixed by ffn 7 -> 10 (notebook 01), seen in the heatmap
    assert pngs(nb) == len(figures(nb)) >= 1  # each figure with its static fallback
    widget = [o for o in outputs(nb) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widget, "the explore widget was not displayed"
    assert "gained (wrong → right)" in text


def test_a_path_that_does_not_resolve_fails_loudly(monkeypatch, tmp_path):
    with pytest.raises(CellExecutionError, match="XtlError") as raised:
        execute("02_sweep_and_heatmaps", monkeypatch, model_name=str(tmp_path / "no-such-model"))
    assert "no-such-model" in str(raised.value)
    with pytest.raises(CellExecutionError, match="XtlError") as raised:
        execute("04_reproduce_paper_figures", monkeypatch, data_dir=str(tmp_path / "no-such-data"), models=["demo"])
    assert "no-such-data" in str(raised.value)


def test_03_upper_bounds(monkeypatch):
    nb = execute("03_upper_bounds", monkeypatch, layers="0,7,10", limit=4)
    text = text_of(nb)
    printed = {line.rsplit(" ", 1)[0].strip(): float(line.rsplit(" ", 1)[1].rstrip("%")) / 100
               for line in text.splitlines() if line.startswith(("vanilla accuracy", "mean over", "upper bound"))}  # fmt: skip
    assert list(printed) == ["vanilla accuracy", "mean over all configurations", "upper bound (any configuration)",
                             "upper bound with vanilla"]  # fmt: skip
    # the figure draws the numbers the analysis printed: vanilla and the mean as flat lines, each
    # layer's upper bound at most the overall one
    curves = next(f for f in figures(nb) if any(t.get("name") == "upper bound" for t in f["data"]))
    traces = {t["name"]: numbers(t["y"]) for t in curves["data"][:4]}  # the source-wise panel
    assert traces["vanilla"] == [pytest.approx(printed["vanilla accuracy"], abs=5e-4)] * 30
    assert traces["average of configurations"] == [pytest.approx(printed["mean over all configurations"], abs=5e-4)] * 30
    swept = [v for v in traces["upper bound"] if v is not None and v == v]  # layers 0, 7, 10 (the others empty)
    assert len(swept) == 3 and max(swept) <= printed["upper bound (any configuration)"] + 5e-4
    assert pngs(nb) == len(figures(nb))
    assert "overall" in text and "targetfirst" in text


def test_04_reproduce_paper_figures(monkeypatch, tmp_path):
    started = time.perf_counter()
    nb = execute("04_reproduce_paper_figures", monkeypatch, langs=["sw"], limit=2, layers="0,15", runs_dir=str(tmp_path))
    text = text_of(nb)
    assert "SmolLM2-135M-Instruct" in text and "mode score, metric: mean gold margin" in text
    # the stored runs, one per benchmark, read back: what the notebook shows is computed from them
    runs = sorted(tmp_path.iterdir())
    assert [run.name for run in runs] == [f"SmolLM2-135M-Instruct-{b}-sample-score" for b in ("globalopinionqa", "xcopa", "xnli")]
    df = pd.concat([results.load(run) for run in runs], ignore_index=True)
    # the effect of transplanting, with its interval, per site and benchmark: each printed line is average_effect's value
    printed = {
        (site, benchmark): tuple(float(v) for v in values)
        for site, benchmark, *values in re.findall(
            r"SmolLM2-135M-Instruct (\S+) +(\S+) +n=  2: effect ([-+]\d\.\d{3}) \[([-+]\d\.\d{3}), ([-+]\d\.\d{3})\]", text
        )
    }
    effects = analysis.average_effect(df, "gold_margin")
    pooled = effects[effects["lang"] == analysis.POOLED]
    assert len(printed) == len(pooled) == 2 * 3 and "ci_low" in text
    for r in pooled.itertuples():
        assert printed[(r.site, r.benchmark)] == pytest.approx((r.effect, r.ci_low, r.ci_high), abs=5e-4)
    # per benchmark: a gain heatmap (both sites), per site layer-wise heatmaps and upper bounds, one win/tie/lose
    assert len(figures(nb)) == 3 * (1 + 2 + 1 + 2) == pngs(nb)
    assert all("nats" in json.dumps(f["layout"]) for f in figures(nb))
    # the first gain heatmap (globalopinionqa, one panel per site): every cell is gain_grid's value on the stored rows
    panels = [t for t in figures(nb)[0]["data"] if t.get("type") == "heatmap"]
    assert sorted(t["meta"]["site"] for t in panels) == ["attn-paper", "ffn"]
    for trace in panels:
        assert trace["meta"]["benchmark"] == "globalopinionqa"
        gain = analysis.gain_grid(df, site=trace["meta"]["site"], benchmark="globalopinionqa", pooled=True, metric="gold_margin")
        shown = [v for row in grid(trace["z"]) for v in row]
        assert shown == pytest.approx(gain.loc[[0, 15], [0, 15]].to_numpy().ravel().tolist())
        assert any(abs(v) > 1e-6 for v in shown)  # a transplant that moves the gold margin somewhere
    assert "max_confidence(option_top_margin)" in text and "set report_path" in text
    print(f"notebook 04 on its test settings: {time.perf_counter() - started:.0f} s")


def grid(array) -> list[list[float]]:
    """A 2-d array of a plotly figure's JSON as nested lists (None: NaN)."""
    if isinstance(array, dict):
        import numpy as np

        return np.array(numbers(array), dtype=float).reshape(shape(array)).tolist()
    return [[float("nan") if v is None else v for v in row] for row in array]


def numbers(array) -> list[float]:
    """The values of an array in a plotly figure's JSON (a list, or plotly's typed-array dict)."""
    if isinstance(array, dict):
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)



def test_05_instance_aware_selection(monkeypatch):
    started = time.perf_counter()
    nb = execute("05_instance_aware_selection", monkeypatch, limit=6, layers="0,8,16")
    text = text_of(nb)
    assert "30 layers; PilotSet 6 instances, held-out 6 instances, 9 configurations each" in text
    for name in ("vanilla", "best_fixed", "vote", "upper_bound", "gap_closed"):
        assert name in text
    drawn = figures(nb)
    assert len(drawn) == 2 == pngs(nb)  # the selector bars and the top-k curves, each with its PNG
    bars = next(t for t in drawn[0]["data"] if t.get("type") == "bar")
    upper = max(shape["y0"] for shape in drawn[0]["layout"]["shapes"])
    assert all(0 <= y <= upper + 1e-9 for y in numbers(bars["y"]))  # no selector beats the oracle
    assert time.perf_counter() - started < 240
