"""The run directory: many writers at once, kills at random moments, standard
readers, refused foreign parts and changed instances, and one sentence (exit 2)
for every damaged or unwritable run folder."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

import xtl
from xtl import cli, datasets, results
from xtl.errors import XtlError
from xtl.signals import SIGNALS

from conftest import DATA_DIR, MODELS_DIR, REPO

MODEL = MODELS_DIR / "tiny-llama"
CONFIGS = "0,3"  # 4 configurations per site: small and quick, 2 sites
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

# One writer: sweep instances [start, stop) of xcopa/sw into OUT, in small batches.
WRITER = """
import os, pathlib, sys, time, xtl
from xtl import datasets
out, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = xtl.load_model(sys.argv[4])
items = datasets.load("xcopa", "sw", data_dir=sys.argv[5])[start:stop]
if len(sys.argv) > 6:  # a start line: say "loaded", then wait until the test says go
    go = pathlib.Path(sys.argv[6])
    (go.parent / f"ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.01)
xtl.sweep(model, items, sites=["ffn", "attn-paper"], configs="%s", out=out, max_batch_rows=6, progress=False, load_result=False)
""" % CONFIGS


def writer(out, start, stop, go=None):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out), str(start), str(stop), str(MODEL), str(DATA_DIR)]
        + ([str(go)] if go else []),
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def rows(frame: pd.DataFrame) -> dict:
    frame = frame.astype(object).where(frame.notna(), None)
    return {
        (r.instance_id, r.site, r.source_layer, r.target_layer): (tuple(r.token_ids), r.text, r.correct, r.instance_fingerprint)
        for r in frame.itertuples()
    }


@pytest.fixture(scope="module")
def llama():
    return xtl.load_model(MODEL)


@pytest.fixture(scope="module")
def items():
    return datasets.load("xcopa", "sw", data_dir=DATA_DIR)[:8]


@pytest.fixture(scope="module")
def reference(llama, items):
    """The uninterrupted single-process run of all 8 instances."""
    return rows(xtl.sweep(llama, items, sites=["ffn", "attn-paper"], configs=CONFIGS, progress=False))


def expected_rows(n):
    return n * (1 + 2 * 4)


def test_three_writers_at_once_lose_and_duplicate_nothing(tmp_path, reference):
    # Overlapping shards started together: 0-5, 3-8 and all 8. Every row is
    # wanted by two or three writers; they share the instances out, and the
    # run directory holds each row once.
    out = tmp_path / "run"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    go = barrier / "go"
    processes = [writer(out, 0, 5, go), writer(out, 3, 8, go), writer(out, 0, 8, go)]
    deadline = time.time() + 240
    while len(list(barrier.glob("ready-*"))) < 3 and time.time() < deadline and all(p.poll() is None for p in processes):
        time.sleep(0.02)
    go.touch()  # all three models are loaded: the sweeps start together
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, (process.returncode, err.decode()[-2000:])
    names = [p.name for p in results.parts(out)]
    assert len(names) == len(set(names)) and len({name.rsplit("-", 1)[0] for name in names}) == 3  # three writers
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    frame = results.load(out)
    assert len(frame) == expected_rows(8)
    assert rows(frame) == reference
    # the writers shared out the instances (xtl.leases): no row was computed twice
    raw = pd.read_parquet(out)
    assert len(raw) == len(frame)
    assert not list((out / "_leases").iterdir())  # every lease given back
    assert json.loads((out / "_run.json").read_text())["run_id"] == frame.run_id.iloc[0]


def test_kills_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, reference):
    out = tmp_path / "run"
    rng = random.Random(10)
    # (new parts to wait for, then a random delay): a kill while loading, and kills mid-sweep
    moments = [(0, rng.uniform(0.0, 1.0)), (1, rng.uniform(0.0, 0.3)), (2, rng.uniform(0.0, 0.3))]
    partial = []
    for new_parts, delay in moments:
        wait_for = len(results.parts(out)) + new_parts if out.exists() else new_parts
        process = writer(out, 0, 8)
        deadline = time.time() + 120
        while new_parts and len(results.parts(out)) < wait_for and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if (out / "_run.json").exists():
            partial.append(len(results.load(out)))
    assert any(0 < n < expected_rows(8) for n in partial)  # at least one kill landed mid-sweep
    finished = writer(out, 0, 8)
    _, err = finished.communicate(timeout=300)
    assert finished.returncode == 0, err.decode()
    frame = results.load(out)
    assert rows(frame) == reference and len(frame) == expected_rows(8)


def test_run_json_is_created_once_when_writers_race(tmp_path):
    import threading

    def settings(dtype):
        return results.Settings(model_fingerprint="f" * 16, architecture="LlamaForCausalLM", n_layers=4,
                                dtype=dtype, sites=("ffn",), configs="all", max_new_tokens=20)  # fmt: skip

    out = tmp_path / "run"
    outcomes: list[str] = []
    barrier = threading.Barrier(12)

    def open_one(dtype):
        barrier.wait()
        try:
            results.RunDir.open(out, settings(dtype))
            outcomes.append(dtype)
        except XtlError as error:
            assert "holds a run made with other settings (dtype:" in str(error)
            outcomes.append("refused-" + dtype)

    threads = [threading.Thread(target=open_one, args=("float32" if k % 2 else "bfloat16",)) for k in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winner = results.settings(out)["dtype"]
    loser = "bfloat16" if winner == "float32" else "float32"
    assert sorted(outcomes) == sorted([winner] * 6 + ["refused-" + loser] * 6)
    assert [p.name for p in out.iterdir()] == ["_run.json"]  # no temporary file left


def test_standard_readers_and_the_report_and_figures_commands_on_a_real_run(tmp_path, llama, items, capsys):
    import duckdb
    import pyarrow.dataset as ds

    out = tmp_path / "run"
    xtl.sweep(llama, items[:3], sites=["ffn"], configs=CONFIGS, out=out, progress=False)
    assert cli.main(["report", str(out)]) == 0
    assert cli.main(["figures", str(out), "--no-png"]) == 0
    assert (out / "_report.html").is_file()
    written = sorted(p.name for p in (out / "_figures").glob("*.html"))
    # the four paper figures, and the selectors' bars (the rows carry confidence signals)
    assert written == sorted(
        [f"tiny-llama_ffn_xcopa_sample_{kind}.html" for kind in ("gain", "layerwise", "upper_bounds", "win_tie_lose")]
        + ["selection_tiny-llama_xcopa_sample_ffn_bars.html"]
    )
    assert "tiny-llama · ffn · xcopa/sample" in (out / "_report.html").read_text()
    capsys.readouterr()
    n = 3 * (1 + 4)
    assert len(pd.read_parquet(out)) == n
    assert ds.dataset(out).to_table().num_rows == n
    [(count,)] = duckdb.sql(f"SELECT count(*) FROM '{out}/*.parquet'").fetchall()
    assert count == n
    assert set(pd.read_parquet(out).columns) == set(results.COLUMNS)


def test_changed_instance_content_under_the_same_id_is_refused(tmp_path, llama, items, monkeypatch):
    # a minimal chat template, so that prompt format "chat" can be asked of tiny-llama
    monkeypatch.setattr(llama.tokenizer, "chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}", raising=False)
    out = tmp_path / "run"
    xtl.sweep(llama, items[:2], sites=["ffn"], configs=CONFIGS, out=out, progress=False)
    before = sorted(os.listdir(out))
    changed = [items[0], dataclasses.replace(items[1], target=items[1].target + " ?")]
    with pytest.raises(XtlError, match=f"instance '{items[1].id}' is already in .* with other content"):
        xtl.sweep(llama, changed, sites=["ffn"], configs=CONFIGS, out=out, progress=False)
    regold = [dataclasses.replace(items[0], gold="2" if items[0].gold != "2" else "1")]
    with pytest.raises(XtlError, match=f"instance '{items[0].id}'"):
        xtl.sweep(llama, regold, sites=["ffn"], configs=CONFIGS, out=out, progress=False)
    assert sorted(os.listdir(out)) == before


def test_a_part_of_another_run_is_refused_by_load_and_resume(tmp_path, llama, items):
    mine, other = tmp_path / "mine", tmp_path / "other"
    xtl.sweep(llama, items[:1], sites=["ffn"], configs=CONFIGS, out=mine, progress=False)
    xtl.sweep(llama, items[1:2], sites=["ffn"], configs=CONFIGS, max_new_tokens=5, out=other, progress=False)
    stray = shutil.copy(results.parts(other)[0], mine / "part-copied-00000.parquet")
    with pytest.raises(XtlError, match="holds rows of another run .*delete it"):
        results.load(mine)
    with pytest.raises(XtlError, match="part-copied-00000.parquet' holds rows of another run"):
        xtl.sweep(llama, items[:2], sites=["ffn"], configs=CONFIGS, out=mine, progress=False)
    os.remove(stray)
    assert len(xtl.sweep(llama, items[:2], sites=["ffn"], configs=CONFIGS, out=mine, progress=False)) == 2 * 5


def test_the_same_checkpoint_in_another_folder_is_one_model(tmp_path, items):
    renamed = tmp_path / "llama-copy"
    shutil.copytree(MODEL, renamed)
    first = tmp_path / "run-a"
    xtl.sweep(xtl.load_model(MODEL), items[:2], sites=["ffn"], configs=CONFIGS, out=first, progress=False)
    copy_model = xtl.load_model(renamed)
    assert copy_model.xtl.name == "llama-copy"
    # resuming the same run from the renamed folder adds rows under the run's model name
    frame = xtl.sweep(copy_model, items[:3], sites=["ffn"], configs=CONFIGS, out=first, progress=False)
    assert set(frame.model) == {"tiny-llama"} and frame.run_id.nunique() == 1 and len(frame) == 3 * 5
    # another run of the renamed folder: the report shows one model
    second = tmp_path / "run-b"
    xcopa_th = datasets.load("xcopa", "th", data_dir=DATA_DIR)[:2]
    xtl.sweep(copy_model, xcopa_th, sites=["ffn"], configs=CONFIGS, out=second, progress=False)
    assert set(results.load(second).model) == {"llama-copy"}
    from xtl.report import load_results

    both = load_results([first, second])
    assert set(both.model) == {"llama-copy"}  # the first name in sort order, for both runs
    assert xtl.analysis.average_performance(both).groupby(["model", "site"]).ngroups == 1


def test_older_parts_without_new_columns_load_with_nulls(tmp_path, llama, items):
    out = tmp_path / "run"
    xtl.sweep(llama, items[:1], sites=["ffn"], configs=CONFIGS, out=out, progress=False)
    [part] = results.parts(out)
    old = pq.read_table(part).drop_columns(["instance_fingerprint", "prompt_format", *SIGNALS])
    old = old.replace_schema_metadata()  # parts of that time carry no content hash
    pq.write_table(old, part)
    frame = results.load(out)
    assert len(frame) == 5 and frame.instance_fingerprint.isna().all() and frame.mean_logprob.isna().all()
    assert list(frame.columns) == list(results.COLUMNS)


def test_settings_type_is_what_run_json_holds_and_run_id_hashes():
    settings = results.Settings(
        model_fingerprint="f" * 16, architecture="LlamaForCausalLM", n_layers=4, dtype="float32",
        sites=("ffn", "attn-paper"), configs=((3, 0), (0, 1)), max_new_tokens=20, model="a",
    )  # fmt: skip
    assert settings.sites == ("attn-paper", "ffn") and settings.configs == ((0, 1), (3, 0))
    assert results.Settings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    assert dataclasses.replace(settings, model="b").run_id == settings.run_id  # a display name only
    for change in (dict(dtype="bfloat16"), dict(prompt_format="chat"), dict(max_new_tokens=5), dict(sites=("ffn",))):
        assert dataclasses.replace(settings, **change).run_id != settings.run_id
    # a resume compares the binding settings: the prompt format is one of them
    assert dataclasses.replace(settings, prompt_format="chat").changes_since(settings) == ["prompt_format: 'raw' there, 'chat' now"]
    with pytest.raises(XtlError, match="unknown prompt format 'html'"):
        dataclasses.replace(settings, prompt_format="html")


# --- damaged or unwritable run folders: one sentence, exit 2 -------------------------------------

SWEEP = ["sweep", "--model", str(MODEL), "--benchmark", "xcopa", "--lang", "sw", "--data-dir", str(DATA_DIR),
         "--limit", "2", "--layers", CONFIGS, "--quiet"]  # fmt: skip


@pytest.fixture
def run(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(SWEEP + ["--out", str(out)]) == 0
    capsys.readouterr()
    return out


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda out: truncate(results.parts(out)[0]), "is damaged (not a complete Parquet part): delete it and rerun"),
        (lambda out: results.parts(out)[0].write_bytes(b""), "is damaged (not a complete Parquet part): delete it"),
        (lambda out: results.parts(out)[0].write_bytes(os.urandom(500)), "is damaged"),
        (lambda out: (out / "_run.json").write_text(""), "_run.json' is empty: delete it and rerun the sweep command"),
        (lambda out: (out / "_run.json").write_text("{model"), "is not a valid xtl settings file: delete it and rerun"),
        (lambda out: (out / "_run.json").unlink(), "has parts but no _run.json: rerun the sweep command"),
    ],
    ids=["truncated-part", "empty-part", "random-part", "empty-run-json", "invalid-run-json", "no-run-json"],
)
@pytest.mark.parametrize("command", ["report", "resume"])
def test_damaged_run_folder_is_one_sentence(run, capsys, damage, message, command):
    damage(run)
    argv = ["report", str(run)] if command == "report" else SWEEP + ["--out", str(run)]
    if command == "resume" and "no _run.json" in message:
        # recovery: rerunning the sweep recreates the settings file and keeps the parts
        assert cli.main(argv) == 0 and len(results.load(run)) == 2 * 5
        return
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_following_the_sentence_recovers(run, capsys):
    truncate(results.parts(run)[0])
    (run / "_run.json").write_text("")
    assert cli.main(SWEEP + ["--out", str(run)]) == 2
    (run / "_run.json").unlink()  # as the sentence says
    assert cli.main(SWEEP + ["--out", str(run)]) == 2  # now the part
    results.parts(run)[0].unlink()
    assert cli.main(SWEEP + ["--out", str(run)]) == 0
    assert len(results.load(run)) == 2 * 5


def test_a_stale_settings_temp_file_from_a_kill_at_the_start(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".run.json.tmp").write_text('{"model": ')  # what a kill at the very start leaves
    assert cli.main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds only a temporary file left by a sweep stopped as it started" in err and "delete the folder" in err
    assert cli.main(SWEEP + ["--out", str(out)]) == 0  # and a sweep into it simply starts
    assert len(results.load(out)) == 2 * 5


def _raise(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize(
    "where, code, message",
    [
        ("parent-is-file", None, "cannot be created: "),
        ("access", errno.EACCES, "permission denied; choose a folder you can write to"),
        ("access-rofs", errno.EROFS, "it is on a read-only file system"),
        ("mkdir", errno.EROFS, "it is on a read-only file system"),
        ("mkdir", errno.EACCES, "permission denied"),
        ("write", errno.ENOSPC, "is full: free some space, then rerun the same command to resume"),
        ("write", errno.EROFS, "read-only file system"),
    ],
)
def test_unwritable_out_is_one_sentence(tmp_path, capsys, monkeypatch, where, code, message):
    out = tmp_path / "a" / "run"
    if where == "parent-is-file":
        (tmp_path / "a").write_text("x")
    elif where.startswith("access"):  # root passes permission checks: stand in for a read-only folder
        monkeypatch.setattr(os, "access", lambda *a, **k: False)
        monkeypatch.setattr(os, "statvfs", lambda p: type("S", (), {"f_flag": os.ST_RDONLY if code == errno.EROFS else 0})())
    elif where == "mkdir":
        monkeypatch.setattr("pathlib.Path.mkdir", _raise(code))
    elif where == "write":
        monkeypatch.setattr(results.pq, "write_table", _raise(code))
    assert cli.main(SWEEP + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    if where == "write":  # nothing half-written; with space again, the same command resumes
        assert results.parts(out) == [] and not [p for p in out.iterdir() if p.name.startswith(".")]
        monkeypatch.undo()
        assert cli.main(SWEEP + ["--out", str(out)]) == 0


@pytest.mark.parametrize("command", ["report", "figures"])
def test_report_and_figures_out_unwritable_is_one_sentence(run, tmp_path, capsys, command):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / ("r.html" if command == "report" else "figs")
    assert cli.main([command, str(run), "--out", str(target), "--no-png"][: 4 if command == "report" else 5]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "a part of that path is a file" in err


@pytest.mark.parametrize(
    "prepare, message",
    [
        (lambda out: (out / "notes.txt").write_text("mine"), "is not empty and holds no xtl run (it has 'notes.txt')"),
        (lambda out: (out / "_run.json").write_text(""), "_run.json' is empty: delete it"),
    ],
)
def test_out_is_checked_before_the_model_is_loaded(tmp_path, capsys, monkeypatch, prepare, message):
    out = tmp_path / "run"
    out.mkdir()
    prepare(out)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(xtl.model, "load_model", no_loading)
    assert cli.main(SWEEP + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
