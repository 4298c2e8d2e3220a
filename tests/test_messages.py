"""First-day messages (issue 22): the training run of another benchmark named as such,
Ray's native warnings kept off the terminal, the demo facts listed by `xtl benchmarks`,
a resumed sweep saying how much is stored, `xtl transplant --json` with the confidence
signals, the thread choice, and the help texts that say what the shell needs."""

from __future__ import annotations

import json
import os

from xtl.testing import tables as h
import pytest

from xtl import checks, cli, distributed, selection
from xtl.errors import XtlError

from conftest import DATA_DIR, MODELS_DIR

MODEL = MODELS_DIR / "tiny-qwen2"


def test_a_training_run_of_another_benchmark_is_named_as_such():
    correct = {(0, 0): {0}, (0, 1): set(), (1, 0): {1}, (1, 1): set()}
    evaluated = h.table(h.group(n=2, vanilla=set(), correct=correct, benchmark="xnli", split="unseen"))
    other = h.table(h.group(n=2, vanilla=set(), correct=correct, benchmark="xcopa", split="sample"))
    with pytest.raises(XtlError, match=r"the training run is another benchmark \(xcopa; the evaluated run: xnli\)"):
        selection.evaluate(evaluated, train=other)
    other_model = h.table(h.group(n=2, vanilla=set(), correct=correct, model="tiny-llama", split="sample"))
    with pytest.raises(XtlError, match="the training run is another model"):
        selection.evaluate(evaluated, train=other_model)


def test_native_stderr_goes_to_the_log_while_ray_connects(tmp_path, capfd):
    log = tmp_path / "ray.log"
    with distributed.native_stderr_to(str(log)):
        os.write(2, b"[W rpc_client.h:153] Failed to connect to GCS\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    assert "Failed to connect to GCS" in log.read_text()


def test_xtl_benchmarks_lists_the_shipped_facts(capsys):
    assert cli.main(["benchmarks", "--data-dir", str(DATA_DIR)]) == 0
    out = capsys.readouterr().out
    assert "facts            demo        48  de:12 es:12 fr:12 it:12" in out and "facts: shipped with xtl" in out


def test_a_resumed_sweep_says_how_many_rows_are_stored(tmp_path, capsys):
    def argv(limit: int) -> list[str]:
        return ["sweep", "--model", str(MODEL), "--benchmark", "facts", "--lang", "fr", "--split", "demo",
                "--limit", str(limit), "--layers", "0,1", "--max-new-tokens", "2", "--out", str(tmp_path / "run"),
                "--quiet"]  # fmt: skip

    assert cli.main(argv(1)) == 0
    assert "resuming" not in capsys.readouterr().err
    assert cli.main(argv(2)) == 0  # one more instance: 1 x (1 + 4) of 2 x (1 + 4) rows stored
    assert "resuming: 5 of 10 rows already stored in" in capsys.readouterr().err


def test_transplant_json_carries_the_confidence_signals(capsys):
    argv = ["transplant", "--model", str(MODEL), "--source", "Hello", "--target", "Habari", "--source-layer", "0",
            "--target-layer", "1", "--max-new-tokens", "3", "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    answer = json.loads(capsys.readouterr().out)
    for side in ("vanilla", "transplant"):
        assert set(selection.SIGNALS) <= set(answer[side])
        assert answer[side]["first_entropy"] >= 0 and answer[side]["mean_logprob"] <= 0


def test_the_thread_default_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert checks.default_threads() == 2  # idle
    monkeypatch.setattr(os, "getloadavg", lambda: (4.9, 0.0, 0.0))
    assert checks.default_threads() == 1  # busy: never fewer than one
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert checks.default_threads() == 3
    with pytest.raises(XtlError, match="--threads must be a whole number of at least 1, not 0"):
        checks.check_threads(0)


def test_help_says_selectors_with_parentheses_need_quotes_and_how_gold_goes_with_a_scorer(capsys):
    for command in ("select", "sweep"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # as argparse wrapped it
    assert "--selector 'fixed(3,5)'" in text and "gold together with its scorer" in text
