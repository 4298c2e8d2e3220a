"""xtl.analysis on hand-made tables whose answers are worked out here by counting.

The main table (`two_langs`), model tiny-qwen2, site ffn, N = 2 layers:

sw, n = 5, V = {0, 4} (vanilla 2/5):
    (0,0) {4}      1  lose     gained {}     lost {0}
    (0,1) {0,1,2}  3  win      gained {1,2}  lost {4}
    (1,0) {}       0  lose     gained {}     lost {0,4}
    (1,1) {0,1,3}  3  win      gained {1,3}  lost {4}
th, n = 3, V = {2} (vanilla 1/3):
    (0,0) {0}      1  tie
    (0,1) {}       0  lose
    (1,0) {1}      1  tie
    (1,1) {0}      1  tie
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from xtl.testing.tables import SW, TH, full, group, table

from xtl import analysis
from xtl.analysis import POOLED
from xtl.errors import XtlError


@pytest.fixture
def two_langs() -> pd.DataFrame:
    return table(group(lang="sw", **SW), group(lang="th", **TH))


def grid(rows):
    out = pd.DataFrame(rows, dtype=float)
    out.index.name, out.columns.name = "source_layer", "target_layer"
    return out


def assert_grid(actual: pd.DataFrame, rows) -> None:
    pd.testing.assert_frame_equal(actual, grid(rows), check_exact=False, rtol=0, atol=1e-12)
    assert list(actual.index) == list(range(len(rows)))
    assert list(actual.columns) == list(range(len(rows)))


def row(table_: pd.DataFrame, **where) -> pd.Series:
    mask = pd.Series(True, index=table_.index)
    for key, value in where.items():
        mask &= table_[key] == value
    hits = table_[mask]
    assert len(hits) == 1, where
    return hits.iloc[0]


# --------------------------------------------------------------------------- grids


def test_accuracy_and_gain_grids_per_language(two_langs):
    assert_grid(analysis.accuracy_grid(two_langs, lang="sw"), [[1 / 5, 3 / 5], [0 / 5, 3 / 5]])
    assert_grid(analysis.gain_grid(two_langs, lang="sw"), [[1 / 5 - 2 / 5, 3 / 5 - 2 / 5], [-2 / 5, 3 / 5 - 2 / 5]])
    assert_grid(analysis.accuracy_grid(two_langs, lang="th"), [[1 / 3, 0], [1 / 3, 1 / 3]])
    assert_grid(analysis.gain_grid(two_langs, lang="th"), [[0, -1 / 3], [0, 0]])


def test_pooled_grid_sums_counts_over_languages(two_langs):
    # correct per config: (0,0) 1+1, (0,1) 3+0, (1,0) 0+1, (1,1) 3+1 over 8 instances; vanilla 3/8
    assert_grid(analysis.accuracy_grid(two_langs, pooled=True), [[2 / 8, 3 / 8], [1 / 8, 4 / 8]])
    assert_grid(analysis.gain_grid(two_langs, pooled=True), [[-1 / 8, 0], [-2 / 8, 1 / 8]])


def test_gained_and_lost_counts(two_langs):
    assert_grid(analysis.count_grid(two_langs, "gained", lang="sw"), [[0, 2], [0, 2]])
    assert_grid(analysis.count_grid(two_langs, "lost", lang="sw"), [[1, 1], [2, 1]])
    ct = analysis.config_table(two_langs)
    # correct - vanilla_correct == gained - lost for every configuration
    assert ((ct["correct"] - ct["vanilla_correct"]) == (ct["gained"] - ct["lost"])).all()


def test_several_languages_without_lang_is_an_error(two_langs):
    with pytest.raises(XtlError, match=r"2 languages \(sw, th\).*lang=.*pooled=True"):
        analysis.gain_grid(two_langs)


def test_several_models_raise_or_filter(two_langs):
    other = group(lang="sw", model="tiny-llama", n=2, vanilla={0}, correct={(0, 0): {0, 1}})
    df = table(two_langs, other)
    with pytest.raises(XtlError, match=r"2 models \(tiny-llama, tiny-qwen2\).*model="):
        analysis.gain_grid(df, lang="sw")
    assert_grid(analysis.gain_grid(df, model="tiny-llama", lang="sw"), [[1 / 2, math.nan], [math.nan, math.nan]])
    assert_grid(analysis.gain_grid(df, model="tiny-qwen2", lang="sw"), [[-1 / 5, 1 / 5], [-2 / 5, 1 / 5]])


def test_unknown_filter_value_names_what_is_there(two_langs):
    with pytest.raises(XtlError, match=r"lang='fr' is not in the results table.*sw, th"):
        analysis.gain_grid(two_langs, lang="fr")


def test_vanilla_rows_are_shared_by_sites():
    ffn = group(lang="sw", site="ffn", n=4, vanilla={0}, correct={(0, 0): {0, 1}, (1, 1): set()})
    attn = group(lang="sw", site="attn-paper", n=4, vanilla={0}, correct={(0, 1): {0, 1, 2, 3}})
    df = table(ffn, attn)
    assert df["site"].isna().sum() == 4  # one vanilla row per instance
    with pytest.raises(XtlError, match=r"2 sites \(attn-paper, ffn\).*site="):
        analysis.gain_grid(df)
    assert_grid(analysis.gain_grid(df, site="attn-paper"), [[math.nan, 3 / 4], [math.nan, math.nan]])
    assert_grid(analysis.gain_grid(df, site="ffn"), [[1 / 4, math.nan], [math.nan, -1 / 4]])


def test_grid_is_n_by_n_with_nan_for_configurations_not_run():
    df = group(n=2, n_layers=3, vanilla=set(), correct={(2, 0): {0}})
    assert_grid(
        analysis.accuracy_grid(df),
        [[math.nan] * 3, [math.nan] * 3, [1 / 2, math.nan, math.nan]],
    )


# --------------------------------------------------------------------------- validation


def test_rows_without_gold_cannot_be_scored():
    df = group(n=2, vanilla=set(), correct={(0, 0): {0}}, gold=None, benchmark="pairs:mine")
    assert df["correct"].isna().all()
    with pytest.raises(XtlError, match="no gold answer.*cannot be scored"):
        analysis.gain_grid(df)
    with pytest.raises(XtlError, match="no gold answer"):
        analysis.upper_bounds_table(df)


def test_missing_vanilla_is_an_error(two_langs):
    df = two_langs[~(two_langs["site"].isna() & (two_langs["instance_id"] == "xnli/sample/sw/3"))]
    with pytest.raises(XtlError, match="no vanilla row.*xnli/sample/sw/3"):
        analysis.gain_grid(df, lang="sw")


def test_configuration_on_fewer_instances_than_vanilla_is_an_error(two_langs):
    drop = (two_langs["site"] == "ffn") & (two_langs["source_layer"] == 1) & (two_langs["target_layer"] == 0)
    drop &= two_langs["instance_id"] == "xnli/sample/th/0"
    with pytest.raises(XtlError, match=r"ffn \(1, 0\).*covers 2 instances but vanilla covers 3"):
        analysis.win_tie_lose(two_langs[~drop.fillna(False)])


def test_duplicate_rows_are_an_error(two_langs):
    with pytest.raises(XtlError, match="duplicate"):
        analysis.config_table(pd.concat([two_langs, two_langs], ignore_index=True))


# --------------------------------------------------------------------------- tidy tables


def test_win_tie_lose(two_langs):
    wtl = analysis.win_tie_lose(two_langs)
    assert list(wtl["lang"]) == ["sw", "th", POOLED]
    sw, th, pooled = (row(wtl, lang=lang) for lang in ("sw", "th", POOLED))
    assert (sw["wins"], sw["ties"], sw["losses"], sw["total"]) == (2, 0, 2, 4)
    assert (th["wins"], th["ties"], th["losses"], th["total"]) == (0, 3, 1, 4)
    # over configurations x languages: 2 + 0 wins, 0 + 3 ties, 2 + 1 losses of 8
    assert (pooled["wins"], pooled["ties"], pooled["losses"], pooled["total"]) == (2, 3, 3, 8)
    assert (pooled["win"], pooled["tie"], pooled["lose"]) == (2 / 8, 3 / 8, 3 / 8)
    assert (th["win"], th["tie"], th["lose"]) == (0, 3 / 4, 1 / 4)


def test_average_performance(two_langs):
    avg = analysis.average_performance(two_langs)
    sw, th, pooled = (row(avg, lang=lang) for lang in ("sw", "th", POOLED))
    assert sw["average"] == pytest.approx((1 + 3 + 0 + 3) / 20)
    assert sw["vanilla"] == pytest.approx(2 / 5)
    assert sw["difference"] == pytest.approx(7 / 20 - 2 / 5)
    assert th["average"] == pytest.approx(3 / 12)
    assert th["vanilla"] == pytest.approx(1 / 3)
    # pooled by counts: (7 + 3) correct of 4 configurations x 8 instances; not the mean of .35 and .25
    assert pooled["average"] == pytest.approx(10 / 32)
    assert pooled["vanilla"] == pytest.approx(3 / 8)
    assert (sw["n"], th["n"], pooled["n"]) == (5, 3, 8)
    assert (sw["n_configurations"], pooled["n_configurations"]) == (4, 4)


def test_average_over_the_configurations_run():
    df = group(n=2, vanilla={0}, correct={(0, 1): {0, 1}, (1, 1): set()})
    avg = row(analysis.average_performance(df), lang="sw")
    assert avg["n_configurations"] == 2
    assert avg["average"] == pytest.approx(2 / 4)


def test_layerwise_gains(two_langs):
    lw = analysis.layerwise_gains(two_langs)

    def gain(lang, axis, layer):
        return row(lw, lang=lang, axis=axis, layer=layer)["gain"]

    # sw gains [[-1/5, 1/5], [-2/5, 1/5]]
    assert gain("sw", "source", 0) == pytest.approx(0)
    assert gain("sw", "source", 1) == pytest.approx(-1 / 10)
    assert gain("sw", "target", 0) == pytest.approx(-3 / 10)
    assert gain("sw", "target", 1) == pytest.approx(1 / 5)
    # th gains [[0, -1/3], [0, 0]]
    assert gain("th", "source", 0) == pytest.approx(-1 / 6)
    assert gain("th", "target", 1) == pytest.approx(-1 / 6)
    # pooled gains [[-1/8, 0], [-2/8, 1/8]]
    assert gain(POOLED, "source", 0) == pytest.approx(-1 / 16)
    assert gain(POOLED, "source", 1) == pytest.approx(-1 / 16)
    assert gain(POOLED, "target", 0) == pytest.approx(-3 / 16)
    assert gain(POOLED, "target", 1) == pytest.approx(1 / 16)
    assert set(lw["n_configurations"]) == {2}


# --------------------------------------------------------------------------- upper bounds


def test_upper_bounds_one_language(two_langs):
    ub = analysis.upper_bounds(two_langs, lang="sw")
    # union of all C = {0,1,2,3,4}; source 0: {4}+{0,1,2}; source 1: {}+{0,1,3}
    assert (ub.n, ub.lang, ub.site) == (5, "sw", "ffn")
    assert ub.overall == pytest.approx(5 / 5)
    assert ub.overall_with_vanilla == pytest.approx(5 / 5)
    assert list(ub.source_wise) == pytest.approx([4 / 5, 3 / 5])
    assert list(ub.source_wise_with_vanilla) == pytest.approx([4 / 5, 4 / 5])
    assert list(ub.target_wise) == pytest.approx([1 / 5, 4 / 5])
    assert list(ub.target_wise_with_vanilla) == pytest.approx([2 / 5, 5 / 5])
    assert ub.vanilla == pytest.approx(2 / 5)
    assert ub.average == pytest.approx(7 / 20)
    assert list(ub.source_wise.index) == [0, 1]

    th = analysis.upper_bounds(two_langs, lang="th")
    assert th.overall == pytest.approx(2 / 3)
    assert th.overall_with_vanilla == pytest.approx(3 / 3)
    assert list(th.source_wise) == pytest.approx([1 / 3, 2 / 3])
    assert list(th.source_wise_with_vanilla) == pytest.approx([2 / 3, 3 / 3])
    assert list(th.target_wise) == pytest.approx([2 / 3, 1 / 3])
    assert list(th.target_wise_with_vanilla) == pytest.approx([3 / 3, 2 / 3])


def test_upper_bounds_pooled_sum_counts(two_langs):
    ub = analysis.upper_bounds(two_langs, pooled=True)
    assert (ub.n, ub.lang) == (8, POOLED)
    # (5 + 2) / 8, not the mean of 1 and 2/3
    assert ub.overall == pytest.approx(7 / 8)
    assert ub.overall_with_vanilla == pytest.approx(8 / 8)
    assert list(ub.source_wise) == pytest.approx([(4 + 1) / 8, (3 + 2) / 8])
    assert list(ub.source_wise_with_vanilla) == pytest.approx([(4 + 2) / 8, (4 + 3) / 8])
    assert list(ub.target_wise) == pytest.approx([(1 + 2) / 8, (4 + 1) / 8])
    assert list(ub.target_wise_with_vanilla) == pytest.approx([(2 + 3) / 8, (5 + 2) / 8])
    assert ub.vanilla == pytest.approx(3 / 8)
    assert ub.average == pytest.approx(10 / 32)


def test_upper_bounds_table_matches_the_object(two_langs):
    tab = analysis.upper_bounds_table(two_langs)
    assert list(tab.columns[:7]) == ["model", "site", "benchmark", "split", "lang", "n_layers", "scope"]
    overall = row(tab, lang=POOLED, scope="overall")
    assert (overall["n"], overall["hits"], overall["hits_with_vanilla"]) == (8, 7, 8)
    assert pd.isna(overall["layer"])
    src1 = row(tab, lang=POOLED, scope="source", layer=1)
    assert (src1["hits"], src1["hits_with_vanilla"], src1["upper_bound"]) == (5, 7, 5 / 8)
    tgt0 = row(tab, lang="th", scope="target", layer=0)
    assert (tgt0["n"], tgt0["hits"], tgt0["hits_with_vanilla"]) == (3, 2, 3)
    assert list(tab["lang"].drop_duplicates()) == ["sw", "th", POOLED]


def test_upper_bounds_of_a_partial_sweep_leave_layers_not_run_nan():
    df = group(n=3, vanilla={2}, correct={(0, 1): {0}, (1, 1): {1}})
    ub = analysis.upper_bounds(df)
    assert ub.overall == pytest.approx(2 / 3)
    assert list(ub.source_wise) == pytest.approx([1 / 3, 1 / 3])
    assert math.isnan(ub.target_wise[0]) and math.isnan(ub.target_wise_with_vanilla[0])
    assert ub.target_wise[1] == pytest.approx(2 / 3)
    assert ub.target_wise_with_vanilla[1] == pytest.approx(3 / 3)


# --------------------------------------------------------------------------- pairs


def test_select_pair_tie_breaks(two_langs):
    # sw: (0,1) and (1,1) both have 3 -> same j, largest i -> (1,1)
    # th: (0,0), (1,0), (1,1) all have 1 -> smallest j (0), then largest i -> (1,0)
    assert analysis.select_pair(two_langs, "overall") == {"sw": (1, 1), "th": (1, 0)}
    # targetfirst: j = 0 only; sw (0,0) 1 beats (1,0) 0; th tie (0,0)/(1,0) -> (1,0)
    assert analysis.select_pair(two_langs, "targetfirst") == {"sw": (0, 0), "th": (1, 0)}
    pairs = analysis.select_pair(two_langs)
    assert all(type(i) is int and type(j) is int for i, j in pairs.values())


def test_select_pair_prefers_smaller_target_over_larger_source():
    # 3 layers: (2,2), (0,1) and (2,1) all have 2 correct -> j = 1 beats j = 2, then i = 2 beats i = 0
    df = full(2, 3, {0}, lambda i, j, k: (i, j) in {(2, 2), (0, 1), (2, 1)} or (k == 0 and (i, j) == (1, 0)))
    assert analysis.select_pair(df) == {"sw": (2, 1)}
    assert analysis.select_pair(df, "targetfirst") == {"sw": (1, 0)}


def test_select_pair_when_no_configuration_gets_anything_right():
    df = full(2, 2, set(), lambda i, j, k: False)
    assert analysis.select_pair(df) == {"sw": (1, 0)}


def test_targetfirst_needs_target_layer_zero():
    df = group(n=2, vanilla=set(), correct={(0, 1): {0}})
    with pytest.raises(XtlError, match="target layer 0"):
        analysis.select_pair(df, "targetfirst")
    with pytest.raises(XtlError, match="mode='best'"):
        analysis.select_pair(df, "best")


def test_selected_pairs_table_agrees_with_select_pair(two_langs):
    tab = analysis.selected_pairs_table(two_langs)
    for mode in ("overall", "targetfirst"):
        chosen = analysis.select_pair(two_langs, mode)
        for lang, (i, j) in chosen.items():
            r = row(tab, lang=lang, mode=mode)
            assert (r["source_layer"], r["target_layer"]) == (i, j)
    r = row(tab, lang="sw", mode="overall")
    assert (r["correct"], r["n"], r["gain"]) == (3, 5, pytest.approx(1 / 5))


def test_apply_pair_on_unseen_split():
    unseen = table(
        # the chosen pair for sw is (1,1); (0,0) is there too and must be ignored
        group(lang="sw", split="unseen", n=4, vanilla={0}, correct={(1, 1): {0, 1, 2}, (0, 0): {0, 1, 2, 3}}),
        group(lang="th", split="unseen", n=2, vanilla={0, 1}, correct={(1, 0): {0}}),
    )
    out = analysis.apply_pair(unseen, {"sw": (1, 1), "th": (1, 0)})
    assert list(out["lang"]) == ["sw", "th", POOLED]
    sw, th, pooled = (row(out, lang=lang) for lang in ("sw", "th", POOLED))
    assert (sw["source_layer"], sw["target_layer"], sw["correct"], sw["n"]) == (1, 1, 3, 4)
    assert (sw["accuracy"], sw["vanilla_accuracy"], sw["gain"]) == (3 / 4, 1 / 4, pytest.approx(1 / 2))
    assert (sw["gained"], sw["lost"]) == (2, 0)
    assert (th["accuracy"], th["vanilla_accuracy"], th["gained"], th["lost"]) == (1 / 2, 1, 0, 1)
    assert (pooled["correct"], pooled["n"], pooled["vanilla_correct"]) == (4, 6, 3)
    assert pooled["gain"] == pytest.approx(1 / 6)
    assert pd.isna(pooled["source_layer"])
    with pytest.raises(XtlError, match=r"th do not include configuration \(0, 0\)"):
        analysis.apply_pair(unseen, {"sw": (1, 1), "th": (0, 0)})


def test_pairs_chosen_on_sample_applied_to_unseen(two_langs):
    unseen = group(lang="sw", split="unseen", n=2, vanilla=set(), correct={(1, 1): {1}})
    df = table(two_langs, unseen)
    with pytest.raises(XtlError, match=r"2 splits \(sample, unseen\).*split="):
        analysis.select_pair(df)
    pairs = analysis.select_pair(df, split="sample", lang="sw")
    out = analysis.apply_pair(df, pairs, split="unseen")
    assert row(out, lang="sw")["accuracy"] == 1 / 2


# --------------------------------------------------------------------------- flips, summary


def test_flips(two_langs):
    out = analysis.flips(two_langs, "ffn", 1, 1, lang="sw")
    # C = {0,1,3}, V = {0,4}: gained 1 and 3, lost 4
    assert list(out["instance_id"]) == ["xnli/sample/sw/1", "xnli/sample/sw/3", "xnli/sample/sw/4"]
    assert list(out["direction"]) == ["gained", "gained", "lost"]
    first = out.iloc[0]
    assert first["vanilla_text"] == "(2) wrong [vanilla] #1"
    assert first["transplant_text"] == "(1) right [ffn 1->1] #1"
    assert first["source"] == "source prompt 1 (en)" and first["target"] == "target prompt 1 (sw)"
    everywhere = analysis.flips(two_langs, "ffn", 1, 1)
    # th (1,1): C = {0}, V = {2}: gained 0, lost 2
    assert len(everywhere) == 5
    assert list(everywhere[everywhere["lang"] == "th"]["direction"]) == ["gained", "lost"]
    assert analysis.flips(two_langs, "ffn", 0, 0, lang="th")["instance_id"].tolist() == [
        "xnli/sample/th/0",
        "xnli/sample/th/2",
    ]
    with pytest.raises(XtlError, match="outside the model's layers 0..1"):
        analysis.flips(two_langs, "ffn", 2, 0)


def test_run_summary(two_langs):
    summary = analysis.run_summary(two_langs)
    assert len(summary) == 1
    s = summary.iloc[0]
    assert (s["languages"], s["sites"], s["n_instances"], s["n_configurations"]) == ("sw, th", "ffn", 8, 4)
    assert s["scored"]
