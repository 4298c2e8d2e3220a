"""xtl.datasets: the four XTransplant benchmarks, pairs files, the scoring rules of
XTRANSPLANT_SPEC.md section 4, and `xtl benchmarks`.

Every scoring test uses a prediction that a plausible wrong implementation would
score differently (the comment says which)."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import string
from pathlib import Path

import pytest

from xtl import datasets
from xtl.datasets import load, score_letter, score_option, score_span
from xtl.cli import main
from xtl.errors import XtlError

XNLI_EN = {"1": "Entail", "2": "Neutral", "3": "Contradict"}
OPT3 = ("1", "2", "3")
OPT2 = ("1", "2")


def lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def wc_l(path: Path) -> int:
    """What `wc -l` says: the number of newline characters."""
    return path.read_bytes().count(b"\n")


# --------------------------------------------------------------------------- XNLI rule


def test_xnli_names_gold_in_parentheses_or_exactly():
    assert score_option("(2) Neutral", "2", OPT3, XNLI_EN)
    assert score_option("  3\n", "3", OPT3, XNLI_EN)
    assert not score_option("(1)", "2", OPT3, XNLI_EN)


def test_xnli_fullwidth_parentheses_are_normalised():
    # Forgetting the normalisation scores the first one wrong and the second right.
    assert score_option("答案是（2）", "2", OPT3)
    assert not score_option("（1）或者（2）", "2", OPT3)


def test_xnli_prediction_naming_two_options_is_wrong():
    assert not score_option("(1) or (3)", "1", OPT3, XNLI_EN)
    assert not score_option("(3) Contradict... actually (2)", "3", OPT3)


def test_xnli_bare_option_number_must_be_the_whole_answer():
    # `g in pred` instead of `pred.strip() == g` would accept these.
    assert not score_option("2 of them", "2", OPT3)
    assert not score_option("12", "2", OPT3)
    # ... and would reject this one, where another number is part of the text.
    assert score_option("(1) because of 2 reasons", "1", OPT3)
    # The bare other option is wrong only when it is the whole answer.
    assert not score_option(" 3 ", "1", OPT3)


def test_xnli_gold_label_word_counts_as_naming_the_gold():
    assert score_option("I would say Contradict", "3", OPT3, XNLI_EN)
    # Label words are matched case-sensitively (`in`), as the public code does.
    assert not score_option("contradict", "3", OPT3, XNLI_EN)


def test_xnli_label_word_of_another_option_makes_it_wrong():
    # Not checking other options' label words would accept these.
    assert not score_option("(1) Entail, not Neutral", "1", OPT3, XNLI_EN)
    assert not score_option("Contradict rather than Entail", "3", OPT3, XNLI_EN)
    # Other options' markers alone are enough too.
    assert not score_option("Entail (2)", "1", OPT3, XNLI_EN)


def test_xnli_label_words_are_matched_after_normalisation():
    french = {"1": "(1) Entraîner", "2": "(2) Neutre", "3": "(3) Contraire"}
    assert score_option("（3） Contraire", "3", OPT3, french)
    # French label words carry their marker, and are matched verbatim.
    assert score_option("Réponse : (2) Neutre", "2", OPT3, french)
    assert not score_option("Neutre", "2", OPT3, french)


def test_xnli_instance_uses_target_language_label_words(data_dir):
    items = load("xnli", "sw", data_dir=data_dir)
    item = next(i for i in items if i.gold == "3")
    assert item.labels == lines(data_dir / "XNLI/XNLI_sample/ans_lang/sw.json")[0]
    assert item.is_correct("Kupingana")
    assert not item.is_correct("Contradict")  # the English word is not the Swahili label
    assert not item.is_correct("Kupingana au Inajumuisha")
    assert item.is_correct("(3)")
    assert item.options == OPT3 and item.scorer == "option"


def test_option_rule_rejects_gold_outside_options():
    with pytest.raises(XtlError, match="not one of the options"):
        score_option("(4)", "4", OPT3)


# --------------------------------------------------------------------------- XCOPA rule


def test_xcopa_rule_is_the_option_rule_with_two_options_and_no_label_words(data_dir):
    items = load("xcopa", "sw", data_dir=data_dir)
    item = next(i for i in items if i.gold == "2")
    assert item.options == OPT2 and item.labels is None
    assert item.is_correct("（2）")
    assert item.is_correct("2")
    assert not item.is_correct("(1) (2)")
    assert not item.is_correct("2 ni jibu")  # bare number inside text
    # (3) is not an XCOPA option, so it does not make the answer wrong (it would for XNLI).
    assert item.is_correct("(2), not (3)")
    assert not score_option("(2), not (3)", "2", OPT3)


# --------------------------------------------------------------------------- GlobalOpinionQA rule


def test_goqa_lower_case_letters_count():
    # Forgetting pred.upper() rejects these.
    assert score_letter("(b) Worse off", "B")
    assert score_letter(" b ", "B")


def test_goqa_any_other_letter_of_a_to_z_makes_it_wrong():
    assert not score_letter("(A) or (C)", "A")
    # Z is not an option of any question, but the rule checks all of A..Z.
    assert not score_letter("(A) (Z)", "A")
    # Upper-casing applies to the other letters too: "(i)" becomes "(I)".
    assert not score_letter("(a) i think (i)", "A")
    # Bare letters inside words or sentences are not options.
    assert score_letter("(A) I AM SURE", "A")


def test_goqa_bare_letter_must_be_the_whole_answer():
    assert not score_letter("A lot", "A")
    assert not score_letter("B.", "B")
    assert not score_letter(" C ", "B")


def test_goqa_fullwidth_parentheses_are_not_normalised():
    # The spec's (and the public code's) rule has no fullwidth step, unlike XNLI/XCOPA.
    assert not score_letter("（A）", "A")
    assert score_letter("(A)（B）", "A")  # "（B）" is not "(B)", so B is not named


def test_goqa_gold_is_letter_of_argmax_label(data_dir):
    rows = lines(data_dir / "GlobalOpinionQA/GlobalOpinionQA_sample/split/sw.json")
    items = load("globalopinionqa", "sw", data_dir=data_dir)
    for row, item in zip(rows, items, strict=True):
        best = row["label"].index(max(row["label"]))
        assert item.gold == string.ascii_uppercase[best]
        assert item.options == tuple(string.ascii_uppercase[: len(row["label"])])
    assert len({i.gold for i in items}) > 1  # not trivially the first option
    item = next(i for i in items if i.gold != "A")
    assert item.is_correct(f"({item.gold.lower()})")
    assert not item.is_correct("(A)")


# --------------------------------------------------------------------------- XQuAD rule


def test_xquad_gold_inside_longer_answer_case_insensitive():
    assert score_span("The final score was 23-16 for Denver.", "23-16")
    assert score_span("the new england patriots", "New England Patriots")  # case-sensitive `in` fails


def test_xquad_span_needs_the_whole_gold():
    assert not score_span("New England", "New England Patriots")  # `pred in gold` would accept
    assert not score_span("23 - 16", "23-16")


def test_xquad_instance(data_dir):
    item = load("xquad", "de", data_dir=data_dir)[0]
    gold = lines(data_dir / "XQuAD/XQuAD_sample/ans/xquad.de.json")[0]
    assert item.gold == gold and item.scorer == "span"
    assert item.is_correct(f"Meine Antwort: {gold.upper()}!")
    assert not item.is_correct("weiß nicht")


# --------------------------------------------------------------------------- loading the data


def test_done_criterion_xnli_sw(data_dir):
    items = load("xnli", "sw", data_dir=data_dir)
    base = data_dir / "XNLI/XNLI_sample"
    assert len(items) == 50
    assert [i.target for i in items] == lines(base / "split/sw.json")
    assert [i.source for i in items] == lines(base / "split/en.json")
    assert [i.gold for i in items] == lines(base / "ans/sw.json")
    assert items[17].id == "xnli/sample/sw/17"
    assert {(i.benchmark, i.split, i.lang) for i in items} == {("xnli", "sample", "sw")}


def test_direction_per_family(data_dir):
    xquad = load("xquad", "zh", split="unseen", data_dir=data_dir)
    base = data_dir / "XQuAD/XQuAD_unseen/split"
    assert xquad[5].source == lines(base / "xquad.en.json")[5]
    assert xquad[5].target == lines(base / "xquad.zh.json")[5]

    xcopa = load("xcopa", "sw", data_dir=data_dir)
    base = data_dir / "XCOPA/XCOPA_sample"
    assert xcopa[0].source == lines(base / "en/sw.json")[0]  # the per-language English file
    assert xcopa[0].target == lines(base / "split/sw.json")[0]
    assert xcopa[0].source != lines(base / "split/en.json")[0]

    goqa = load("globalopinionqa", "sw", data_dir=data_dir)
    base = data_dir / "GlobalOpinionQA/GlobalOpinionQA_sample"
    assert goqa[0].source == lines(base / "translated/sw.json")[0]  # non-English helps English
    assert goqa[0].target == lines(base / "split/sw.json")[0]["input_text"]
    assert goqa[0].target.startswith("Human:")


def _target_file(data_dir: Path, name: str, split: str, lang: str) -> Path:
    folder = {"xnli": "XNLI", "xquad": "XQuAD", "xcopa": "XCOPA", "globalopinionqa": "GlobalOpinionQA"}[name]
    stem = f"xquad.{lang}" if name == "xquad" else lang
    return data_dir / folder / f"{folder}_{split}" / "split" / f"{stem}.json"


@pytest.mark.parametrize("split", datasets.SPLITS)
@pytest.mark.parametrize("name", datasets.BENCHMARKS)
def test_counts_match_the_files(data_dir, name, split):
    langs = datasets.languages(name, split, data_dir, include_english=True)
    split_dir = _target_file(data_dir, name, split, "x").parent
    on_disk = sorted(p.name.removeprefix("xquad.").removesuffix(".json") for p in split_dir.glob("*.json"))
    expected = [lang for lang in on_disk if (name, lang) not in {("xcopa", "qu"), ("globalopinionqa", "all")}]
    assert langs == expected
    for lang in langs:
        items = load(name, lang, split=split, data_dir=data_dir)
        assert len(items) == wc_l(_target_file(data_dir, name, split, lang)) > 0
        assert len({i.id for i in items}) == len(items)
        assert items[-1].id == f"{name}/{split}/{lang}/{len(items) - 1}"


def test_english_is_listed_only_on_request(data_dir):
    for name in datasets.BENCHMARKS:
        assert "en" not in datasets.languages(name, "sample", data_dir)
        assert "en" in datasets.languages(name, "sample", data_dir, include_english=True)
    assert len(datasets.languages("xnli", "sample", data_dir)) == 14
    # en loads: a self-transplant, source and target the same English prompt.
    items = load("xnli", "en", data_dir=data_dir)
    assert all(i.source == i.target for i in items)


def test_goqa_all_json_is_the_languages_concatenated(data_dir):
    base = data_dir / "GlobalOpinionQA/GlobalOpinionQA_sample/split"
    every = [row for lang in datasets.languages("globalopinionqa", "sample", data_dir, include_english=True)
             for row in lines(base / f"{lang}.json")]
    assert lines(base / "all.json") == every
    with pytest.raises(XtlError, match="concatenated"):
        load("globalopinionqa", "all", data_dir=data_dir)


def test_instances_are_frozen_and_picklable(data_dir):
    item = load("xnli", "de", data_dir=data_dir)[3]
    assert pickle.loads(pickle.dumps(item)) == item
    hash(item)
    with pytest.raises(AttributeError):
        item.gold = "1"  # type: ignore[misc]


def test_data_dir_from_environment(data_dir, monkeypatch):
    monkeypatch.setenv("XTL_DATA_DIR", str(data_dir))
    assert len(load("xcopa", "et")) == 50


def test_missing_data_dir_says_how_to_get_the_data(monkeypatch):
    monkeypatch.delenv("XTL_DATA_DIR", raising=False)
    with pytest.raises(XtlError, match="YYF-Tommy/XTransplant") as error:
        load("xnli", "sw")
    assert "XTL_DATA_DIR" in str(error.value) and "data/" in str(error.value)


def test_wrong_data_dir_says_what_was_expected(tmp_path, data_dir):
    with pytest.raises(XtlError, match="does not exist"):
        datasets.resolve_data_dir(tmp_path / "nope")
    with pytest.raises(XtlError, match="expected XNLI, XQuAD, XCOPA, GlobalOpinionQA") as error:
        datasets.resolve_data_dir(data_dir.parent)
    assert f"did you mean {data_dir}" in str(error.value)


def test_unknown_benchmark_split_language_list_what_exists(data_dir):
    with pytest.raises(XtlError, match="known: xnli, xquad, xcopa, globalopinionqa"):
        load("xnlii", "sw", data_dir=data_dir)
    with pytest.raises(XtlError, match="known: sample, unseen"):
        load("xnli", "sw", split="test", data_dir=data_dir)
    with pytest.raises(XtlError, match=r"no language 'sv'.*ar, bg, de, el, en, es, fr, hi, ru, sw, th, tr, ur, vi, zh\."):
        load("xnli", "sv", data_dir=data_dir)
    with pytest.raises(XtlError, match=r"en/qu\.json"):
        load("xcopa", "qu", data_dir=data_dir)
    with pytest.raises(XtlError, match="needs a language"):
        load("xquad", data_dir=data_dir)
    assert load("XNLI", "sw", data_dir=data_dir)[0].benchmark == "xnli"


# --------------------------------------------------------------------------- validation of the data


@pytest.fixture
def xnli_copy(tmp_path, data_dir) -> Path:
    """A copy of XNLI_sample in a data folder of its own (small: 45 files of 50 lines)."""
    shutil.copytree(data_dir / "XNLI/XNLI_sample", tmp_path / "XNLI/XNLI_sample")
    return tmp_path


def test_line_count_mismatch_names_every_file_and_count(xnli_copy):
    ans = xnli_copy / "XNLI/XNLI_sample/ans/sw.json"
    ans.write_text("".join(ans.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    with pytest.raises(XtlError) as error:
        load("xnli", "sw", data_dir=xnli_copy)
    message = str(error.value)
    assert f"{ans} has 49" in message
    assert f"{xnli_copy / 'XNLI/XNLI_sample/split/sw.json'} has 50" in message
    assert f"{xnli_copy / 'XNLI/XNLI_sample/split/en.json'} has 50" in message
    assert len(load("xnli", "de", data_dir=xnli_copy)) == 50  # other languages are fine


def test_malformed_line_names_file_and_line(xnli_copy):
    target = xnli_copy / "XNLI/XNLI_sample/split/sw.json"
    rows = target.read_text(encoding="utf-8").splitlines(keepends=True)
    rows[6] = '"unterminated\n'
    target.write_text("".join(rows), encoding="utf-8")
    with pytest.raises(XtlError, match=re.escape(f"{target}, line 7: not valid JSON")):
        load("xnli", "sw", data_dir=xnli_copy)


def test_bad_gold_and_bad_label_words_name_file_and_line(xnli_copy):
    ans = xnli_copy / "XNLI/XNLI_sample/ans/fr.json"
    rows = ans.read_text(encoding="utf-8").splitlines(keepends=True)
    rows[9] = "4\n"
    ans.write_text("".join(rows), encoding="utf-8")
    with pytest.raises(XtlError, match=re.escape(f"{ans}, line 10: gold 4 is not one of the options")):
        load("xnli", "fr", data_dir=xnli_copy)
    labels = xnli_copy / "XNLI/XNLI_sample/ans_lang/de.json"
    labels.write_text('{"1": "a", "2": "b"}\n', encoding="utf-8")
    with pytest.raises(XtlError, match=re.escape(f"{labels}, line 1")):
        load("xnli", "de", data_dir=xnli_copy)


def test_goqa_ties_go_to_the_first_letter_and_bad_labels_are_named(tmp_path, data_dir):
    # No line of the data has a tie; numpy's argmax (the public code) takes the first.
    base = tmp_path / "GlobalOpinionQA/GlobalOpinionQA_sample"
    for part in ("split", "translated"):
        (base / part).mkdir(parents=True)
        shutil.copy(data_dir / f"GlobalOpinionQA/GlobalOpinionQA_sample/{part}/sw.json", base / part)
    target = base / "split/sw.json"
    rows = lines(target)
    rows[0]["label"] = [0.1, 0.4, 0.1, 0.4]
    rows[1]["label"] = "A"
    target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(XtlError, match=re.escape(f"{target}, line 2: label must be a list")):
        load("globalopinionqa", "sw", data_dir=tmp_path)
    rows[1]["label"] = [0.2, 0.2, 0.6]
    target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    first, second = load("globalopinionqa", "sw", data_dir=tmp_path)[:2]
    assert (first.gold, second.gold) == ("B", "C")


def test_missing_benchmark_folder_is_named(xnli_copy):
    with pytest.raises(XtlError, match="XQuAD_sample does not exist"):
        load("xquad", "de", data_dir=xnli_copy)


# --------------------------------------------------------------------------- pairs files


def write_pairs(tmp_path: Path, *rows, name: str = "mine.jsonl") -> Path:
    path = tmp_path / name
    text = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return path


def test_pairs_every_scorer(tmp_path):
    path = write_pairs(
        tmp_path,
        {"id": "a", "source": "EN (1) yes (2) no", "target": "DE （1） ja （2） nein", "gold": "2", "scorer": "option",
         "labels": {"1": "ja", "2": "nein"}, "lang": "de"},
        {"id": 7, "source": "s", "target": "t", "gold": "C", "scorer": "letter"},
        {"id": "c", "source": "s", "target": "t", "gold": "Paris", "scorer": "span", "split": "mine"},
        {"id": "d", "source": "s", "target": "t (1) x (2) y (3) z", "gold": 3, "scorer": "option",
         "options": ["1", "2", "3"]},
        {"id": "e", "source": "s", "target": "t"},
        "",
    )
    a, b, c, d, e = load(path)
    assert a.benchmark == "pairs:mine" and a.split == "pairs" and a.lang == "de" and b.lang == "-"
    assert a.options == ("1", "2")  # from the fullwidth markers in the target
    assert a.is_correct("nein") and not a.is_correct("ja oder nein") and not a.is_correct("(1)")
    assert b.id == "7" and b.is_correct("(c)") and not b.is_correct("(C) (D)")
    assert c.split == "mine" and c.is_correct("It is paris.") and not c.is_correct("Lyon")
    assert d.gold == "3" and d.options == OPT3 and d.is_correct("3") and not d.is_correct("(3)(1)")
    assert e.gold is None and e.scorer is None and e.is_correct("anything") is None
    assert [i.id for i in load(path, "de")] == ["a"]
    assert [i.id for i in load(path, split="mine")] == ["c"]
    assert [i.id for i in load(str(path))] == ["a", "7", "c", "d", "e"]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id": "a", "source": "s", "target": "t", "gold": "x"}, "gold is given without a scorer"),
        ({"id": "a", "source": "s", "target": "t", "scorer": "span"}, "without a gold"),
        ({"id": "a", "source": "s", "target": "t", "gold": "x", "scorer": "exact"}, "unknown scorer 'exact'; allowed: option, letter, span"),
        ({"id": "a", "source": "s", "gold": "x", "scorer": "span"}, "'target' is missing"),
        ({"id": "a", "source": "  \n", "target": "t"}, "source must be a non-empty string"),
        ({"source": "s", "target": "t"}, "'id' is missing"),
        ({"id": "a", "source": "s", "target": "t", "taget": "t"}, "unknown field"),
        ({"id": "a", "source": "s", "target": "no markers", "gold": "1", "scorer": "option"}, "option marker"),
        ({"id": "a", "source": "s", "target": "(1) (2)", "gold": "3", "scorer": "option"}, "not one of the options"),
        ({"id": "a", "source": "s", "target": "t", "gold": "b", "scorer": "letter"}, "capital letter"),
        ({"id": "a", "source": "s", "target": "t", "gold": " ", "scorer": "span"}, "gold must be a non-empty string"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": "a", ', "not valid JSON"),
    ],
)
def test_pairs_errors_name_file_and_line(tmp_path, row, message):
    path = write_pairs(tmp_path, {"id": "ok", "source": "s", "target": "t"}, row)
    with pytest.raises(XtlError, match=re.escape(f"{path}, line 2: ") + ".*" + re.escape(message)):
        load(path)


def test_pairs_duplicate_id_empty_file_and_missing_lang(tmp_path):
    path = write_pairs(
        tmp_path, {"id": "a", "source": "s", "target": "t"}, {"id": "a", "source": "s2", "target": "t2"}
    )
    with pytest.raises(XtlError, match=r"line 2: id 'a' was already used on line 1"):
        load(path)
    empty = write_pairs(tmp_path, "", name="empty.jsonl")
    with pytest.raises(XtlError, match=re.escape(f"{empty} has no pairs")):
        load(empty)
    ok = write_pairs(tmp_path, {"id": "a", "source": "s", "target": "t", "lang": "sw"}, name="ok.jsonl")
    with pytest.raises(XtlError, match="no lines with lang 'de'; it has: sw"):
        load(ok, "de")
    with pytest.raises(XtlError, match="does not exist"):
        load(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------- command line


def test_cli_lists_counts(data_dir, capsys):
    assert main(["benchmarks", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "xnli             sample     700  ar:50 bg:50" in out
    assert "ar:1000" in out and "globalopinionqa  unseen" in out and " en:" not in out


def test_cli_json_counts_match_the_files(data_dir, capsys):
    argv = ["benchmarks", "--data-dir", str(data_dir), "--split", "sample", "--include-english", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["benchmark"], r["split"]) for r in rows] == [(n, "sample") for n in datasets.BENCHMARKS]
    for row in rows:
        for lang, count in row["languages"].items():
            assert count == wc_l(_target_file(data_dir, row["benchmark"], "sample", lang))
        assert row["total"] == sum(row["languages"].values())
    assert rows[0]["languages"]["en"] == 50


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--split", "test"], "unknown split 'test'; known: sample, unseen"),
        (["--data-dir", "/nonexistent/xtl-data"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line(data_dir, capsys, argv, message):
    if "--data-dir" not in argv:
        argv = ["--data-dir", str(data_dir), *argv]
    assert main(["benchmarks", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err
    assert "Traceback" not in captured.err


def test_cli_without_data_dir_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.delenv("XTL_DATA_DIR", raising=False)
    assert main(["benchmarks"]) == 2
    assert "YYF-Tommy/XTransplant" in capsys.readouterr().err


def test_every_benchmark_is_one_registry_entry():
    assert set(datasets.BENCHMARKS) < set(datasets.REGISTRY)
    assert datasets.REGISTRY["facts"].scorer == "word" and datasets.REGISTRY["xquad"].scorer == "span"
    for name in datasets.BENCHMARKS:
        assert datasets.REGISTRY[name].folder and datasets.REGISTRY[name].parse


def test_the_demo_facts_load_like_a_benchmark():
    assert datasets.languages("facts") == ["de", "es", "fr", "it"]
    items = datasets.load("facts", "fr")
    assert len(items) == 12 and items[0].id == "facts/demo/fr/0" and items[0].benchmark == "facts"
    assert items[0].source == "What is the capital of France? Answer in one word."
    assert items[0].is_correct("La capitale de la France est Paris.")
    assert not items[0].is_correct("La capitale de la France est la France.")
    assert [i.source for i in datasets.load("facts", "de")] == [i.source for i in items]  # parallel
    with pytest.raises(XtlError, match="facts has no language 'sw'"):
        datasets.load("facts", "sw")


def test_word_scorer_takes_any_accepted_spelling_as_a_whole_word():
    assert datasets.score_word("Die Hauptstadt ist Rom.", "Rome|Rom|Roma")
    assert datasets.score_word("ROMA", "Rome|Rom|Roma")
    assert not datasets.score_word("Romania", "Rome|Rom|Roma")
    assert not datasets.score_word("17 days", "7|seven")
