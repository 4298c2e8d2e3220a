"""xtl.report and the `xtl report` / `xtl figures` commands, on hand-made tables.

The browser test opens the report in Debian's headless Chromium (/usr/bin/chromium,
installed by scripts/setup.sh --test) through Playwright; it fails, never skips,
when Chromium is missing.
"""

from __future__ import annotations

import re
import struct
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from xtl.testing.tables import group, table, two_langs

from xtl import cli, report
from xtl.errors import XtlError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def df() -> pd.DataFrame:
    """tiny-qwen2 ffn (the worked example) and attn-paper, tiny-llama ffn, and a benchmark without gold."""
    attn = table(
        group(lang="sw", site="attn-paper", n=5, vanilla={0, 4}, correct={(0, 0): {0, 1, 2, 3, 4}}),
        group(lang="th", site="attn-paper", n=3, vanilla={2}, correct={(0, 0): set()}),
    )
    llama = group(lang="sw", model="tiny-llama", n_layers=3, n=2, vanilla={0},
                  correct={(i, j): {0, 1} if i == j else set() for i in range(3) for j in range(3)})  # fmt: skip
    no_gold = group(lang="sw", benchmark="pairs:mine", n=2, vanilla=set(), correct={(0, 0): {0}}, gold=None)
    return table(two_langs(), attn, llama, no_gold)


def cells(*values: str) -> str:
    """A regex for consecutive table cells."""
    return r"\s*".join(f"<td>{re.escape(v)}</td>" for v in values)


def test_report_is_self_contained_with_every_figure_and_table(df, tmp_path):
    path = report.write_report(df, tmp_path / "out" / "report.html", title="My <report>")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<h1>My &lt;report&gt;</h1>" in text
    # plotly.js embedded exactly once, nothing fetched from anywhere
    assert text.count("* plotly.js v") == 1
    assert not re.search(r"<script[^>]*\bsrc=", text)
    # 3 scored groups x 4 figures + 3 side-by-side figures for xnli/sample
    assert text.count('class="plotly-graph-div"') == 15
    for title in ("tiny-qwen2 · ffn · xnli/sample", "tiny-qwen2 · attn-paper · xnli/sample",
                  "tiny-llama · ffn · xnli/sample", "Side by side: xnli/sample (model, site)"):  # fmt: skip
        assert f"<h2>{title}</h2>" in text
    # no gold: named, not scored
    assert "Not scored" in text and "tiny-qwen2 ffn pairs:mine/sample" in text
    # run metadata
    assert re.search(cells("tiny-qwen2", "fp-tiny-qwen2", "2", "xnli", "sample"), text)

    start = text.index("<h2>tiny-qwen2 · ffn · xnli/sample</h2>")
    ffn = text[start:text.index("</section>", start)]
    # average performance: pooled 10/32 against 3/8
    assert re.search(cells("all languages", "8", "4", "31.2%", "37.5%", "-6.2%"), ffn)
    # upper bounds: pooled 7/8, with vanilla 8/8; th 2/3 and 3/3
    assert re.search(cells("all languages", "8", "37.5%", "87.5%", "100.0%"), ffn)
    assert re.search(cells("th", "3", "33.3%", "66.7%", "100.0%"), ffn)
    # selected pairs: sw overall (1,1) 3 of 5; th targetfirst (1,0)
    assert re.search(cells("sw", "overall", "1", "1", "3", "5", "60.0%", "40.0%", "+20.0%"), ffn)
    assert re.search(cells("th", "targetfirst", "1", "0", "1", "3"), ffn)


def test_report_sections_in_site_order_ffn_attn_attn_paper():
    sites = [group(lang="sw", site=site, n=2, vanilla={0}, correct={(0, 0): {1}}) for site in ("attn-paper", "attn", "ffn")]
    titles = [section.title for section in report.report_sections(table(*sites))]
    assert titles[:3] == ["tiny-qwen2 · ffn · xnli/sample", "tiny-qwen2 · attn · xnli/sample",
                          "tiny-qwen2 · attn-paper · xnli/sample"]  # fmt: skip


def test_report_notes_a_run_where_every_answer_is_wrong():
    zero = group(lang="sw", n=3, vanilla=set(), correct={(0, 0): set(), (1, 1): set()})
    (section,) = report.report_sections(zero)
    assert any("Every answer of this run is wrong" in note for note in section.notes)
    assert not any("wrong" in note for note in report.report_sections(two_langs())[0].notes)


def test_figure_files_of_very_long_split_and_model_names(tmp_path):
    long_df = two_langs(model="m" * 300, split="s" * 300)
    paths = report.write_figures(long_df, tmp_path, png=False)
    assert len(paths) == 4 and all(len(p.name) <= 140 for p in paths)
    assert len({p.name for p in paths}) == 4  # still one file per figure
    # names that differ only past the cut do not collide
    other = report.write_figures(two_langs(model="m" * 300 + "x", split="s" * 300), tmp_path / "b", png=False)
    assert {p.name for p in paths}.isdisjoint(p.name for p in other)


def test_report_applies_pairs_chosen_on_sample_to_unseen():
    unseen = table(
        group(lang="sw", split="unseen", n=4, vanilla={0}, correct={(1, 1): {0, 1, 2}}),
        group(lang="th", split="unseen", n=2, vanilla={0, 1}, correct={(1, 0): {0}}),
    )
    text = report.render_report(table(two_langs(), unseen))
    start = text.index("<h2>tiny-qwen2 · ffn · xnli/sample</h2>")
    sample = text[start:text.index("</section>", start)]
    # overall pairs on sample: sw (1,1), th (1,0); on unseen 3/4 vs 1/4, 1/2 vs 2/2, pooled 4/6 vs 3/6
    applied = sample[sample.index("Pairs chosen on sample (overall) applied to unseen"):]
    assert re.search(cells("sw", "1", "1", "3", "4", "75.0%", "25.0%", "+50.0%", "2", "0"), applied)
    assert re.search(cells("th", "1", "0", "1", "2", "50.0%", "100.0%", "-50.0%", "0", "1"), applied)
    assert re.search(cells("all languages", "–", "–", "4", "6", "66.7%", "50.0%", "+16.7%"), applied)
    # targetfirst chose sw (0,0), which the unseen run does not have
    assert "Pairs chosen on sample (targetfirst) applied to unseen: not available" in sample
    assert "do not include configuration (0, 0)" in sample


def test_report_of_only_unscored_rows_says_so(tmp_path):
    no_gold = group(n=2, vanilla=set(), correct={(0, 0): {0}}, gold=None, benchmark="pairs:mine")
    text = report.write_report(no_gold, tmp_path / "r.html").read_text()
    assert "No gold answers" in text and "plotly-graph-div" not in text


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_write_figures_html_and_png(tmp_path):
    df = two_langs()
    paths = report.write_figures(df, tmp_path / "figs")
    names = ["tiny-qwen2_ffn_xnli_sample_gain", "tiny-qwen2_ffn_xnli_sample_layerwise",
             "tiny-qwen2_ffn_xnli_sample_win_tie_lose", "tiny-qwen2_ffn_xnli_sample_upper_bounds"]  # fmt: skip
    assert paths == [tmp_path / "figs" / f"{n}.html" for n in names] + [tmp_path / "figs" / f"{n}.png" for n in names]
    # the HTML files share one plotly.min.js beside them: they open offline
    assert (tmp_path / "figs" / "plotly.min.js").stat().st_size > 1_000_000
    html = (tmp_path / "figs" / f"{names[0]}.html").read_text()
    assert re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", html) == ["plotly.min.js"]
    # PNGs at the figure's layout size times the export scale, and not blank
    gain = report.report_sections(df)[0].figures[0].figure
    width, height = png_size(tmp_path / "figs" / f"{names[0]}.png")
    assert (width, height) == (gain.layout.width * report.PNG_SCALE, gain.layout.height * report.PNG_SCALE)
    assert all((tmp_path / "figs" / f"{n}.png").stat().st_size > 10_000 for n in names)


def test_png_export_without_kaleido_is_a_clear_error(monkeypatch, tmp_path):
    import importlib.metadata

    real = importlib.metadata.version

    def version(name):
        if name == "kaleido":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(XtlError, match="pip install .kaleido>=1."):
        report.write_figures(two_langs(), tmp_path)


@pytest.fixture
def run_dirs(tmp_path, monkeypatch, df):
    """Two run directories read by a stand-in for xtl.results.load."""
    dirs = {tmp_path / "run-a": df[df["model"] == "tiny-qwen2"], tmp_path / "run-b": df[df["model"] == "tiny-llama"]}
    for path in dirs:
        path.mkdir()
    fake = types.ModuleType("xtl.results")
    fake.load = lambda run_dir: dirs[Path(run_dir)]
    fake.unify_models = lambda frame: frame
    monkeypatch.setitem(sys.modules, "xtl.results", fake)
    return list(dirs)


def test_report_command(run_dirs, tmp_path, capsys):
    assert cli.main(["report", str(run_dirs[0])]) == 0
    assert capsys.readouterr().out.strip() == str(run_dirs[0] / "_report.html")
    out = tmp_path / "both.html"
    assert cli.main(["report", *map(str, run_dirs), "--out", str(out)]) == 0
    text = out.read_text()
    assert "<h2>tiny-llama · ffn · xnli/sample</h2>" in text and "<h2>tiny-qwen2 · ffn · xnli/sample</h2>" in text


def test_figures_command(run_dirs, tmp_path, capsys):
    out = tmp_path / "figs"
    assert cli.main(["figures", str(run_dirs[1]), "--out", str(out), "--no-png"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / f"tiny-llama_ffn_xnli_sample_{n}.html")
                       for n in ("gain", "layerwise", "win_tie_lose", "upper_bounds")]  # fmt: skip


def test_commands_report_user_mistakes_in_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err


def test_report_renders_in_headless_chromium(df, tmp_path):
    assert CHROMIUM.exists(), "the browser test needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    path = report.write_report(df, tmp_path / "report.html")
    errors: list[str] = []
    remote: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            local = ("file:", "data:", "blob:")
            page.on("request", lambda r: None if r.url.startswith(local) else remote.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 15", timeout=20_000)
            rendered = page.evaluate(
                """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => ({
                    id: gd.id,
                    heatmaps: gd._fullData.filter(t => t.type === 'heatmap').length,
                    images: gd.querySelectorAll('.hm image').length,
                    bars: gd.querySelectorAll('.bars path').length,
                    lines: gd.querySelectorAll('.scatterlayer .js-line').length,
                }))"""
            )
            # at 1280 px nothing sticks out: no figure, colour bar or table is cut
            overflow = page.evaluate(
                """() => ({page: document.documentElement.scrollWidth,
                           cut: [...document.querySelectorAll('.js-plotly-plot, table, .colorbar')]
                                .filter(e => e.getBoundingClientRect().right > window.innerWidth)
                                .map(e => e.id || e.className.baseVal || e.tagName)
                                .concat([...document.querySelectorAll('.table-wrap, .figure')]  // scrolled, not seen
                                .filter(e => e.scrollWidth > e.clientWidth).map(e => e.className))})"""
            )
        finally:
            browser.close()
    assert errors == []
    assert remote == []
    assert overflow == {"page": 1280, "cut": []}
    figures = {r["id"]: r for r in rendered}
    # every heatmap trace drawn as an image: 3 panels (pooled, sw, th), 2 layer-wise, 4 side-by-side
    assert figures["tiny-qwen2_ffn_xnli_sample_gain"]["heatmaps"] == 3
    assert figures["tiny-qwen2_ffn_xnli_sample_gain"]["images"] == 3
    assert figures["tiny-qwen2_ffn_xnli_sample_layerwise"]["images"] == 2
    assert figures["compare_xnli_sample_gain"]["images"] == 3
    for r in rendered:
        assert r["images"] == r["heatmaps"], r
    assert figures["tiny-qwen2_ffn_xnli_sample_win_tie_lose"]["bars"] > 0
    assert figures["tiny-qwen2_ffn_xnli_sample_upper_bounds"]["lines"] > 0
