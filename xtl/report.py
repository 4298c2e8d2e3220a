"""The report (one self-contained HTML file) and the figure files (HTML and PNG).

`report_sections` decides what to show: for each (model, site, benchmark,
split) the gain heatmaps (pooled and per language), the layer-wise heatmaps,
win/tie/lose, the upper-bound curves and the tables of average performance,
upper bounds and selected pairs; and, where a benchmark holds several models or
sites, the same figures side by side. `write_report` and `write_figures` only
lay those out; every number comes from `xtl.analysis`.

Both work offline: the report embeds plotly.js once (inline in the first
figure); the figure files share one `plotly.min.js` beside them; PNGs are drawn
by kaleido (>= 1, with the system's Chrome or Chromium) with the plotly.js of
the installed plotly package and no MathJax.
"""

from __future__ import annotations

import hashlib
import html
import importlib.metadata
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly
import plotly.graph_objects as go

from xtl import analysis, plots, sites
from xtl.errors import XtlError

RunsOrFrames = pd.DataFrame | str | Path | Iterable[pd.DataFrame | str | Path]

PNG_SCALE = 2
REPORT_WIDTH = 1180  # px: the widest figure in the report; with the margins the page fits a 1280 px window


@dataclass
class NamedFigure:
    name: str  # a file-name stem, unique within a report
    title: str
    figure: go.Figure


@dataclass
class Section:
    title: str
    figures: list[NamedFigure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs


def load_results(frames_or_run_dirs: RunsOrFrames) -> pd.DataFrame:
    """One results table from DataFrames and/or run directories (read with `xtl.results.load`)."""
    if isinstance(frames_or_run_dirs, (pd.DataFrame, str, Path)):
        items = [frames_or_run_dirs]
    else:
        items = list(frames_or_run_dirs)
    if not items:
        raise XtlError("no run directories or tables were given; pass at least one")
    frames = []
    for item in items:
        if isinstance(item, pd.DataFrame):
            frames.append(item)
            continue
        run_dir = Path(item)
        if not run_dir.is_dir():
            raise XtlError(f"run directory {str(run_dir)!r} does not exist; pass a folder written by xtl sweep")
        from xtl.results import load  # the results module is only needed for run directories

        frames.append(load(run_dir))
    from xtl.results import unify_models  # one model per fingerprint, whatever its folders are called

    return unify_models(frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True))


# --------------------------------------------------------------------------- what to show


_MAX_STEM = 120  # file-name stems stay far below the 255 bytes file systems allow, suffixes included


def _slug(*parts: str) -> str:
    """A file-name stem: safe characters only; an over-long one is cut and keeps a hash of the whole."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)).strip("-")
    if len(stem) > _MAX_STEM:
        digest = hashlib.sha256("_".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:10]
        stem = f"{stem[: _MAX_STEM - 11].rstrip('-_.')}-{digest}"
    return stem


def _percent(table: pd.DataFrame, rates: Sequence[str] = (), gains: Sequence[str] = ()) -> pd.DataFrame:
    """A display copy with fractions written as percentages."""
    out = table.copy()
    for column in rates:
        out[column] = out[column].map(lambda v: "–" if pd.isna(v) else f"{v:.1%}")
    for column in gains:
        out[column] = out[column].map(lambda v: "–" if pd.isna(v) else f"{v:+.1%}")
    return out


def _lang_label(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(lang=table["lang"].map(plots.lang_label))


def _site_order(site: str) -> int:
    names = sites.names()
    return names.index(site) if site in names else len(names)


def report_sections(df: pd.DataFrame) -> list[Section]:
    """The sections of the report, each with its figures and tables, in order:
    the runs without gold answers, one section per scored run (model, site,
    benchmark, split), the side-by-side comparisons, the selectors."""
    groups = _ordered_groups(df)
    scored, unscored = groups[groups["scored"]], groups[~groups["scored"]]
    sections = [] if unscored.empty else [_unscored_section(unscored)]
    if scored.empty:
        return sections
    df = _scored_rows(df, scored)
    # The per-configuration counts once for everything; the figures that need them pivot this.
    ct = analysis.config_table(df)
    tables = (analysis.average_performance(ct), analysis.selected_pairs_table(ct), analysis.upper_bounds_table(df))
    sections += [_run_section(df, ct, tables, scored, r) for r in scored.itertuples()]
    sections += _comparison_sections(df, ct, scored)
    sections += selection_sections(df)
    return sections


def _ordered_groups(df: pd.DataFrame) -> pd.DataFrame:
    """The table's (model, site, benchmark, split) groups in report order (sites as the site table lists them)."""
    groups = analysis.scored_groups(df)
    if groups.empty:
        raise XtlError("the results table has no transplant rows; run a sweep first")
    groups = groups.assign(_site=groups["site"].map(_site_order))
    groups = groups.sort_values(["model", "benchmark", "split", "_site", "site"], kind="stable")
    return groups.drop(columns="_site").reset_index(drop=True)  # sections: ffn, attn, attn-paper


def _unscored_section(unscored: pd.DataFrame) -> Section:
    names = ", ".join(f"{r.model} {r.site} {r.benchmark}/{r.split}" for r in unscored.itertuples())
    return Section("Not scored", notes=[f"No gold answers (correct is NA), so no accuracy can be computed for: {names}."])


def _scored_rows(df: pd.DataFrame, scored: pd.DataFrame) -> pd.DataFrame:
    """The rows of the scored groups, with their vanilla rows."""
    keep = pd.Series(False, index=df.index)
    for r in scored.itertuples():
        same = (df["model"] == r.model) & (df["benchmark"] == r.benchmark) & (df["split"] == r.split)
        keep |= same & ((df["site"] == r.site).fillna(False).astype(bool) | df["site"].isna())
    return df[keep]


def _run_section(df: pd.DataFrame, ct: pd.DataFrame, tables: tuple, scored: pd.DataFrame, r) -> Section:
    """One scored run's section: its figures, then its average, upper-bound and selected-pair tables."""
    average, pairs, bounds = tables
    where = dict(model=r.model, site=r.site, benchmark=r.benchmark, split=r.split)
    rows = analysis.filter_rows(df, **where)
    several = len(r.languages) > 1
    stem = _slug(r.model, r.site, r.benchmark, r.split)
    section = Section(f"{r.model} · {r.site} · {r.benchmark}/{r.split}")
    if int(rows["correct"].fillna(False).astype(bool).sum()) == 0:
        section.notes.append(
            "Every answer of this run is wrong, vanilla and transplanted (accuracy 0 everywhere), so every gain "
            "is 0 and the heatmaps are one flat colour: check the model, the prompts and max_new_tokens."
        )
    section.figures = [
        NamedFigure(f"{stem}_gain", "Gain over vanilla per configuration",
                    plots.gain_heatmap(ct, **where, facet="lang", pooled=several, columns=3)),
        NamedFigure(f"{stem}_layerwise", "Layer-wise gains", plots.layerwise_heatmap(ct, **where)),
        NamedFigure(f"{stem}_win_tie_lose", "Win / tie / lose", plots.win_tie_lose_bars(ct, **where)),
        NamedFigure(f"{stem}_upper_bounds", "Upper bounds", plots.upper_bound_curves(rows, pooled=True)),
    ]  # fmt: skip
    section.figures += _scoring_figures(rows, where, stem, several)
    avg = _lang_label(analysis.filter_rows(average, **where))
    ub = analysis.filter_rows(bounds, **where)
    ub = _lang_label(ub[ub["scope"] == "overall"])
    chosen = analysis.filter_rows(pairs, **where)
    section.tables += [
        ("Average of all configurations against vanilla",
         _percent(avg[["lang", "n", "n_configurations", "average", "vanilla", "difference"]],
                  rates=("average", "vanilla"), gains=("difference",))),
        ("Instance-aware upper bounds (any configuration right; with vanilla: or vanilla right)",
         _percent(ub[["lang", "n", "vanilla", "upper_bound", "upper_bound_with_vanilla"]],
                  rates=("vanilla", "upper_bound", "upper_bound_with_vanilla"))),
        ("Selected pairs (most correct; ties: smallest target layer, then largest source layer)",
         _percent(chosen[["lang", "mode", "source_layer", "target_layer", "correct", "n", "accuracy",
                          "vanilla_accuracy", "gain"]],
                  rates=("accuracy", "vanilla_accuracy"), gains=("gain",))),
    ]  # fmt: skip
    section.tables += _applied_pairs_tables(ct, scored, r)
    return section


def _comparison_sections(df: pd.DataFrame, ct: pd.DataFrame, scored: pd.DataFrame) -> list[Section]:
    """Per benchmark and split with several models or sites: their figures side by side."""
    sections = []
    for (benchmark, split), part in scored.groupby(["benchmark", "split"], sort=True):
        if len(part) < 2:
            continue
        where = dict(benchmark=benchmark, split=split)
        facet = tuple(k for k in ("model", "site") if part[k].nunique() > 1)
        stem = _slug("compare", benchmark, split)
        sub = analysis.filter_rows(df, **where)
        sections.append(
            Section(
                f"Side by side: {benchmark}/{split} ({', '.join(facet)})",
                figures=[
                    NamedFigure(f"{stem}_gain", "Gain over vanilla, all languages",
                                plots.gain_heatmap(ct, **where, pooled=True, facet=facet, columns=3)),
                    NamedFigure(f"{stem}_win_tie_lose", "Win / tie / lose",
                                plots.win_tie_lose_bars(ct, **where, facet=facet)),
                    NamedFigure(f"{stem}_upper_bounds", "Upper bounds, all languages",
                                plots.upper_bound_curves(sub, **where, pooled=True, facet=facet)),
                ],  # fmt: skip
            )
        )
    return sections


def continuous_metric(rows: pd.DataFrame) -> str | None:
    """The continuous metric a scoring run's figures show: the gold margin with
    two or more options, else the gold log-probability; None for a generate run."""
    if "mode" not in rows.columns or rows.empty or not (rows["mode"] == "score").all():
        return None
    return "gold_margin" if rows["gold_margin"].notna().all() else "gold_logprob" if rows["gold_logprob"].notna().all() else None


def _scoring_figures(rows: pd.DataFrame, where: dict, stem: str, several: bool) -> list[NamedFigure]:
    """For a scoring run: the gain heatmap, layer-wise gains and upper bounds by its continuous metric."""
    metric = continuous_metric(rows)
    if metric is None:
        return []
    what = analysis.metric_label(metric)
    return [
        NamedFigure(f"{stem}_gain_{metric}", f"Gain in {what}",
                    plots.gain_heatmap(rows, **where, facet="lang", pooled=several, columns=3, metric=metric)),
        NamedFigure(f"{stem}_layerwise_{metric}", f"Layer-wise gains in {what}", plots.layerwise_heatmap(rows, **where, metric=metric)),
        NamedFigure(f"{stem}_upper_bounds_{metric}", f"Upper bounds of {what}", plots.upper_bound_curves(rows, pooled=True, metric=metric)),
    ]  # fmt: skip


def _applied_pairs_tables(ct: pd.DataFrame, scored: pd.DataFrame, r) -> list[tuple[str, pd.DataFrame]]:
    """For a PilotSet ("sample") group: its chosen pairs scored on each other split of the table."""
    if r.split != "sample":
        return []
    others = scored[(scored["model"] == r.model) & (scored["site"] == r.site) & (scored["benchmark"] == r.benchmark)]
    tables = []
    for split in sorted(set(others["split"]) - {"sample"}):
        for mode in ("overall", "targetfirst"):
            caption = f"Pairs chosen on sample ({mode}) applied to {split}"
            where = dict(model=r.model, site=r.site, benchmark=r.benchmark)
            try:
                pairs = analysis.select_pair(ct, mode, **where, split="sample")
                applied = analysis.apply_pair(ct, pairs, **where, split=split)
            except XtlError as error:  # e.g. the chosen pairs were not run on that split
                tables.append((f"{caption}: not available ({error})", pd.DataFrame()))
                continue
            shown = _lang_label(applied)[["lang", "source_layer", "target_layer", "correct", "n", "accuracy",
                                          "vanilla_accuracy", "gain", "gained", "lost"]]  # fmt: skip
            tables.append((caption, _percent(shown, rates=("accuracy", "vanilla_accuracy"), gains=("gain",))))
    return tables


# --------------------------------------------------------------------------- instance-aware selection

SELECTION_NOTE = (
    "A selector picks, per instance, one row among vanilla and every configuration of the site, without "
    "looking at gold answers (xtl.selection; `xtl select` prints the same table). The upper bound counts an "
    "instance when any of those rows is right; gap closed = (accuracy - vanilla) / (upper bound - vanilla). "
    "This section is shown when it adds to the upper bounds above: when the rows hold the confidence signal "
    "columns (then the confidence selectors and vote are scored on the run itself, which needs no training), "
    "or when the report holds the PilotSet (split sample) and another split of the same model and benchmark "
    "(then best_fixed, learned and the top-k curves are chosen on the PilotSet and scored on the other split)."
)


def selection_sections(df: pd.DataFrame) -> list[Section]:
    """One section per (model, benchmark, split) with signals or a PilotSet: selectors against vanilla and the upper bound."""
    from xtl import selection  # only the report's selection section needs it

    groups = analysis.scored_groups(df)
    scored = groups[groups["scored"]] if not groups.empty else groups
    sections = []
    for (model, benchmark), part in scored.groupby(["model", "benchmark"], sort=True):
        splits = sorted(set(part["split"]))
        for split in splits:
            rows = analysis.filter_rows(df, model=model, benchmark=benchmark, split=split)
            rows = rows[rows["site"].isin(part[part["split"] == split]["site"]) | rows["site"].isna()]
            train = None
            if split != "sample" and "sample" in splits:
                train = analysis.filter_rows(df, model=model, benchmark=benchmark, split="sample")
            signals = selection.has_signals(rows)
            if train is None and not signals:
                continue  # vote alone, in-sample: `xtl select` prints it; the report shows the upper bounds
            section = Section(f"Instance-aware selection: {model} · {benchmark}/{split}", notes=[SELECTION_NOTE])
            if train is not None:
                section.notes.append(f"Trained and chosen on {benchmark}/sample (the PilotSet), scored on {split}.")
            try:
                result = selection.evaluate(rows, train=train)
                top_k = selection.evaluate_top_k(rows, train) if train is not None else None
            except XtlError as error:
                section.notes.append(f"Not available: {error}.")
                sections.append(section)
                continue
            stem = _slug("selection", model, benchmark, split)
            for site in sorted(result["site"].unique()):
                where = dict(model=model, site=site, benchmark=benchmark, split=split)
                section.figures.append(
                    NamedFigure(f"{_slug(stem, site)}_bars", f"Selectors · {site}", plots.selection_bars(result, **where))
                )
                if top_k is not None:
                    section.figures.append(
                        NamedFigure(f"{_slug(stem, site)}_top_k", f"Only the k best PilotSet pairs · {site}",
                                    plots.selection_top_k_curves(top_k, **where))
                    )  # fmt: skip
            shown = _lang_label(result)[["site", "lang", "selector", "correct", "n", "accuracy", "vanilla_accuracy",
                                         "upper_bound", "gap_closed"]]  # fmt: skip
            section.tables.append(
                (
                    "Selectors per language and pooled (accuracy, vanilla, upper bound, gap closed)",
                    _percent(shown, rates=("accuracy", "vanilla_accuracy", "upper_bound"), gains=("gap_closed",)),
                )
            )
            pooled = _lang_label(result[result["lang"] == analysis.POOLED])
            section.tables.append((
                f"Against {pooled['versus'].iloc[0]}, pooled: the accuracy difference and its 95% paired bootstrap interval",
                pooled[["site", "selector", "n", "difference", "ci_low", "ci_high", "beats"]],
            ))
            metric = continuous_metric(rows)
            if metric is not None:
                by_metric = selection.evaluate(rows, train=train, metric=metric)
                by_metric = by_metric[by_metric["lang"] == analysis.POOLED]
                section.tables.append((
                    f"By {analysis.metric_label(metric)} of the chosen row, pooled, against {by_metric['versus'].iloc[0]} "
                    "(95% paired bootstrap interval)",
                    by_metric[["site", "selector", "n", "accuracy", "difference", "ci_low", "ci_high", "beats"]]
                    .rename(columns={"accuracy": "mean"}),
                ))  # fmt: skip
            sections.append(section)
    return sections


# --------------------------------------------------------------------------- the report


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
.figure { max-width: 100%; overflow-x: auto; }
table.xtl-table td { overflow-wrap: break-word; }
.table-wrap { max-width: 100%; overflow-x: auto; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table.xtl-table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 85%; }
table.xtl-table th, table.xtl-table td { border: 1px solid #ddd; padding: .25em .4em; text-align: right; }
table.xtl-table th { background: #f4f4f4; }
.caption { font-weight: 600; margin-top: 1em; }
.note { color: #555; }
nav li { margin: .1em 0; }
"""


_HEX_IDS = re.compile(r"[0-9a-f]{8,}(, [0-9a-f]{8,})*")


def _breakable(value):
    """Hex ids (fingerprints, run ids) with a zero-width space every 4 digits, where a narrow
    window may break them: the Runs table then fits 1280 px instead of running off the page."""
    if isinstance(value, str) and _HEX_IDS.fullmatch(value):
        return re.sub(r"([0-9a-f]{4})(?=[0-9a-f])", "\\1\u200b", value)
    return value


def _table_html(table: pd.DataFrame) -> str:
    table = table.astype(object).where(table.notna(), "–")  # na_rep misses pd.NA of nullable columns
    table = table.map(_breakable)
    table = table.rename(columns=lambda c: str(c).replace("_", " "))  # headers wrap at spaces in a narrow window
    return table.to_html(index=False, classes="xtl-table", border=0, float_format=lambda v: f"{v:.3f}")


def render_report(df: pd.DataFrame, title: str = "XTransplant report") -> str:
    """The report as one HTML string, plotly.js embedded once (no network needed to view it)."""
    sections = report_sections(df)
    summary = analysis.run_summary(df)
    n_scored = int(df["correct"].notna().sum())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{len(df)} result rows ({n_scored} scored), written by xtl '
        f"{html.escape(_xtl_version())} with plotly {html.escape(plotly.__version__)}. "
        "Gains are a configuration's value minus vanilla's (accuracy, or a scoring run's log-probabilities in nats); “all languages” rows and panels pool the languages "
        "(they sum the counts of every language).</p>",
        "<h2>Runs</h2>",
        f'<div class="table-wrap">{_table_html(summary)}</div>',
        "<nav><h2>Contents</h2><ul>",
        *(f'<li><a href="#section-{k}">{html.escape(s.title)}</a></li>' for k, s in enumerate(sections)),
        "</ul></nav>",
    ]
    first = True
    for k, section in enumerate(sections):
        parts.append(f'<section id="section-{k}"><h2>{html.escape(section.title)}</h2>')
        parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
        for named in section.figures:
            parts.append(f"<h3>{html.escape(named.title)}</h3>")
            figure = named.figure
            if (figure.layout.width or 0) > REPORT_WIDTH:  # the page fits a 1280 px window: squeeze, never cut
                figure = go.Figure(figure).update_layout(width=REPORT_WIDTH)
            figure_html = figure.to_html(
                full_html=False, include_plotlyjs=first, div_id=named.name, config={"displaylogo": False}
            )
            parts.append(f'<div class="figure">{figure_html}</div>')
            first = False
        for caption, table in section.tables:
            parts.append(f'<div class="caption">{html.escape(caption)}</div>')
            if not table.empty:
                parts.append(f'<div class="table-wrap">{_table_html(table)}</div>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _xtl_version() -> str:
    import xtl

    return xtl.__version__  # the one source (the distribution is named xtransplant, the package xtl)


def write_report(frames_or_run_dirs: RunsOrFrames, path: str | Path, title: str = "XTransplant report") -> Path:
    """Write the report of one or several results tables or run directories to `path` (HTML); return it."""
    df = load_results(frames_or_run_dirs)
    path = Path(path)
    if path.is_dir():
        raise XtlError(f"report path {str(path)!r} is a directory; give a file name such as report.html")
    text = render_report(df, title=title)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        from xtl.results import _os_error

        raise _os_error(error, path) from None
    return path


# --------------------------------------------------------------------------- figure files


def write_figures(df: pd.DataFrame, out_dir: str | Path, *, png: bool = True) -> list[Path]:
    """Write every report figure to `out_dir` as NAME.html (sharing one plotly.min.js there) and NAME.png.

    Returns the paths of the HTML and PNG files, in report order.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise XtlError(f"--out {str(out_dir)!r} is a file; give a directory for the figures")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        from xtl.results import _os_error

        raise _os_error(error, out_dir, "create") from None
    figures = [named for section in report_sections(df) for named in section.figures]
    written = []
    for named in figures:
        html_path = out_dir / f"{named.name}.html"
        named.figure.write_html(html_path, include_plotlyjs="directory", config={"displaylogo": False})
        written.append(html_path)
    if png:
        pngs = [(named.figure, out_dir / f"{named.name}.png") for named in figures]
        written += write_pngs(pngs)
    return written


# --------------------------------------------------------------------------- PNG export

NO_KALEIDO = (
    "PNG export needs the kaleido package (version 1 or later), which is not installed: "
    "run `pip install 'kaleido>=1'`, or pass --no-png"
)
OLD_KALEIDO = (
    "PNG export needs kaleido 1 or later (it uses the system's Chrome or Chromium), but kaleido {version} is "
    "installed: run `pip install 'kaleido>=1'`, or pass --no-png"
)
NO_CHROME = (
    "PNG export needs Chrome or Chromium, and kaleido found none: install one (Debian/Ubuntu: "
    "`sudo apt-get install chromium`; macOS/Windows: Google Chrome) or set BROWSER_PATH to its executable, "
    "or pass --no-png"
)
CHROME_FAILED = (
    "PNG export could not run the browser kaleido found ({error}): set BROWSER_PATH to a working Chrome or "
    "Chromium executable, or pass --no-png"
)


def _size(figure: go.Figure) -> tuple[int, int]:
    return int(figure.layout.width or 700), int(figure.layout.height or 500)


def write_pngs(items: Sequence[tuple[go.Figure, Path]], *, scale: float = PNG_SCALE) -> list[Path]:
    """Write each figure as a PNG, offline, with kaleido >= 1.

    kaleido drives an installed Chrome or Chromium: `$BROWSER_PATH` when set, else
    the first it finds on PATH or in the usual places (Debian's `chromium` is
    /usr/bin/chromium). plotly.js comes from the plotly package, MathJax is off:
    nothing is fetched from the network.
    """
    try:
        version = importlib.metadata.version("kaleido")
    except importlib.metadata.PackageNotFoundError:
        raise XtlError(NO_KALEIDO) from None
    if int(version.split(".")[0]) < 1:
        raise XtlError(OLD_KALEIDO.format(version=version))
    if not items:
        return []
    import kaleido
    from choreographer.errors import ChromeNotFoundError

    specs = []
    for figure, path in items:
        width, height = _size(figure)
        opts = {"format": "png", "width": width, "height": height, "scale": scale}
        specs.append({"fig": figure.to_dict(), "path": str(path), "opts": opts})
    try:
        kaleido.write_fig_from_object_sync(specs, kopts={"mathjax": False})
    except ChromeNotFoundError:
        raise XtlError(NO_CHROME) from None
    except (OSError, RuntimeError) as error:  # a browser that is there but does not start
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise XtlError(CHROME_FAILED.format(error=message)) from None
    return [Path(path) for _, path in items]
