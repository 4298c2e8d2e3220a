"""Instance pairs (source prompt, target prompt, gold) and how answers are scored.

The second step of the data flow: the four XTransplant benchmarks as published in
the `data/` folder of GitHub YYF-Tommy/XTransplant (MIT), or a JSONL file of your
own pairs, become a list of `Instance`s. Each instance knows the scoring rule of
its benchmark (`XTRANSPLANT_SPEC.md`, section 4) through `Instance.is_correct`.

    >>> items = load("xnli", "sw", data_dir="../shared/data/xtransplant")
    >>> items[0].id, items[0].source[:6], items[0].target[:9]
    ('xnli/sample/sw/0', 'Human:', 'Binadamu:')

Direction (spec section 2): for XNLI, XQuAD and XCOPA the source is the English
version and the target the non-English prompt; for GlobalOpinionQA the source is
the non-English translation and the target the English prompt.

Which languages are listed (and why):

- `languages()` lists the target languages that have every file an instance needs.
- `en` is not listed by default. Its instances are self-transplants: the English
  prompt is both source and target (XNLI/XQuAD use the shared English file for
  both; XCOPA's `en/en.json` and GlobalOpinionQA's `translated/en.json` are
  identical to the target). The public code's PilotSet evaluation does include
  `en` in its pooled numbers (XNLI over 750 instances, XQuAD 600, XCOPA 550,
  GlobalOpinionQA 1200), so `languages(..., include_english=True)` gives that
  language list, and `load(name, "en")` always works.
- XCOPA `qu` has a target file and answers but no English version (`en/qu.json`),
  so it has no source and is not a language here (the public code leaves it out too).
- GlobalOpinionQA `all.json` (sample split only) is the concatenation, line for
  line, of the 24 per-language files in alphabetical order; it is not a language.

Loading checks, instead of pairing files with `zip()`: every file of an instance
must have the same number of lines (else an error names each file and its count),
and every line must be one JSON value of the expected shape (else an error names
the file and the line).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from xtl.errors import XtlError

BENCHMARKS = ("xnli", "xquad", "xcopa", "globalopinionqa")  # the paper's, in the data folder (see REGISTRY)
SPLITS = ("sample", "unseen")
SCORERS = ("option", "letter", "span", "word")
DATA_ENV = "XTL_DATA_DIR"
DATA_URL = "https://github.com/YYF-Tommy/XTransplant"
ENGLISH = "en"

_XNLI_OPTIONS = ("1", "2", "3")
_XCOPA_OPTIONS = ("1", "2")
_LETTERS = tuple(string.ascii_uppercase)
_GOQA_ALL = "all"  # sample/split/all.json: the per-language files concatenated
_NUMBER_MARKER = re.compile(r"\((\d+)\)")
_LETTER_MARKER = re.compile(r"\(([A-Z])\)")
_PAIRS_KEYS = ("id", "source", "target", "gold", "scorer", "lang", "split", "options", "labels")


# --------------------------------------------------------------------------- scoring


def _fullwidth_to_ascii_parens(text: str) -> str:
    return text.replace("（", "(").replace("）", ")")


def score_option(
    pred: str, gold: str, options: tuple[str, ...], labels: Mapping[str, str] | None = None
) -> bool:
    """The XNLI / XCOPA rule (spec section 4), exactly as the public evaluation code.

    Fullwidth `（` `）` become `(` `)` first. Correct iff the prediction names the gold
    option (`"(g)"` in it, or it is exactly `g` after stripping, or, with `labels`, the
    gold label word is in it) and names no other option o (no `"(o)"`, not exactly
    `o`, and, with `labels`, label word `labels[o]` not in it). XNLI passes the label
    words of the target language (`ans_lang`); XCOPA passes none.
    """
    if gold not in options:
        raise XtlError(f"gold {gold!r} is not one of the options {', '.join(options)}; pass a gold that is.")
    pred = _fullwidth_to_ascii_parens(pred)
    stripped = pred.strip()

    def names(option: str) -> bool:
        return f"({option})" in pred or stripped == option

    def says(option: str) -> bool:
        return labels is not None and option in labels and labels[option] in pred

    if not (names(gold) or says(gold)):
        return False
    return not any(names(o) or says(o) for o in options if o != gold)


def score_letter(pred: str, gold: str) -> bool:
    """The GlobalOpinionQA rule (spec section 4), exactly as the public evaluation code.

    With P = pred.upper(): correct iff (`"(g)"` in P or `P.strip() == g`) and no other
    letter X of A..Z has `"(X)"` in P or `P.strip() == X`. The other letters are all of
    A..Z, not only the question's options. Unlike XNLI/XCOPA there is no fullwidth
    normalisation: the public code does none, so `（A）` does not count as `(A)`.
    """
    if gold not in _LETTERS:
        raise XtlError(f"gold {gold!r} is not a capital letter A..Z; pass the option letter, e.g. 'A'.")
    upper = pred.upper()
    stripped = upper.strip()
    if not (f"({gold})" in upper or stripped == gold):
        return False
    return not any(f"({x})" in upper or stripped == x for x in _LETTERS if x != gold)


def score_span(pred: str, gold: str) -> bool:
    """The XQuAD rule (spec section 4): correct iff `gold.lower()` is in `pred.lower()`."""
    return gold.lower() in pred.lower()


def answer_key(
    prediction: str,
    scorer: str | None,
    options: tuple[str, ...] = (),
    labels: Mapping[str, str] | None = None,
) -> str | None:
    """The answer `prediction` gives, after the scorer's own normalisation; None when it gives none.

    `option`: the one option it names by the rules of `score_option` (None when it
    names none or several); `letter`: the one letter A..Z it names by the rules of
    `score_letter`; `span`, `word` or no scorer: the text lowercased, whitespace collapsed,
    trailing punctuation dropped (None when empty). Two answers are the same answer
    when their keys are equal; no gold is needed.
    """
    if scorer == "option":
        pred = _fullwidth_to_ascii_parens(prediction)
        stripped = pred.strip()
        named = [
            o
            for o in options
            if f"({o})" in pred or stripped == o or (labels is not None and o in labels and labels[o] in pred)
        ]
        return named[0] if len(named) == 1 else None
    if scorer == "letter":
        upper = prediction.upper()
        stripped = upper.strip()
        named = [x for x in _LETTERS if f"({x})" in upper or stripped == x]
        return named[0] if len(named) == 1 else None
    if scorer not in (None, "span", "word"):
        raise XtlError(f"unknown scorer {scorer!r}; allowed: {', '.join(SCORERS)} (or None).")
    text = " ".join(prediction.lower().split()).rstrip(" .!?。！？,;:")
    return text or None


def score_word(pred: str, gold: str) -> bool:
    """The demo facts rule: `gold` lists the accepted spellings separated by `|`
    ("Rome|Rom|Roma"); correct iff one of them is a whole word of the prediction,
    ignoring case."""
    text = pred.casefold()
    return any(
        re.search(rf"(?<!\w){re.escape(word.strip().casefold())}(?!\w)", text) for word in gold.split("|") if word.strip()
    )


# --------------------------------------------------------------------------- instances


@dataclass(frozen=True)
class Instance:
    """One (source prompt, target prompt) pair and, when known, its gold answer.

    `target` is the prompt the model answers (its generation is scored); `source` is
    the prompt whose latent is transplanted. `scorer` is one of `SCORERS` (`option`,
    `letter`, `span`, `word`; None when there is no gold); `options` are the option names the `option` rule
    checks (for `letter`, informational: the rule checks all of A..Z); `labels` are
    XNLI's label words in the target language, or a pairs file's `labels`.
    """

    id: str
    benchmark: str
    split: str
    lang: str
    source: str
    target: str
    gold: str | None
    scorer: str | None
    options: tuple[str, ...] = ()
    labels: Mapping[str, str] | None = field(default=None, hash=False)

    def is_correct(self, prediction: str) -> bool | None:
        """Whether `prediction` (the generated answer text) is right; None without a gold."""
        if self.gold is None:
            return None
        if self.scorer == "option":
            return score_option(prediction, self.gold, self.options, self.labels)
        if self.scorer == "letter":
            return score_letter(prediction, self.gold)
        if self.scorer == "span":
            return score_span(prediction, self.gold)
        if self.scorer == "word":
            return score_word(prediction, self.gold)
        raise XtlError(f"instance {self.id} has scorer {self.scorer!r}; allowed: {', '.join(SCORERS)}.")


def option_texts(instance) -> tuple[tuple[str, ...], int | None]:
    """(each option's continuation text, the gold's index or None) for scoring mode
    (`xtl.scoring`), from the instance's scorer:

    - `option` (XNLI, XCOPA, pairs files with options): each option as the prompt
      writes it, "(1)", "(2)", ..., in option order;
    - `letter` (GlobalOpinionQA): "(A)", "(B)", ... for the question's letters;
    - `span` (XQuAD) and `word` (the facts): one entry, the gold answer text (for
      `word`, its first accepted spelling).

    The gold index is None when the instance has no gold (and then a `span` or
    `word` instance has nothing to score: refused)."""
    gold, scorer = getattr(instance, "gold", None), getattr(instance, "scorer", None)
    if scorer in ("option", "letter"):
        options = tuple(getattr(instance, "options", ()) or ())
        if not options:
            raise XtlError(f"instance {instance.id!r} has scorer {scorer!r} but no options, so it has nothing to score.")
        return tuple(f"({o})" for o in options), (options.index(gold) if gold in options else None)
    if scorer in ("span", "word") and gold:
        text = gold.split("|")[0].strip() if scorer == "word" else gold
        return (text,), 0
    raise XtlError(
        f"instance {getattr(instance, 'id', '?')!r} has {'no gold' if scorer in ('span', 'word') else f'scorer {scorer!r}'}, "
        "so scoring mode has no continuation to score: give it options (scorer option or letter) or a gold answer."
    )


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Benchmark:
    """One benchmark, declared once: where its files are, which languages it has,
    how a line becomes an instance, and its scorer.

    A folder benchmark (`folder` set) lives in the XTransplant data folder as
    `FOLDER/FOLDER_{split}/`; `files(base, lang)` names the files of one
    language by role (`source`, `target`, and `gold` / `labels` when it has
    them), `lang_of(stem)` turns a `split/*.json` file stem into a language
    (None: not a language file), and `parse(target_value, gold_value, path,
    number)` turns line k into (target prompt, gold, options); `options` are the
    option names of an `option` benchmark (what `xtl.selection`'s vote compares). A shipped
    benchmark (`shipped` set) is a pairs file inside the package, read with
    `load_pairs`, its languages the `lang` values of its lines.
    """

    name: str
    scorer: str
    options: tuple[str, ...] = ()
    splits: tuple[str, ...] = SPLITS
    folder: str | None = None
    files: Callable[[Path, str], dict[str, Path]] | None = None
    lang_of: Callable[[str], str | None] = lambda stem: stem
    parse: Callable[[Any, Any, Mapping[str, Path], int], tuple[str, str, tuple[str, ...]]] | None = None
    labels: Callable[[Path], dict[str, str]] | None = None
    not_languages: tuple[str, ...] = ()
    shipped: str | None = None  # file name in xtl/demo_data


def _option_parser(options: tuple[str, ...]):
    def parse(target_value: Any, gold_value: Any, files: Mapping[str, Path], number: int):
        target = _prompt(target_value, files["target"], number, "a prompt")
        if gold_value not in options:
            raise XtlError(
                f"{files['gold']}, line {number}: gold {gold_value!r} is not one of the options "
                f"{', '.join(repr(o) for o in options)}; restore the file from {DATA_URL}."
            )
        return target, gold_value, options

    return parse


def _span_parse(target_value: Any, gold_value: Any, files: Mapping[str, Path], number: int):
    target = _prompt(target_value, files["target"], number, "a prompt")
    return target, _prompt(gold_value, files["gold"], number, "the gold answer span"), ()


def _goqa_parse(target_value: Any, gold_value: Any, files: Mapping[str, Path], number: int):
    return _goqa_target(target_value, files["target"], number)  # target lines carry the gold distribution


REGISTRY: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "xnli", "option", _XNLI_OPTIONS, folder="XNLI",
            files=lambda base, lang: {
                "source": base / "split" / f"{ENGLISH}.json",
                "target": base / "split" / f"{lang}.json",
                "gold": base / "ans" / f"{lang}.json",
                "labels": base / "ans_lang" / f"{lang}.json",
            },
            parse=_option_parser(_XNLI_OPTIONS),
            labels=lambda path: _xnli_labels(path),
        ),
        Benchmark(
            "xquad", "span", folder="XQuAD",
            files=lambda base, lang: {
                "source": base / "split" / f"xquad.{ENGLISH}.json",
                "target": base / "split" / f"xquad.{lang}.json",
                "gold": base / "ans" / f"xquad.{lang}.json",
            },
            lang_of=lambda stem: stem[len("xquad."):] if stem.startswith("xquad.") else None,
            parse=_span_parse,
        ),
        Benchmark(
            "xcopa", "option", _XCOPA_OPTIONS, folder="XCOPA",
            files=lambda base, lang: {
                "source": base / "en" / f"{lang}.json",
                "target": base / "split" / f"{lang}.json",
                "gold": base / "ans" / f"{lang}.json",
            },
            parse=_option_parser(_XCOPA_OPTIONS),
        ),
        Benchmark(
            "globalopinionqa", "letter", folder="GlobalOpinionQA",
            files=lambda base, lang: {
                "source": base / "translated" / f"{lang}.json",
                "target": base / "split" / f"{lang}.json",
            },
            parse=_goqa_parse,
            not_languages=(_GOQA_ALL,),
        ),
        # The demo facts: English questions as source, the same question in fr, de, es
        # or it as target; gold = the accepted spellings (`word` scorer). Shipped with xtl.
        Benchmark("facts", "word", splits=("demo",), shipped="facts-demo.jsonl"),
    )
}


def _shipped_path(benchmark: Benchmark) -> Path:
    from importlib import resources

    return Path(str(resources.files("xtl") / "demo_data" / benchmark.shipped))


# --------------------------------------------------------------------------- data folder


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The XTransplant `data/` folder: the argument, else `$XTL_DATA_DIR`, else an error
    saying how to get it."""
    given = data_dir if data_dir is not None else (os.environ.get(DATA_ENV) or None)
    if given is None:
        raise XtlError(
            f"no data folder was given and {DATA_ENV} is not set; clone {DATA_URL} and pass its "
            f"data/ folder as data_dir= (or --data-dir), or set {DATA_ENV} to it."
        )
    path = Path(given).expanduser()
    if not path.is_dir():
        raise XtlError(
            f"data folder {path} does not exist or is not a folder; pass the data/ folder of a "
            f"clone of {DATA_URL} (or set {DATA_ENV} to it)."
        )
    if not any((path / folder).is_dir() for folder in (REGISTRY[n].folder for n in BENCHMARKS)):
        hint = ""
        try:
            inside = [path / "data", *sorted(p for p in path.iterdir() if p.is_dir())]
        except OSError:
            inside = []
        for candidate in inside:
            if any((candidate / folder).is_dir() for folder in (REGISTRY[n].folder for n in BENCHMARKS)):
                hint = f" (did you mean {candidate}?)"
                break
        raise XtlError(
            f"{path} is not the XTransplant data folder{hint}: expected "
            f"{', '.join(REGISTRY[n].folder for n in BENCHMARKS)} folders inside; pass the data/ folder of a clone of {DATA_URL}."
        )
    return path


def _benchmark_name(name: str) -> str:
    key = str(name).lower()
    if key not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(key, list(REGISTRY), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise XtlError(
            f"unknown benchmark {name!r}{hint}; known: {', '.join(REGISTRY)} (your own pairs: "
            "load_pairs(PATH), or --pairs PATH on the command line)."
        )
    return key


def _check_split(split: str, name: str | None = None) -> str:
    splits = REGISTRY[name].splits if name is not None else SPLITS
    if split not in splits:
        raise XtlError(f"unknown split {split!r}; known: {', '.join(splits)}.")
    return split


def _split_dir(root: Path, name: str, split: str) -> Path:
    folder = REGISTRY[name].folder
    path = root / folder / f"{folder}_{split}"
    if not path.is_dir():
        raise XtlError(
            f"{path} does not exist, so {name} {split} is not in data folder {root}; use a complete "
            f"copy of the data/ folder of {DATA_URL}."
        )
    return path


def _files(name: str, base: Path, lang: str) -> dict[str, Path]:
    """The files one language's instances are read from, by role, in checking order."""
    return REGISTRY[name].files(base, lang)


def _candidate_langs(name: str, base: Path) -> list[str]:
    lang_of = REGISTRY[name].lang_of
    stems = (lang_of(path.name[: -len(".json")]) for path in (base / "split").glob("*.json"))
    return sorted(stem for stem in stems if stem is not None)


def languages(
    name: str,
    split: str = "sample",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    include_english: bool = False,
) -> list[str]:
    """The target languages of `name`/`split` whose files are all there, sorted.

    `en` (the English self-transplant, in the public code's pooled numbers) is listed
    only with `include_english=True`; GlobalOpinionQA's `all.json` and XCOPA's `qu`
    (no English source) never are. See the module docstring.
    """
    name = _benchmark_name(name)
    benchmark = REGISTRY[name]
    if benchmark.shipped:
        split = _check_split(benchmark.splits[0] if split == "sample" else split, name)  # its only split
        langs = sorted({i.lang for i in load_pairs(_shipped_path(benchmark))})
        return [lang for lang in langs if include_english or lang != ENGLISH]
    split = _check_split(split, name)
    base = _split_dir(resolve_data_dir(data_dir), name, split)
    found = []
    for lang in _candidate_langs(name, base):
        if lang in benchmark.not_languages:
            continue
        if lang == ENGLISH and not include_english:
            continue
        if all(path.is_file() for path in _files(name, base, lang).values()):
            found.append(lang)
    return found


# --------------------------------------------------------------------------- reading


def _read_lines(path: Path) -> list[Any]:
    """One JSON value per line; a malformed line is an error naming file and line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise XtlError(f"{path} is not UTF-8 text ({error}); each line must be one JSON value.") from None
    # Split on "\n" only: str.splitlines() would also split inside JSON strings at
    # U+2028 and friends, which ensure_ascii=False files may contain raw.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    values = []
    decode = json.loads
    for number, line in enumerate(lines, start=1):
        try:
            values.append(decode(line))
        except json.JSONDecodeError as error:
            raise XtlError(
                f"{path}, line {number}: not valid JSON ({error.msg}, column {error.colno}); "
                f"each line must be exactly one JSON value."
            ) from None
    return values


def _prompt(value: Any, path: Path, number: int, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise XtlError(
            f"{path}, line {number}: expected {what} as a non-empty JSON string, got {value!r:.60}."
        )
    return _no_lone_surrogate(value, f"{path}, line {number}", what)


def _no_lone_surrogate(text: str, where: str, what: str) -> str:
    """JSON escapes can spell half of a UTF-16 pair ("\\ud800"), which is no character: refuse it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise XtlError(
            f"{where}: {what} holds {text[error.start]!r}, half of a UTF-16 surrogate pair and no character "
            "(a broken \\uXXXX escape); fix the text."
        ) from None
    return text


def _check_counts(
    name: str, split: str, lang: str, files: Mapping[str, Path], counts: Mapping[str, int]
) -> None:
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{files[role]} has {counts[role]}" for role in counts)
        raise XtlError(
            f"{name} {split} {lang}: the files of one instance have different numbers of lines "
            f"({listing}); line k of every file must be the same instance, so restore the files "
            f"from {DATA_URL}."
        )


def _unknown_lang(name: str, split: str, lang: str, base: Path, data_dir: Path) -> XtlError:
    known = languages(name, split, data_dir, include_english=True)
    if lang in REGISTRY[name].not_languages and (base / "split" / f"{lang}.json").is_file():
        why = "all.json is the per-language files concatenated, so load each language instead"
    elif lang in _candidate_langs(name, base):
        missing = [str(p) for p in _files(name, base, lang).values() if not p.is_file()]
        why = f"its files are incomplete, {', '.join(missing)} missing"
    else:
        why = f"there are no files for it in {base}"
    return XtlError(f"{name} {split} has no language {lang!r} ({why}); choose one of: {', '.join(known)}.")


def load(
    name: str | os.PathLike[str],
    lang: str | None = None,
    *,
    split: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> list[Instance]:
    """The instances of one benchmark language and split, or of a pairs file.

    `name` is one of `BENCHMARKS` (then `lang` is required and `split` defaults to
    `"sample"`), or the path of a JSONL pairs file (see `load_pairs`; then `lang` and
    `split` filter its lines and are optional). Instance ids are
    `{name}/{split}/{lang}/{k}` with k the 0-based line number in the files, the
    instance index the public code uses.
    """
    if _is_pairs_path(name):
        return load_pairs(name, lang=lang, split=split)
    name = _benchmark_name(str(name))
    if REGISTRY[name].shipped:
        return _load_shipped(REGISTRY[name], lang, split)
    split = _check_split("sample" if split is None else split, name)
    root = resolve_data_dir(data_dir)
    files = _language_files(name, lang, split, root)
    data = {role: _read_lines(path) for role, path in files.items() if role != "labels"}
    _check_counts(name, split, lang, files, {role: len(values) for role, values in data.items()})
    if not data["target"]:
        raise XtlError(f"{files['target']} is empty; restore it from {DATA_URL}.")
    benchmark = REGISTRY[name]
    labels = benchmark.labels(files["labels"]) if benchmark.labels else None
    instances = []
    for k, source_value in enumerate(data["source"]):
        number = k + 1
        source = _prompt(source_value, files["source"], number, "a prompt")
        gold_value = data["gold"][k] if "gold" in data else None
        target, gold, options = benchmark.parse(data["target"][k], gold_value, files, number)
        instances.append(Instance(
            id=f"{name}/{split}/{lang}/{k}", benchmark=name, split=split, lang=lang, source=source, target=target,
            gold=gold, scorer=benchmark.scorer, options=options, labels=labels,
        ))  # fmt: skip
    return instances


def _language_files(name: str, lang: str | None, split: str, root: Path) -> dict[str, Path]:
    """The files of one language of a published benchmark (role -> path), or one sentence naming the languages."""
    base = _split_dir(root, name, split)
    if lang is None:
        known = ", ".join(languages(name, split, root, include_english=True))
        raise XtlError(f"load({name!r}) needs a language; {name} {split} has: {known}.")
    if "/" in lang or "\\" in lang or lang.startswith(".") or lang in REGISTRY[name].not_languages:
        raise _unknown_lang(name, split, lang, base, root)
    files = _files(name, base, lang)
    if not all(path.is_file() for path in files.values()):
        raise _unknown_lang(name, split, lang, base, root)
    return files


def _load_shipped(benchmark: "Benchmark", lang: str | None, split: str | None) -> list[Instance]:
    """The instances of a benchmark shipped with xtl (the demo facts), from its pairs file."""
    name = benchmark.name
    split = _check_split(benchmark.splits[0] if split in (None, "sample") else split, name)
    if lang is None:
        raise XtlError(f"load({name!r}) needs a language; {name} has: {', '.join(languages(name, split))}.")
    if lang not in languages(name, split, include_english=True):
        raise XtlError(f"{name} has no language {lang!r}; choose one of: {', '.join(languages(name, split))}.")
    return [
        Instance(f"{name}/{split}/{lang}/{k}", name, split, lang, i.source, i.target, i.gold, i.scorer, i.options, i.labels)
        for k, i in enumerate(load_pairs(_shipped_path(benchmark), lang=lang))
    ]


def _xnli_labels(path: Path) -> dict[str, str]:
    values = _read_lines(path)
    if len(values) != 1:
        raise XtlError(
            f"{path} has {len(values)} lines; it must have exactly one, the label words of options 1, 2, 3."
        )
    value = values[0]
    if (
        not isinstance(value, dict)
        or sorted(value) != list(_XNLI_OPTIONS)
        or not all(isinstance(word, str) and word for word in value.values())
    ):
        raise XtlError(
            f"{path}, line 1: expected {{\"1\": label, \"2\": label, \"3\": label}} with non-empty "
            f"strings, got {value!r:.80}."
        )
    return dict(value)


def _goqa_target(value: Any, path: Path, number: int) -> tuple[str, str, tuple[str, ...]]:
    """(English prompt, gold letter, option letters) of one GlobalOpinionQA line; gold is
    the letter of argmax(label), the first one on ties, as numpy's argmax."""
    if not isinstance(value, dict) or "input_text" not in value or "label" not in value:
        raise XtlError(
            f"{path}, line {number}: expected an object with input_text and label, got {value!r:.60}."
        )
    target = _prompt(value["input_text"], path, number, "input_text")
    probs = value["label"]
    if (
        not isinstance(probs, list)
        or not 0 < len(probs) <= len(_LETTERS)
        or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in probs)
    ):
        raise XtlError(
            f"{path}, line {number}: label must be a list of 1 to 26 numbers (one per option), "
            f"got {probs!r:.60}."
        )
    best = max(range(len(probs)), key=probs.__getitem__)
    return target, _LETTERS[best], _LETTERS[: len(probs)]


# --------------------------------------------------------------------------- pairs files


def _is_pairs_path(name: Any) -> bool:
    if isinstance(name, os.PathLike):
        return True
    text = str(name)
    return text.endswith((".jsonl", ".json")) or "/" in text or os.sep in text


def load_pairs(
    path: str | os.PathLike[str], *, lang: str | None = None, split: str | None = None
) -> list[Instance]:
    """Your own pairs: a JSONL file, one object per line.

    Fields: `id` (unique), `source`, `target` (non-empty prompts), and optionally
    `gold` with `scorer` (`option`, `letter` or `span`: the rules of section 4;
    `word`: a whole word among `|`-separated spellings, as the demo facts),
    `lang` (default `-`), `split` (default `pairs`), `options` (for `option`: the
    option names; default the `(n)` markers in the target prompt) and `labels` (for
    `option`: label words by option, as XNLI's). `lang` and `split` keep only the
    lines that have them. Blank lines are skipped; anything else wrong is an error
    naming the file and line.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise XtlError(f"pairs file {path} is a folder; give the path of a JSONL file (one pair per line).")
    if not path.is_file():
        raise XtlError(
            f"pairs file {path} does not exist; give the path of a JSONL file, or one of the benchmarks "
            f"{', '.join(BENCHMARKS)}."
        )
    benchmark = f"pairs:{path.stem}"
    instances: list[Instance] = []
    first_line: dict[str, int] = {}
    for number, line in _pair_lines(path):
        if not line.strip():
            continue
        instance = _pair(line, path, number, benchmark)
        if instance.id in first_line:
            raise XtlError(
                f"{path}, line {number}: id {instance.id!r} was already used on line "
                f"{first_line[instance.id]}; give every pair its own id."
            )
        first_line[instance.id] = number
        instances.append(instance)
    if not instances:
        raise XtlError(
            f"pairs file {path} has no pairs; write one JSON object per line with id, source and target."
        )
    for key, wanted in (("lang", lang), ("split", split)):
        if wanted is None:
            continue
        present = sorted({getattr(i, key) for i in instances})
        instances = [i for i in instances if getattr(i, key) == wanted]
        if not instances:
            raise XtlError(
                f"pairs file {path} has no lines with {key} {wanted!r}; it has: {', '.join(present)}."
            )
    return instances


MAX_PAIR_LINE_BYTES = 1 << 20  # a pairs line (one pair, both prompts) is at most 1 MiB


def _pair_lines(path: Path):
    """(line number, text) of each line, read one at a time: a line longer than
    `MAX_PAIR_LINE_BYTES` is refused before it is held in memory whole."""
    with open(path, "rb") as handle:
        for number in itertools.count(1):
            raw = handle.readline(MAX_PAIR_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_PAIR_LINE_BYTES and not raw.endswith(b"\n"):
                raise XtlError(
                    f"{path}, line {number}: the line is longer than {MAX_PAIR_LINE_BYTES // (1 << 20)} MiB, the most a pair "
                    "may hold (no model's context takes a prompt that long); shorten its prompts."
                )
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise XtlError(f"pairs file {path} is not UTF-8 text (line {number}: {error}); save it as UTF-8 JSONL.") from None


def _pair(line: str, path: Path, number: int, benchmark: str) -> Instance:
    where = f"{path}, line {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise XtlError(
            f"{where}: not valid JSON ({error.msg}, column {error.colno}); write one JSON object per line."
        ) from None
    if not isinstance(row, dict):
        raise XtlError(f"{where}: expected a JSON object with id, source and target, got {row!r:.60}.")
    unknown = sorted(set(row) - set(_PAIRS_KEYS))
    if unknown:
        raise XtlError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_PAIRS_KEYS)}.")
    for key in ("id", "source", "target"):
        if key not in row:
            raise XtlError(f"{where}: the field {key!r} is missing; every line needs id, source and target.")
    pair_id = row["id"]
    if isinstance(pair_id, int) and not isinstance(pair_id, bool):
        pair_id = str(pair_id)
    if not isinstance(pair_id, str) or not pair_id.strip():
        raise XtlError(f"{where}: id must be a non-empty string or an integer, got {row['id']!r:.60}.")
    source = _pair_text(row, "source", where)
    target = _pair_text(row, "target", where)
    lang = _pair_text(row, "lang", where) if "lang" in row else "-"
    split = _pair_text(row, "split", where) if "split" in row else "pairs"

    gold, scorer = row.get("gold"), row.get("scorer")
    if isinstance(gold, int) and not isinstance(gold, bool):
        gold = str(gold)
    if gold is None and scorer is None:
        for key in ("options", "labels"):
            if key in row:
                raise XtlError(
                    f"{where}: {key} is given but there is no gold and scorer; add them or drop {key}."
                )
        return Instance(pair_id, benchmark, split, lang, source, target, None, None)
    if scorer is None:
        raise XtlError(
            f"{where}: gold is given without a scorer; add \"scorer\": one of {', '.join(SCORERS)}."
        )
    if scorer not in SCORERS:
        raise XtlError(f"{where}: unknown scorer {scorer!r}; allowed: {', '.join(SCORERS)}.")
    if gold is None:
        raise XtlError(
            f"{where}: scorer {scorer!r} is given without a gold; add \"gold\" or drop the scorer."
        )
    if not isinstance(gold, str) or not gold.strip():
        raise XtlError(f"{where}: gold must be a non-empty string, got {row['gold']!r:.60}.")

    options: tuple[str, ...] = ()
    labels = None
    if scorer != "option" and "labels" in row:
        raise XtlError(f"{where}: labels are only used by the option scorer, not {scorer!r}; drop them.")
    if scorer == "option":
        options = _pair_options(row, target, where, _NUMBER_MARKER, "(1)")
        labels = _pair_labels(row, options, where)
    elif scorer == "letter":
        if gold not in _LETTERS:
            raise XtlError(f"{where}: a letter gold must be one capital letter A..Z, got {gold!r:.40}.")
        options = _pair_options(row, target, where, _LETTER_MARKER, "")
    elif "options" in row:
        raise XtlError(f"{where}: options are not used by the {scorer} scorer; drop them.")
    if options and gold not in options:
        raise XtlError(f"{where}: gold {gold!r:.40} is not one of the options {', '.join(options)}.")
    return Instance(pair_id, benchmark, split, lang, source, target, gold, scorer, options, labels)


def _pair_text(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise XtlError(f"{where}: {key} must be a non-empty string, got {value!r:.60}.")
    return _no_lone_surrogate(value, where, key)


def _pair_options(
    row: Mapping[str, Any], target: str, where: str, marker: re.Pattern[str], example: str
) -> tuple[str, ...]:
    """The `options` field, else the markers found in the target prompt (fullwidth
    parentheses count). With an `example`, fewer than two options is an error."""
    if "options" in row:
        options = row["options"]
        if (
            not isinstance(options, list)
            or len(options) < 2
            or not all(isinstance(o, str) and o.strip() for o in options)
            or len(set(options)) != len(options)
        ):
            raise XtlError(
                f"{where}: options must be a list of at least two distinct non-empty strings, "
                f"got {options!r:.60}."
            )
        return tuple(options)
    found = tuple(dict.fromkeys(marker.findall(_fullwidth_to_ascii_parens(target))))
    if example and len(found) < 2:
        raise XtlError(
            f"{where}: found {len(found)} option marker(s) like {example} in the target prompt; "
            f"list the options in an \"options\" field."
        )
    return found


def _pair_labels(row: Mapping[str, Any], options: tuple[str, ...], where: str) -> dict[str, str] | None:
    if "labels" not in row:
        return None
    labels = row["labels"]
    if (
        not isinstance(labels, dict)
        or not set(labels) <= set(options)
        or not all(isinstance(word, str) and word for word in labels.values())
    ):
        raise XtlError(
            f"{where}: labels must map options ({', '.join(options)}) to non-empty label words, "
            f"got {labels!r:.60}."
        )
    return dict(labels)
