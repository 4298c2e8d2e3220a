"""xtl.selection on hand-made tables whose answers are worked out here, by hand.

The main table (`three()`): one XNLI-like group, gold (1), N = 2 layers, three
instances. Candidate order is vanilla, (1,0), (0,0), (1,1), (0,1) (vanilla
first, then smallest target layer, then largest source layer). Each cell:
answer text, correct, mean_logprob, first_entropy.

    instance 0   vanilla "(2)" F -1.0 1.0 | (0,0) "(1)" T -0.5 0.9 | (0,1) "(1)" T -2.0 0.1
                 (1,0) "(3)" F -0.2 2.0   | (1,1) "(2)" F -3.0 0.5
    instance 1   vanilla "(1)" T -0.3 1.0 | (0,0) "(2)" F -0.4 0.2 | (0,1) "(2)" F -0.9 1.0
                 (1,0) "(1) ok" T -1.5 1.0| (1,1) "(2)" F -0.1 1.0
    instance 2   vanilla "(3)" F -2.0 0.7 | (0,0) "(3)" F -1.0 0.7 | (0,1) "(1)" T -0.05 0.7
                 (1,0) "(1) or (2)" F -0.01 0.7 (names two options: no answer) | (1,1) "(1)" T -0.5 0.7

By hand, chosen rows and whether they are right (instances 0, 1, 2):

- vanilla: V, V, V -> F T F = 1/3; upper bound (any row right): T T T = 3/3
- max_confidence(mean_logprob): (1,0), (1,1), (1,0) -> F F F = 0/3
- max_confidence(first_entropy) (lowest wins): (0,1), (0,0), tie -> vanilla -> T F F = 1/3
- vote: 0: "1" and "2" have 2 votes each -> first in order: vanilla ("2") F;
  1: "2" has 3 votes -> (0,0) F; 2: "3" and "1" 2 each -> vanilla F. = 0/3
- vote(mean_logprob): 0: most confident of the tied rows (0,0) -0.5 T; 1: F;
  2: (0,1) -0.05 T = 2/3, gap closed (2/3 - 1/3) / (1 - 1/3) = 1/2
- vanilla_unless(mean_logprob,0.5): 0: -0.2 > -1.0+0.5 -> (1,0) F;
  1: -0.1 < -0.3+0.5 -> vanilla T; 2: -0.01 > -1.5 -> (1,0) F = 1/3
- vanilla_unless(mean_logprob,2): 0: -0.2 < 1.0 vanilla F; 1: T; 2: -0.01 > 0.0? no -> vanilla F = 1/3
  (with threshold 1.9: 2: -0.01 > -0.1 -> (1,0) F; still 1/3)
- fixed(0,1): T F T = 2/3; fixed(1,0): F T F = 1/3
"""

from __future__ import annotations

import math

from xtl.testing import tables as h
import numpy as np
import pandas as pd
import pytest

from xtl import analysis, plots, selection
from xtl.datasets import answer_key
from xtl.errors import XtlError

V = None  # the vanilla cell

THREE = {
    0: {V: ("(2)", False, -1.0, 1.0), (0, 0): ("(1)", True, -0.5, 0.9), (0, 1): ("(1)", True, -2.0, 0.1),
        (1, 0): ("(3)", False, -0.2, 2.0), (1, 1): ("(2)", False, -3.0, 0.5)},
    1: {V: ("(1)", True, -0.3, 1.0), (0, 0): ("(2)", False, -0.4, 0.2), (0, 1): ("(2)", False, -0.9, 1.0),
        (1, 0): ("(1) ok", True, -1.5, 1.0), (1, 1): ("(2)", False, -0.1, 1.0)},
    2: {V: ("(3)", False, -2.0, 0.7), (0, 0): ("(3)", False, -1.0, 0.7), (0, 1): ("(1)", True, -0.05, 0.7),
        (1, 0): ("(1) or (2)", False, -0.01, 0.7), (1, 1): ("(1)", True, -0.5, 0.7)},
}  # fmt: skip


def build(cells: dict, *, lang: str = "sw", split: str = "sample", n_layers: int = 2, site: str = "ffn",
          benchmark: str = "xnli", signals: bool = True) -> pd.DataFrame:  # fmt: skip
    """A results table from {instance: {(i, j) or None: (text, correct, mean_logprob, first_entropy)}}."""
    rows = []
    for k, configs in cells.items():
        for config, (text, right, mean_logprob, first_entropy) in configs.items():
            i, j = config if config is not None else (None, None)
            row = {
                "run_id": "run", "model": "m", "model_fingerprint": "fp", "n_layers": n_layers,
                "benchmark": benchmark, "split": split, "lang": lang,
                "instance_id": f"{benchmark}/{split}/{lang}/{k}", "source": "s", "target": "t", "gold": "1",
                "site": None if config is None else site, "source_layer": i, "target_layer": j,
                "token_ids": [1], "text": text, "correct": right, "max_new_tokens": 20, "dtype": "float32",
            }  # fmt: skip
            if signals:
                row.update(mean_logprob=mean_logprob, first_entropy=first_entropy, min_logprob=mean_logprob - 1,
                           first_logprob=mean_logprob, first_margin=-first_entropy)  # fmt: skip
            rows.append(row)
    return h._typed(pd.DataFrame(rows))


def three(**kwargs) -> pd.DataFrame:
    return build(THREE, **kwargs)


def accuracy(result: pd.DataFrame, name: str, lang: str = "sw") -> float:
    row = result[(result["selector"] == name) & (result["lang"] == lang)]
    assert len(row) == 1, (name, lang, result["selector"].unique())
    return float(row["accuracy"].iloc[0])


def test_answer_key_follows_each_scorer():
    assert answer_key(" (1) ok", "option", ("1", "2", "3")) == "1"
    assert answer_key("（2）", "option", ("1", "2", "3")) == "2"  # fullwidth parentheses, as score_option
    assert answer_key("(1) or (2)", "option", ("1", "2", "3")) is None
    assert answer_key("vrai", "option", ("1", "2"), {"1": "vrai", "2": "faux"}) == "1"
    assert answer_key("b", "letter") == "B" and answer_key("(A) (C)", "letter") is None
    assert answer_key("  The  Capital is PARIS. ", "span") == "the capital is paris"
    with pytest.raises(XtlError, match="unknown scorer"):
        answer_key("x", "regex")


def test_every_selector_on_the_worked_example():
    names = ["vanilla", "fixed(0,1)", "fixed(1,0)", "max_confidence(mean_logprob)", "max_confidence(first_entropy)",
             "vote", "vote(mean_logprob)", "vanilla_unless(mean_logprob,0.5)", "vanilla_unless(mean_logprob,2)",
             "vanilla_unless(mean_logprob,1.9)"]  # fmt: skip
    result = selection.evaluate(three(), names)
    expected = {"vanilla": 1, "fixed(0,1)": 2, "fixed(1,0)": 1, "max_confidence(mean_logprob)": 0,
                "max_confidence(first_entropy)": 1, "vote": 0, "vote(mean_logprob)": 2,
                "vanilla_unless(mean_logprob,0.5)": 1, "vanilla_unless(mean_logprob,2)": 1,
                "vanilla_unless(mean_logprob,1.9)": 1, "upper_bound": 3}  # fmt: skip
    for name, right in expected.items():
        assert accuracy(result, name) == pytest.approx(right / 3), name
    assert list(result["selector"].unique()) == [*names, "upper_bound"]
    vote = result[(result["selector"] == "vote(mean_logprob)") & (result["lang"] == "sw")].iloc[0]
    assert vote["gap_closed"] == pytest.approx(0.5)
    assert vote["vanilla_accuracy"] == pytest.approx(1 / 3) and vote["upper_bound"] == 1.0
    worst = result[(result["selector"] == "max_confidence(mean_logprob)") & (result["lang"] == "sw")].iloc[0]
    assert worst["gap_closed"] == pytest.approx(-0.5)


def test_chosen_rows_per_instance():
    chosen = selection.choices(three(), "vote(mean_logprob)")
    assert list(zip(chosen["source_layer"], chosen["target_layer"], strict=True)) == [(0, 0), (1, 1), (0, 1)]
    assert chosen["correct"].tolist() == [True, False, True]
    chosen = selection.choices(three(), "vanilla_unless(mean_logprob,0.5)")
    assert [pd.isna(v) for v in chosen["source_layer"]] == [False, True, False]
    # one instance's rows, in any order, give the same choice
    rows = three()
    one = rows[rows["instance_id"].str.endswith("/0")].sample(frac=1.0, random_state=1)
    picked = selection.selector("vote(mean_logprob)").choose(one)
    assert (picked["source_layer"], picked["target_layer"]) == (0, 0)
    picked = selection.selector("max_confidence(first_entropy)").choose(one)
    assert (picked["source_layer"], picked["target_layer"]) == (0, 1)


def test_selectors_never_see_gold_or_correct():
    seen = []

    class Spy(selection.Selector):
        def keys(self, rows):
            seen.append(set(rows.columns))
            return [np.zeros(len(rows))]

    spy = Spy()
    spy.name = "spy"
    result = selection.evaluate(three(), [spy])
    assert seen and all("gold" not in columns and "correct" not in columns for columns in seen)
    assert accuracy(result, "spy") == pytest.approx(1 / 3)  # all ties -> vanilla, as the order says
    # flipping the evaluated table's gold does not change what any selector picks
    flipped = three()
    flipped["correct"] = ~flipped["correct"]
    for name in ("vote(mean_logprob)", "max_confidence(first_margin)", "vanilla_unless(mean_logprob,0.5)"):
        a = selection.choices(three(), name)[["instance_id", "source_layer", "target_layer"]]
        b = selection.choices(flipped, name)[["instance_id", "source_layer", "target_layer"]]
        pd.testing.assert_frame_equal(a, b)


def test_pooled_rows_sum_the_languages():
    table = pd.concat([three(lang="sw"), three(lang="th").query("instance_id != 'xnli/sample/th/2'")])
    result = selection.evaluate(table, ["vote(mean_logprob)"])
    pooled = result[result["lang"] == analysis.POOLED].set_index("selector")
    # sw: vanilla 1/3, vote 2/3, upper 3/3; th (instances 0, 1): vanilla 1/2, vote 1/2, upper 2/2
    assert pooled.loc["vanilla", "n"] == 5 and pooled.loc["vanilla", "correct"] == 2
    assert pooled.loc["vote(mean_logprob)", "correct"] == 3 and pooled.loc["upper_bound", "correct"] == 5
    assert pooled.loc["vote(mean_logprob)", "gap_closed"] == pytest.approx((3 / 5 - 2 / 5) / (1 - 2 / 5))
    assert result["lang"].tolist()[-3:] == [analysis.POOLED] * 3  # each group's pooled rows last


# A PilotSet and an unseen split of two languages, N = 2 (see analysis' worked example for sample).
SW_UNSEEN = dict(n=4, vanilla={0}, correct={(0, 0): set(), (0, 1): {1}, (1, 0): {0, 1}, (1, 1): {1, 2, 3}})
TH_UNSEEN = dict(n=2, vanilla=set(), correct={(0, 0): set(), (0, 1): set(), (1, 0): {0, 1}, (1, 1): set()})


def pilot_and_unseen() -> tuple[pd.DataFrame, pd.DataFrame]:
    train = h.two_langs(split="sample")
    test = h.table(h.group(lang="sw", split="unseen", **SW_UNSEEN), h.group(lang="th", split="unseen", **TH_UNSEEN))
    return train, test


def test_best_fixed_is_select_pair_on_the_pilot_set_applied_to_the_unseen_split():
    train, test = pilot_and_unseen()
    # by hand: sw sample (0,1) and (1,1) both 3 right -> same j, larger i: (1,1); th: (0,0),(1,0),(1,1) one each -> j=0, i=1
    assert analysis.select_pair(train) == {"sw": (1, 1), "th": (1, 0)}
    result = selection.evaluate(test, train=train)
    assert list(result["selector"].unique()) == ["vanilla", "best_fixed", "vote", "upper_bound"]
    assert accuracy(result, "best_fixed", "sw") == 3 / 4 and accuracy(result, "best_fixed", "th") == 1.0
    pooled = result[result["lang"] == analysis.POOLED].set_index("selector")
    assert pooled.loc["best_fixed", "correct"] == 5 and pooled.loc["vanilla", "correct"] == 1
    assert pooled.loc["upper_bound", "correct"] == 6
    assert pooled.loc["best_fixed", "gap_closed"] == pytest.approx((5 / 6 - 1 / 6) / (1 - 1 / 6))
    applied = analysis.apply_pair(test, analysis.select_pair(train)).set_index("lang")
    assert applied.loc[analysis.POOLED, "correct"] == pooled.loc["best_fixed", "correct"]


def test_top_k_limits_the_candidates_to_the_best_pilot_set_pairs():
    train, test = pilot_and_unseen()
    # sw ranking on sample: (1,1), (0,1) (3 each; j=1, larger i first), (0,0) (1; j=0), (1,0) (0)
    ranks = selection.rank_configurations(train)
    sw = ranks[ranks["lang"] == "sw"]
    assert list(zip(sw["source_layer"], sw["target_layer"], strict=True)) == [(1, 1), (0, 1), (0, 0), (1, 0)]
    result = selection.evaluate_top_k(test, train, ks=[1, 4])
    oracle = result[(result["selector"] == "upper_bound")].set_index(["k", "lang"])["correct"]
    # k=1 sw: V {0} U (1,1) {1,2,3} = 4; th: {} U (1,0) {0,1} = 2 -> pooled 6; k=4: all 6
    assert oracle[(1, "sw")] == 4 and oracle[(1, "th")] == 2 and oracle[(4, analysis.POOLED)] == 6
    full = selection.evaluate(test, [], train=None)
    assert oracle[(4, "sw")] == full[(full["selector"] == "upper_bound") & (full["lang"] == "sw")]["correct"].item()
    assert (result["upper_bound"] == 1.0).all()  # the column is the upper bound of all configurations


def test_sw_th_vote_without_signals_counts_options():
    # xtl.testing.tables' texts: "(1) right ..." when right, "(2) wrong ..." otherwise; vote ignores the rest
    train, test = pilot_and_unseen()
    chosen = selection.choices(test, "vote")
    # sw unseen instance 1: vanilla (2), (0,1) (1), (1,0) (1), (1,1) (1), (0,0) (2) -> "1" wins, right
    row = chosen[chosen["instance_id"] == "xnli/unseen/sw/1"].iloc[0]
    assert row["correct"] and not pd.isna(row["source_layer"])
    # th unseen instance 0: (1,0) (1) only; vanilla and three others (2) -> "2" wins, vanilla (first), wrong
    row = chosen[chosen["instance_id"] == "xnli/unseen/th/0"].iloc[0]
    assert not row["correct"] and pd.isna(row["source_layer"])


def test_vanilla_unless_fits_its_threshold_on_the_training_split():
    # best config's confidence minus vanilla's, and the gain of switching, by instance:
    # 0: +2.0, +1 | 1: +1.5, +1 | 2: +0.5, 0 | 3: +1.0, -1  -> switching above t gains:
    # t=inf 0, 2.0 0, 1.5 +1, 1.0 +2, 0.5 +1, below 0.5: +1 -> t = 1.0
    cells = {
        0: {V: ("(2)", False, -3.0, 1), (0, 0): ("(1)", True, -1.0, 1)},
        1: {V: ("(2)", False, -3.0, 1), (0, 0): ("(1)", True, -1.5, 1)},
        2: {V: ("(2)", False, -3.0, 1), (0, 0): ("(3)", False, -2.5, 1)},
        3: {V: ("(1)", True, -3.0, 1), (0, 0): ("(2)", False, -2.0, 1)},
    }
    train = build(cells, split="sample")
    sel = selection.VanillaUnless("mean_logprob", None).fit(selection.candidates(train))
    assert sel.threshold == pytest.approx(1.0)
    assert sel.name == "vanilla_unless(mean_logprob,fit=1)"
    result = selection.evaluate(three(split="unseen"), ["vanilla_unless(mean_logprob)"], train=train)
    # on the worked example with t = 1.0: 0: -0.2 > 0.0? no -> V F; 1: V T; 2: -0.01 > -1.0 -> (1,0) F = 1/3
    assert accuracy(result, "vanilla_unless(mean_logprob,fit=1)") == pytest.approx(1 / 3)


def test_learned_uses_the_signal_it_was_trained_on():
    # Training: the right row is the one with the high first_margin (= -first_entropy here), wherever it is.
    rng = np.random.default_rng(0)
    configs = [V, (0, 0), (0, 1), (1, 0), (1, 1)]

    def cells(n: int, offset: int) -> dict:
        out = {}
        for k in range(n):
            right = configs[(k + offset) % len(configs)]
            out[k] = {c: ("(1)" if c == right else "(2)", c == right, float(rng.normal()),
                          0.1 if c == right else 2.0 + float(rng.random())) for c in configs}  # fmt: skip
        return out

    train = build(cells(20, 0), split="sample")
    test = build(cells(10, 2), split="unseen")
    result = selection.evaluate(test, ["learned", "learned(mean_logprob)"], train=train)
    assert accuracy(result, "vanilla") == pytest.approx(2 / 10)  # vanilla is right for k with (k + 2) % 5 == 0
    assert accuracy(result, "learned") == 1.0  # it found the margin
    assert accuracy(result, "learned(mean_logprob)") < 0.6  # noise alone does not find the right row


def test_signal_free_tables():
    table = three(signals=False)
    result = selection.evaluate(table)
    assert list(result["selector"].unique()) == ["vanilla", "vote", "upper_bound"]
    for name in ("max_confidence(mean_logprob)", "vote(first_margin)", "vanilla_unless(min_logprob,1)"):
        with pytest.raises(XtlError, match="needs the .* column, which is null in every row"):
            selection.evaluate(table, [name])
    nulls = three().assign(mean_logprob=np.nan)  # columns there but null (an old run directory loaded)
    with pytest.raises(XtlError, match="needs the mean_logprob column"):
        selection.evaluate(nulls, ["max_confidence(mean_logprob)"])
    train, test = pilot_and_unseen()
    with pytest.raises(XtlError, match="learned needs the mean_logprob column"):
        selection.evaluate(test, ["learned"], train=train)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("oracle", "unknown selector 'oracle'"),
        ("max_confidence(confidence)", "'confidence' is not a confidence signal"),
        ("fixed(1)", "has 1 arguments"),
        ("fixed(a,b)", "two layer numbers"),
        ("vanilla_unless(mean_logprob,x)", "threshold 'x' is not a number"),
        ("vote(", "is not a selector name"),
    ],
)
def test_selector_names(name, message):
    with pytest.raises(XtlError, match=message):
        selection.selector(name)


def test_selector_names_parse():
    assert selection.selector(" fixed( 3 , 5 ) ").name == "fixed(3,5)"
    assert selection.selector("vanilla_unless(first_margin,0.25)").threshold == 0.25
    assert selection.selector("learned(first_margin,mean_logprob)").signals == ("first_margin", "mean_logprob")


def test_mistakes_get_one_sentence():
    train, test = pilot_and_unseen()
    with pytest.raises(XtlError, match="best_fixed is fit on a training split"):
        selection.evaluate(test, ["best_fixed"])
    with pytest.raises(XtlError, match=r"configuration \(5, 5\) was not run"):
        selection.evaluate(test, ["fixed(5,5)"])
    with pytest.raises(XtlError, match="share 8 instances"):
        selection.evaluate(train, train=train)
    with pytest.raises(XtlError, match="given twice"):
        selection.evaluate(test, ["vote", "vote"])
    other_lang = h.table(h.group(lang="zh", split="unseen", **TH_UNSEEN))
    with pytest.raises(XtlError, match="training split has no rows of tiny-qwen2 ffn xnli zh"):
        selection.evaluate(other_lang, train=train)
    with pytest.raises(XtlError, match="k=0 is not a number of configurations"):
        selection.evaluate_top_k(test, train, ks=[0])
    assert not math.isnan(selection.evaluate(test)["accuracy"].sum())


# --------------------------------------------------------------------------- xtl select


def write_run(path, table: pd.DataFrame):
    from xtl.results import COLUMNS, RunDir, Settings

    settings = Settings(
        model_fingerprint="fp", architecture="Qwen2ForCausalLM", n_layers=int(table["n_layers"].iloc[0]), dtype="float32",
        sites=tuple(sorted(table["site"].dropna().unique())), configs="all", max_new_tokens=20, model="tiny-qwen2",
    )  # fmt: skip
    run = RunDir.open(path, settings)
    table = table.reindex(columns=list(COLUMNS)).assign(run_id=run.run_id)  # rows carry the run's id
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    run.append(records)
    return path


def test_cli_select_prints_and_writes_the_table(tmp_path, capsys):
    from xtl.cli import main

    train, test = pilot_and_unseen()
    sample, unseen = write_run(tmp_path / "sample", train), write_run(tmp_path / "unseen", test)
    out = tmp_path / "sel.csv"
    assert main(["select", str(unseen), "--train", str(sample), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "best_fixed" in printed and "83.3%" in printed and "+80%" in printed  # 5/6 right, (5/6-1/6)/(5/6)
    assert "no confidence signals in this run" in printed
    written = pd.read_csv(out)
    expected = selection.evaluate(test, train=train)
    assert written["selector"].tolist() == expected["selector"].tolist()
    np.testing.assert_allclose(written["accuracy"], expected["accuracy"])
    assert main(["select", str(unseen), "--selector", "fixed(0,1)", "--out", str(tmp_path / "s.parquet")]) == 0
    table = pd.read_parquet(tmp_path / "s.parquet")
    assert table["selector"].unique().tolist() == ["vanilla", "fixed(0,1)", "upper_bound"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--selector", "oracle"], "unknown selector 'oracle'"),
        (["--selector", "learned"], "learned is fit on a training split"),
        (["--selector", "max_confidence(first_margin)"], "needs the first_margin column"),
        (["--out", "table.xlsx"], "must end in .csv or .parquet"),
        (["--train", "/nonexistent-run"], "run directory '/nonexistent-run' does not exist"),
    ],
)
def test_cli_select_mistakes_get_one_sentence(tmp_path, arguments, message):
    import subprocess
    import sys

    from conftest import REPO

    _, test = pilot_and_unseen()
    unseen = write_run(tmp_path / "unseen", test)
    command = [sys.executable, "-m", "xtl", "select", str(unseen), *arguments]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- figures and report


def test_selection_figures_draw_the_evaluate_tables():
    from xtl import plots

    train, test = pilot_and_unseen()
    result = selection.evaluate(test, train=train)
    fig = plots.selection_bars(result)
    bars = fig.data[0]
    assert list(bars.x) == ["best_fixed", "vote"]
    np.testing.assert_allclose(bars.y, [5 / 6, 1 / 6])
    lines = sorted(shape.y0 for shape in fig.layout.shapes)
    assert lines == pytest.approx([1 / 6, 1.0])  # vanilla and the upper bound
    sw = plots.selection_bars(result, lang="sw")
    np.testing.assert_allclose(sw.data[0].y, [3 / 4, 1 / 4])
    top_k = selection.evaluate_top_k(test, train, ks=[1, 2, 4])
    curves = plots.selection_top_k_curves(top_k)
    oracle = next(t for t in curves.data if t.name == "oracle among the k")
    assert list(oracle.x) == [1, 2, 4] and list(oracle.y) == [1.0, 1.0, 1.0]
    with pytest.raises(XtlError, match="which has a k column"):
        plots.selection_top_k_curves(result)
    with pytest.raises(XtlError, match=r"holds 3 languages \(pooled, sw, th\)"):
        plots.selection_bars(result, lang=None)


def test_report_has_a_selection_section_with_a_pilot_set_or_signals():
    from xtl import report

    train, test = pilot_and_unseen()
    sections = report.report_sections(pd.concat([train, test], ignore_index=True))
    titles = [s.title for s in sections]
    assert "Instance-aware selection: tiny-qwen2 · xnli/unseen" in titles
    assert "Instance-aware selection: tiny-qwen2 · xnli/sample" not in titles  # no signals, no PilotSet to train on
    unseen = sections[titles.index("Instance-aware selection: tiny-qwen2 · xnli/unseen")]
    assert [f.name for f in unseen.figures] == ["selection_tiny-qwen2_xnli_unseen_ffn_bars",
                                                "selection_tiny-qwen2_xnli_unseen_ffn_top_k"]  # fmt: skip
    shown = unseen.tables[0][1]
    best = shown[(shown["selector"] == "best_fixed") & (shown["lang"] == plots.POOLED_LABEL)].iloc[0]
    assert best["accuracy"] == "83.3%" and best["gap_closed"] == "+80.0%"
    with_signals = report.report_sections(three())
    assert [s.title for s in with_signals][-1] == "Instance-aware selection: m · xnli/sample"
    assert "max_confidence(first_entropy)" in set(with_signals[-1].tables[0][1]["selector"])
    assert not any(s.title.startswith("Instance-aware") for s in report.report_sections(h.two_langs()))
