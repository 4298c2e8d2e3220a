"""Trust: what is stored is what was computed, for one content per instance, and
hostile or unlucky inputs cost one sentence. Each test reproduces one way in
which rows could be silently wrong or mixed, or a traceback, first."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from xtl import cli, results
from xtl.errors import XtlError

from conftest import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
SETTINGS = results.Settings(
    model_fingerprint="f" * 16, architecture="LlamaForCausalLM", n_layers=4, dtype="float32",
    sites=("ffn",), configs="all", max_new_tokens=3, model="m",
)  # fmt: skip


def instance(id="c", source="the source", target="the target", lang="sw", gold="1"):
    return SimpleNamespace(id=id, source=source, target=target, lang=lang, gold=gold, benchmark="xcopa", split="test")


def rows_of(item, run_id=SETTINGS.run_id, layers=((0, 1), (2, 3))):
    rows = [results.record(SETTINGS, run_id, item, None, None, None, [171, 5], "ab")]
    rows += [results.record(SETTINGS, run_id, item, "ffn", i, j, [171, 488, 7], "abc", mean_logprob=-0.5) for i, j in layers]
    return rows


def store(out, *items) -> results.RunDir:
    run = results.RunDir.open(out, SETTINGS)
    for item in items:
        run.append(rows_of(item))
    return run


# --- 3. one truth per instance ----------------------------------------------------------------------------


def test_language_is_part_of_an_instances_content():
    assert results.instance_fingerprint(instance(lang="sw")) != results.instance_fingerprint(instance(lang="ht"))


def test_a_writer_refuses_rows_of_an_id_stored_with_other_content(tmp_path):
    run = store(tmp_path / "run", instance())
    before = results.parts(run.path)
    with pytest.raises(XtlError, match=r"instance 'c' is already in .* with other content .*stored in 'part-"):
        run.append(rows_of(instance(target="another target")))
    with pytest.raises(XtlError, match="instance 'c' is already in"):  # a new writer too
        results.RunDir.open(run.path, SETTINGS).append(rows_of(instance(lang="ht")))
    assert results.parts(run.path) == before


def test_a_writer_reads_each_part_once_and_never_its_own(tmp_path, monkeypatch):
    store(tmp_path / "run", instance(id="a"), instance(id="b"))
    read = []
    real = results._read_part
    monkeypatch.setattr(results, "_read_part", lambda path, *a: read.append(path.name) or real(path, *a))
    run = results.RunDir.open(tmp_path / "run", SETTINGS)  # reads both parts (a damaged one is named here)
    assert len(run.done()) == 6 and sorted(read) == sorted(p.name for p in results.parts(run.path))
    read.clear()
    mine = run.append(rows_of(instance(id="c")))
    assert read == [] and ("c", "ffn", 2, 3) in run.done() and mine in results.parts(run.path)


def test_a_race_between_two_writers_is_found_after_writing_and_nothing_mixed_stays(tmp_path, monkeypatch):
    out = tmp_path / "run"
    first, second = results.RunDir.open(out, SETTINGS), results.RunDir.open(out, SETTINGS)
    # `first` checked before `second` wrote: its check before writing saw nothing
    first._check_content(rows_of(instance()))
    second.append(rows_of(instance(target="other")))
    monkeypatch.setattr(first, "_check_content", lambda rows: None)
    with pytest.raises(XtlError, match="instance 'c' is stored with two different contents .* in 'part-.*' and 'part-"):
        first.append(rows_of(instance()))
    frame = results.load(out)  # the writer that found the clash took its own part back
    assert set(frame.target) == {"other"} and len(results.parts(out)) == 1


RACER = """
import pathlib, sys, time
from types import SimpleNamespace
from xtl import results
from xtl.errors import XtlError
out, target, go = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
settings = results.Settings(model_fingerprint="f" * 16, architecture="LlamaForCausalLM", n_layers=4,
                            dtype="float32", sites=("ffn",), configs="all", max_new_tokens=3, model="m")
run = results.RunDir.open(out, settings)
item = SimpleNamespace(id="c", source="s", target=target, lang="sw", gold="1")
rows = [results.record(settings, settings.run_id, item, "ffn", 0, j, [1, 2], "t") for j in range(4)]
while not go.exists():
    time.sleep(0.001)
try:
    run.append(rows)
except XtlError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
"""


def test_two_writer_processes_with_other_content_for_one_id_never_both_succeed(tmp_path):
    for attempt in range(3):
        out, go = tmp_path / f"run{attempt}", tmp_path / f"go{attempt}"
        results.RunDir.open(out, SETTINGS)
        writers = [
            subprocess.Popen([sys.executable, "-c", RACER, str(out), target, str(go)], env=ENV, stderr=subprocess.PIPE, text=True)
            for target in ("one", "two")
        ]
        go.touch()
        outcomes = [(w.wait(timeout=60), w.stderr.read()) for w in writers]
        failed = [err for code, err in outcomes if code != 0]
        assert failed and all("instance 'c'" in err and err.count("\n") == 1 for err in failed), outcomes
        assert results.load(out).target.nunique() <= 1


def test_a_copied_part_with_other_content_for_an_id_is_refused_by_load(tmp_path):
    mine, theirs = store(tmp_path / "mine", instance()), store(tmp_path / "theirs", instance(source="changed"))
    shutil.copy(results.parts(theirs.path)[0], mine.path / "part-copied-00000.parquet")
    with pytest.raises(XtlError, match=r"instance 'c' is stored with two different contents .*'part-copied-00000.parquet'"):
        results.load(mine.path)
    # a copied part with the same content is the same rows: read once
    clean = store(tmp_path / "clean", instance())
    shutil.copy(results.parts(clean.path)[0], clean.path / "part-copied-00000.parquet")
    assert len(results.load(clean.path)) == 3


# --- 4. integrity: every changed byte is found ------------------------------------------------------------


def test_every_flipped_byte_of_a_part_is_found_or_changes_no_row(tmp_path):
    run = store(tmp_path / "run", instance())
    [part] = results.parts(run.path)
    good = results._read_part(part, None, run.run_id)
    data = part.read_bytes()
    found = tried = 0
    for offset in range(0, len(data), 3):  # every third byte: all pages, headers and the footer
        flipped = bytearray(data)
        flipped[offset] ^= 0x04
        part.write_bytes(bytes(flipped))
        tried += 1
        try:
            table = results._read_part(part, None, run.run_id)
        except XtlError as error:
            assert "is damaged" in str(error) or "is not a part xtl wrote" in str(error), (offset, error)
            found += 1
            continue
        assert table.equals(good), f"a flipped byte at offset {offset} changed a row silently"
    assert found > tried // 2


def test_a_flipped_byte_is_the_same_sentence_as_a_truncated_part_at_the_command_line(tmp_path, capsys):
    run = store(tmp_path / "run", instance())
    [part] = results.parts(run.path)
    data = bytearray(part.read_bytes())
    token = (488).to_bytes(4, "little")
    data[data.index(token)] ^= 0x01  # a token id, as a bit flip on disk would change it
    part.write_bytes(bytes(data))
    assert cli.main(["report", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "delete it and rerun the sweep command" in err and err.count("\n") == 1


# --- 5. no advice that destroys data ----------------------------------------------------------------------


def test_an_edited_run_id_is_named_and_no_part_is_called_copied(tmp_path, capsys):
    run = store(tmp_path / "run", instance())
    text = (run.path / "_run.json").read_text()
    (run.path / "_run.json").write_text(text.replace(SETTINGS.run_id, "0123456789ab"))
    assert cli.main(["report", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert "was edited; put back the original" in err and "delete it" in err and "copied" not in err


def test_a_settings_file_copied_from_another_run_is_named_not_the_parts(tmp_path, capsys):
    run = store(tmp_path / "run", instance(), instance(id="d"))
    other = results.RunDir.open(tmp_path / "other", results.dataclasses.replace(SETTINGS, max_new_tokens=5))
    shutil.copy(other.path / "_run.json", run.path / "_run.json")
    assert cli.main(["report", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert "but all 2 parts in" in err and "the settings file was edited or copied from another run" in err
    assert "part-" not in err and err.count("\n") == 1


# --- 6. parts of this run with other columns --------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.drop_columns(["token_ids"]), "it has no column 'token_ids'"),
        (lambda t: t.set_column(t.column_names.index("source_layer"), "source_layer", t.column("source_layer").cast("string")),
         "its column 'source_layer' is string, where xtl writes int32"),
        (lambda t: t.set_column(t.column_names.index("correct"), "correct", t.column("text")), "its column 'correct' is string"),
    ],
    ids=["missing", "layer-as-text", "text-as-correct"],
)
@pytest.mark.parametrize("command", ["load", "report", "figures"])
def test_a_part_with_other_columns_is_one_sentence(tmp_path, capsys, change, message, command):
    run = store(tmp_path / "run", instance())
    [part] = results.parts(run.path)
    pq.write_table(change(pq.read_table(part)).replace_schema_metadata(), part)
    if command == "load":
        with pytest.raises(XtlError, match=f"is not a part xtl wrote \\({message}"):
            results.load(run.path)
        with pytest.raises(XtlError, match="is not a part xtl wrote"):  # a resuming writer too, before it computes
            results.RunDir.open(run.path, SETTINGS).done()
        return
    argv = ["report", str(run.path)] if command == "report" else ["figures", str(run.path), "--out", str(tmp_path / "f"), "--no-png"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


# --- 8. study files: paths stay inside out, values have their types --------------------------------------

STUDY = "out = {out}\nbenchmarks = ['xcopa']\ndata_dir = '{data}'\n{extra}\n[[models]]\nmodel = '{model}'\n{model_extra}\n"


@pytest.mark.parametrize(
    "extra, model_extra, message",
    [
        ("", "name = '../../escaped'", "name '../../escaped' is not a plain folder name"),
        ("", "name = '/tmp/escaped'", "name '/tmp/escaped' is not a plain folder name"),
        ("", "name = '..'", "is not a plain folder name"),
        ("OUT=/", "", "out '/' is the root of the file system"),
        ("OUT=5", "", "out must be a path in quotes, not 5"),
        ("include_english = 'no'", "", "include_english must be true or false (without quotes), not 'no'"),
        ("max_new_tokens = 2.9", "", "max_new_tokens must be a positive whole number, not 2.9"),
        ("max_new_tokens = '5'", "", "max_new_tokens must be a positive whole number, not '5'"),
        ("max_new_tokens = 'abc'", "", "max_new_tokens must be a positive whole number, not 'abc'"),
        ("max_new_tokens = [3]", "", "max_new_tokens must be a positive whole number, not [3]"),
        ("max_new_tokens = -1", "", "max_new_tokens must be a positive whole number, not -1"),
        ("languages = [1, 2]", "", "languages must be \"all\" or a non-empty list of language codes"),
        ("languages = {xcopa = 3}", "", "languages.xcopa must be \"all\""),
        ("max_batch_rows = -4", "", "max_batch_rows must be a whole number of at least 2"),
        ("memory_budget = '-8GiB'", "", "memory budget '-8GiB' is not understood"),
        ("memory_budget = -5", "", "memory budget -5 is not a positive number of bytes"),
        ("limit = -2", "", "limit must be a whole number of at least 1"),
        ("limit = 1.5", "", "limit must be a whole number of at least 1"),
        ("prompt_format = 'html'", "", "unknown prompt format 'html'"),
        ("prompt_format = 3", "", "prompt_format must be \"raw\" or \"chat\", not 3"),
        ("", "dtype = 'float8'", "unknown dtype 'float8'"),
        ("", "dtype = 16", "dtype of"),
        ("", "layers = 'a-b'", "layer 'a-b' is not a layer number"),
        ("", "device = 'gpu'", "unknown device 'gpu'"),
    ],
)
def test_a_wrong_study_value_is_one_sentence_in_the_dry_run(tmp_path, capsys, monkeypatch, extra, model_extra, message):
    out = repr(str(tmp_path / "study"))
    if extra.startswith("OUT="):
        out, extra = extra[4:] if extra[4:] == "5" else repr(extra[4:]), ""
    from conftest import DATA_DIR, MODELS_DIR

    path = tmp_path / "study.toml"
    extra = extra if extra.startswith("languages") else f"languages = ['sw']\n{extra}"
    path.write_text(STUDY.format(out=out, data=DATA_DIR, extra=extra, model=MODELS_DIR / "tiny-llama", model_extra=model_extra))
    assert cli.main(["study", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()


# --- 9. Ray addresses ---------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.parametrize("command", ["sweep", "study"])
@pytest.mark.parametrize("address, message", [("UNREACHABLE", "cannot reach the Ray cluster at '127.0.0.1:"),
                                              ("not an address", "--ray 'not an address' is not a Ray address")])
def test_a_ray_address_that_is_wrong_or_unreachable_is_one_sentence_within_a_minute(tmp_path, capsys, command, address, message):
    import time

    from conftest import DATA_DIR, MODELS_DIR

    address = f"127.0.0.1:{_free_port()}" if address == "UNREACHABLE" else address
    if command == "sweep":
        argv = ["sweep", "--model", str(MODELS_DIR / "tiny-llama"), "--benchmark", "xcopa", "--lang", "sw", "--data-dir",
                str(DATA_DIR), "--limit", "1", "--layers", "0:0", "--out", str(tmp_path / "run"), "--quiet", "--ray", address]  # fmt: skip
    else:
        path = tmp_path / "study.toml"
        path.write_text(STUDY.format(out=repr(str(tmp_path / "s")), data=DATA_DIR, extra="languages = ['sw']\nlimit = 1",
                                     model=MODELS_DIR / "tiny-llama", model_extra="layers = '0:0'"))  # fmt: skip
        argv = ["study", str(path), "--quiet", "--ray", address]
    started = time.monotonic()
    assert cli.main(argv) == 2
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists() or not results.parts(tmp_path / "run")


# --- 7. bounded inputs --------------------------------------------------------------------------------------


def _limited(argv, limit_bytes=2 << 30, **kwargs):
    """A command run with its address space capped (what it may allocate at most)."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run(argv, env=ENV, capture_output=True, text=True, preexec_fn=cap, timeout=300, **kwargs)


def test_a_100_mb_pairs_line_is_one_sentence_within_2_gb(tmp_path):
    from conftest import MODELS_DIR

    pairs = tmp_path / "pairs.jsonl"
    with open(pairs, "w") as handle:
        handle.write('{"id": "a", "source": "x", "target": "y"}\n')
        handle.write('{"id": "b", "source": "' + "word " * (20 << 20) + '", "target": "y"}\n')
    assert pairs.stat().st_size > 100 << 20
    done = _limited([sys.executable, "-m", "xtl", "sweep", "--model", str(MODELS_DIR / "tiny-llama"), "--pairs", str(pairs),
                     "--layers", "0:0", "--out", str(tmp_path / "run"), "--quiet"])  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "line 2: the line is longer than 1 MiB" in done.stderr and done.stderr.count("\n") == 1


# --- 1. a checkpoint's own code never runs unasked ------------------------------------------------------------

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("the checkpoint's code ran")
from transformers import PreTrainedTokenizerFast as EvilTokenizer
"""


@pytest.mark.parametrize("weights", ["gguf", "safetensors"])
def test_remote_code_does_not_run_even_when_stdin_says_yes(tmp_path, weights):
    from conftest import MODELS_DIR
    from xtl.model import embedded_model_path

    folder, marker = tmp_path / "checkpoint", tmp_path / "ran"
    if weights == "gguf":
        folder.mkdir()
        (folder / "model.gguf").symlink_to(embedded_model_path())
        (folder / "tokenizer_config.json").write_text('{"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", null]}}')
    else:
        shutil.copytree(MODELS_DIR / "tiny-llama", folder)
        config = folder / "tokenizer_config.json"
        data = {**__import__("json").loads(config.read_text()), "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}
        data.pop("tokenizer_class", None)
        config.write_text(__import__("json").dumps(data))
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    done = subprocess.run(
        [sys.executable, "-m", "xtl", "transplant", "--model", str(folder), "--source", "a", "--target", "b",
         "--source-layer", "0", "--target-layer", "0", "--max-new-tokens", "1"],
        input="y\ny\ny\n", env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert not marker.exists(), "the checkpoint's own code ran"
    assert "[y/N]" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    if done.returncode != 0:
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--trust-remote-code" in done.stderr, done.stderr


# --- 2. the model fingerprint covers everything that makes a row -------------------------------------------


def _copy_model(tmp_path, name="tiny-llama"):
    from conftest import MODELS_DIR

    folder = tmp_path / name
    shutil.copytree(MODELS_DIR / name, folder)
    return folder


def _edit_json(path, change):
    import json

    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _lowercase(tokenizer):
    lowercase = {"type": "Lowercase"}
    normalizer = tokenizer.get("normalizer")
    tokenizer["normalizer"] = lowercase if normalizer is None else {"type": "Sequence", "normalizers": [normalizer, lowercase]}


@pytest.mark.parametrize(
    "part, change",
    [
        ("tokenizer", lambda folder: _edit_json(folder / "tokenizer.json", _lowercase)),
        ("chat template", lambda folder: _edit_json(folder / "tokenizer_config.json", lambda d: d.update(chat_template="{{ messages[0]['content'] }}!"))),
        ("EOS ids", lambda folder: _edit_json(folder / "generation_config.json", lambda d: d.update(eos_token_id=[2, 5]))),
    ],
)
def test_a_resume_with_another_tokenizer_chat_template_or_eos_is_refused_by_name(tmp_path, part, change):
    import xtl
    from xtl import datasets

    from conftest import DATA_DIR

    folder, out = _copy_model(tmp_path), tmp_path / "run"
    items = datasets.load("xcopa", "sw", data_dir=DATA_DIR)[:2]
    xtl.sweep(xtl.load_model(folder), items[:1], configs="0:0", max_new_tokens=2, out=out, progress=False)
    before = results.parts(out)
    change(folder)
    changed = xtl.load_model(folder)
    with pytest.raises(XtlError, match=f"model_fingerprint: .* \\(the model's {part} differs\\)"):
        xtl.sweep(changed, items, configs="0:0", max_new_tokens=2, out=out, progress=False)
    assert results.parts(out) == before


# --- 7 and 10. config files: hostile sizes and broken values are one sentence, before memory is spent -----------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: (f / "config.json").write_text("[]"), "config.json' holds a JSON list, not an object"),
        (lambda f: _edit_json(f / "config.json", lambda d: d.pop("intermediate_size")), "config.json' has no 'intermediate_size'"),
        (lambda f: _edit_json(f / "config.json", lambda d: d.update(num_attention_heads=0)), "has num_attention_heads = 0: it must be a whole number from 1"),
        (lambda f: _edit_json(f / "config.json", lambda d: d.update(num_hidden_layers=-3)), "has num_hidden_layers = -3"),
        (lambda f: _edit_json(f / "config.json", lambda d: d.update(num_hidden_layers=3)), "gives num_hidden_layers = 3, but the weights hold 4 layers"),
        (lambda f: _edit_json(f / "config.json", lambda d: d.update(hidden_size="64")), "has hidden_size = '64'"),
        (lambda f: _edit_json(f / "config.json", lambda d: d.update(vocab_size=10**10)), "has vocab_size = 10000000000: it must be a whole number from 1 to"),
        (lambda f: _edit_json(f / "config.json", lambda d: d.update(vocab_size=10**6)), "gives vocab_size = 1000000 and hidden_size = 64, but the weights' model.embed_tokens.weight is"),
        (lambda f: _edit_json(f / "config.json", lambda d: d.update(rms_norm_eps="x")), "has rms_norm_eps = 'x': it must be a positive number"),
        (lambda f: (f / "generation_config.json").write_text("{eos"), "generation_config.json' is not valid JSON"),
        (lambda f: _edit_json(f / "generation_config.json", lambda d: d.update(eos_token_id="x")), "gives eos_token_id 'x': EOS ids must be token ids"),
        (lambda f: _edit_json(f / "generation_config.json", lambda d: d.update(eos_token_id=[2, 10**9])), "EOS ids must be token ids from 0 to"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 16), "is not a readable safetensors file"),
    ],
    ids=["list", "missing-key", "zero-heads", "negative-layers", "fewer-layers", "text-size", "vocab-1e10", "vocab-mismatch",
         "eps-text", "broken-generation-config", "eos-text", "eos-outside-vocab", "weights-garbage"],
)
def test_a_broken_config_is_one_sentence(tmp_path, capsys, change, message):
    folder = _copy_model(tmp_path)
    change(folder)
    argv = ["transplant", "--model", str(folder), "--source", "a", "--target", "b", "--source-layer", "0",
            "--target-layer", "0", "--max-new-tokens", "1"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_hidden_size_of_a_billion_is_one_sentence_within_2_gb(tmp_path):
    folder = _copy_model(tmp_path)
    _edit_json(folder / "config.json", lambda d: d.update(hidden_size=10**9, intermediate_size=10**9))
    done = _limited([sys.executable, "-m", "xtl", "transplant", "--model", str(folder), "--source", "a", "--target", "b",
                     "--source-layer", "0", "--target-layer", "0", "--max-new-tokens", "1"])  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "gives vocab_size = " in done.stderr and "hidden_size = 1000000000, but the weights'" in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "template",
    [
        "{{ messages.__class__.__init__.__globals__ }}",
        "{% include '/etc/passwd' %}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ raise_exception('no') }}",
    ],
    ids=["globals", "include", "subclasses", "raises"],
)
def test_a_chat_template_that_escapes_the_sandbox_is_one_sentence(tmp_path, capsys, template):
    folder = _copy_model(tmp_path)
    _edit_json(folder / "tokenizer_config.json", lambda d: d.update(chat_template=template))
    argv = ["transplant", "--model", str(folder), "--source", "a", "--target", "b", "--source-layer", "0",
            "--target-layer", "0", "--max-new-tokens", "1", "--prompt-format", "chat"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "the chat template of tiny-llama cannot be applied" in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_prompt_longer_than_the_context_can_hold_is_refused_before_tokenizing(tmp_path, monkeypatch):
    import xtl
    from xtl.model.checkpoint_checks import max_prompt_chars

    from conftest import MODELS_DIR

    model = xtl.load_model(MODELS_DIR / "tiny-llama")
    limit = max_prompt_chars(model.cfg.n_ctx, model.xtl.longest_token)
    calls = []
    monkeypatch.setattr(model, "tokenizer", lambda *a, **k: calls.append(a))
    with pytest.raises(XtlError, match=f"the source prompt is {limit + 1:,} characters long, more than the {limit:,}"):
        xtl.model.encode(model, "a" * (limit + 1), "source prompt")
    assert calls == []  # never tokenized


# --- 10. the out folder and its parts are checked before the model is loaded ------------------------------------


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda out: results.parts(out)[0].write_bytes(b"PAR1" + b"\0" * 100), "is damaged"),
        (lambda out: pq.write_table(pq.read_table(results.parts(out)[0]).drop_columns(["text"]).replace_schema_metadata(),
                                    results.parts(out)[0]), "is not a part xtl wrote (it has no column 'text')"),
        (lambda out: "/proc/x", "cannot create '/proc/x'"),
    ],
    ids=["damaged-part", "part-without-a-column", "proc"],
)
def test_the_out_folder_and_its_parts_are_checked_before_the_model_is_loaded(tmp_path, capsys, monkeypatch, damage, message):
    import xtl
    from conftest import DATA_DIR, MODELS_DIR

    run = store(tmp_path / "run", instance())
    given = damage(run.path)
    out = given if isinstance(given, str) else run.path

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(xtl.model, "load_model", no_loading)
    argv = ["sweep", "--model", str(MODELS_DIR / "tiny-llama"), "--benchmark", "xcopa", "--lang", "sw", "--data-dir",
            str(DATA_DIR), "--limit", "1", "--layers", "0:0", "--out", str(out), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


# --- 11. work sharing: instance leases ---------------------------------------------------------------------------

HOLDER = """
import sys, time
from xtl.leases import Leases
leases = Leases(sys.argv[1], "holder")
assert leases.take("c")
print("held", flush=True)
time.sleep(600)
"""


def test_a_lease_is_held_once_and_a_dead_writers_lease_is_taken_over(tmp_path):
    from xtl.leases import Leases

    first, second = Leases(tmp_path, "first"), Leases(tmp_path, "second")
    assert first.take("c") and not second.take("c") and second.take("d")
    first.release("c")
    assert second.take("c")
    second.close()
    assert not list((tmp_path / "_leases").iterdir())
    # a writer killed while holding a lease: its process is gone, the lease is free at once
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert not first.take("c")
    holder.kill()
    holder.wait()
    assert first.take("c")
    # a lease nobody refreshed for the time to live (a writer on another machine that died) is free too
    late = Leases(tmp_path, "late", ttl=0.2)
    assert not late.take("c")
    first._stop.set()  # `first` stops refreshing, as a dead writer would
    first._heartbeat.join()
    os.utime(first.held["c"], (0, 0))
    assert late.take("c")


def test_a_writers_share_is_leased_while_computed_and_given_back_when_it_stops(tmp_path):
    import contextlib

    items = [instance(id=f"i{k}") for k in range(6)]
    run = results.RunDir.open(tmp_path / "run", SETTINGS)
    pending = [results.Row(k, None, None, None) for k in range(6)]
    with contextlib.closing(run.shares(items, pending, batch_rows=2)) as shares:
        first = next(shares)
        assert [row.instance_index for row in first] == [0, 1, 2, 3]  # rows for two batches
        from xtl.leases import Leases

        assert not Leases(run.path, "another-writer").take("i0")  # leased while computed
    assert not list((run.path / "_leases").iterdir())  # stopped: every lease given back at once
