"""Studies and sweeps on a real local Ray cluster (CPU, 2 workers, tiny checkpoints):
the rows equal a single-process run, and a worker killed mid-study still
leaves every row exactly once. The scheduling of shards (which actor takes
which, whose failure is reported) on a fake of the few `ray` calls it makes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import xtl
from xtl import cli, distributed, results
from xtl.errors import XtlError
from xtl.options import LoadOptions
from xtl.study import Job, ModelSpec, plan, study, study_from_dict

from conftest import DATA_DIR, MODELS_DIR, REPO

import ray  # noqa: E402 (installed by the test command: never skipped)


def grid(out, **changes):
    return {
        "out": str(out),
        "data_dir": str(DATA_DIR),
        "benchmarks": ["xcopa"],
        "languages": ["sw", "th"],
        "sites": ["ffn", "attn-paper"],
        "limit": 3,
        "max_batch_rows": 8,
        "models": [
            {"model": str(MODELS_DIR / "tiny-llama"), "layers": "0,3"},
            {"model": str(MODELS_DIR / "tiny-qwen2"), "layers": "all"},
        ],
        **changes,
    }


def table(frame):
    frame = frame.astype(object).where(frame.notna(), None)
    return sorted(
        (r.model, r.benchmark, r.instance_id, r.site or "", r.source_layer or -1, r.target_layer or -1, tuple(r.token_ids), r.text, r.correct)
        for r in frame.itertuples()
    )


@pytest.fixture(scope="module")
def cluster():
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}},
    )  # fmt: skip
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "study"
    return table(study(grid(out), progress=False, report=False))


def test_a_study_on_ray_equals_the_single_process_study(cluster, local_rows, tmp_path):
    out = tmp_path / "study"
    frame = study(grid(out), ray=True, progress=False)
    assert table(frame) == local_rows
    assert len(frame) == 6 * (1 + 2 * 4) + 6 * (1 + 2 * 16)
    assert (out / "_report.html").is_file()
    writers = {p.name.rsplit("-", 1)[0] for p in out.glob("*/*/part-*.parquet")}
    assert len(writers) == 2  # both workers wrote, one writer id each


def test_a_worker_killed_mid_study_leaves_every_row_once(cluster, local_rows, tmp_path):
    out = tmp_path / "study"
    jobs = plan(study_from_dict(grid(out)))
    killed = []

    def kill_one(actors):
        pid = ray.get(actors[0].pid.remote())

        def when_rows_appear():
            deadline = time.time() + 120
            while time.time() < deadline and not list(out.glob("*/*/part-*.parquet")):
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        threading.Thread(target=when_rows_appear, daemon=True).start()

    rows = []
    distributed.run_jobs(jobs, on_rows=rows.append, on_start=kill_one)
    assert killed
    frames = [results.load(job.out) for job in jobs]
    frame = xtl.report.load_results([job.out for job in jobs])
    assert table(frame) == local_rows  # nothing lost, nothing twice
    assert sum(len(f) for f in frames) == len(local_rows)


def test_sweep_command_on_ray(cluster, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["sweep", "--model", str(MODELS_DIR / "tiny-mistral"), "--benchmark", "xnli", "--lang", "sw", "--limit", "4",
            "--data-dir", str(DATA_DIR), "--layers", "1,2", "--site", "attn", "--out", str(out), "--quiet", "--ray"]  # fmt: skip
    assert cli.main(argv) == 0
    frame = results.load(out)
    items = xtl.datasets.load("xnli", "sw", data_dir=DATA_DIR)[:4]
    here = xtl.sweep(xtl.load_model(MODELS_DIR / "tiny-mistral"), items, sites=["attn"], configs="1,2", progress=False)
    assert table(frame) == table(here) and len(frame) == 4 * 5


def test_sweep_command_on_ray_loads_the_model_with_n_ctx(cluster, tmp_path, capsys):
    """--n-ctx reaches the workers: a context too small for the prompts is refused there, in one sentence."""
    argv = ["sweep", "--model", str(MODELS_DIR / "tiny-mistral"), "--benchmark", "xnli", "--lang", "sw", "--limit", "1",
            "--data-dir", str(DATA_DIR), "--layers", "1", "--n-ctx", "16", "--out", str(tmp_path / "run"), "--quiet", "--ray"]  # fmt: skip
    assert cli.main(argv) == 2
    assert "more than the context of 16 tokens this model was loaded with" in capsys.readouterr().err


def test_ray_missing_is_one_sentence(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(XtlError, match=r"needs Ray, which is not installed: run `pip install 'xtransplant\[ray\]'`"):
        distributed.require_ray()
    argv = ["sweep", "--model", str(MODELS_DIR / "tiny-mistral"), "--benchmark", "xnli", "--lang", "sw",
            "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "run"), "--ray"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'xtransplant[ray]'" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


class FakeRay:
    """The `ray` calls of `distributed._Schedule`: a ref is ready as soon as it is made (the
    oldest running one first), and resolves to its outcome; a shard swept into `failing_out`
    fails as a worker that died on every retry does (a `RayError`)."""

    exceptions = ray.exceptions

    class Ref:  # one object per call, as Ray's refs are (equal outcomes are distinct refs)
        def __init__(self, outcome):
            self.outcome = outcome

    def __init__(self, n_actors: int, failing_out: str | None = None):
        self.failing_out, self.swept, self.rows = failing_out, [], 0
        self.actors = [SimpleNamespace(sweep=SimpleNamespace(remote=self.sweeper(k))) for k in range(n_actors)]
        self.progress = SimpleNamespace(total=SimpleNamespace(remote=lambda: FakeRay.Ref(self.rows)))

    def sweeper(self, k: int):
        def sweep(load, instances, out, options, progress):
            self.swept.append((k, load.model, out))
            self.rows += len(instances)
            return FakeRay.Ref(ray.exceptions.RayError() if out == self.failing_out else ("done", None))

        return sweep

    def wait(self, refs, num_returns, timeout):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if isinstance(ref.outcome, Exception):
            raise ref.outcome
        return ref.outcome


def fake_job(model: str, out: str, n: int = 1) -> Job:
    return Job(ModelSpec(LoadOptions(model)), tuple(range(n)), Path(out), "xnli", "sample", ("sw",))


def test_a_failing_shard_names_its_own_job_not_the_first_of_its_model():
    first, second = fake_job("m", "runs/first-run", n=3), fake_job("m", "runs/second-run", n=3)
    fake = FakeRay(2, failing_out=str(second.out))
    with pytest.raises(XtlError) as failure:
        distributed._Schedule(fake, [first, second], fake.actors, fake.progress).run(on_rows=None)
    message = str(failure.value)
    assert "a Ray worker sweeping m into 'runs/second-run' failed 5 times (RayError;" in message
    assert "first-run" not in message
    assert [out for _, _, out in fake.swept][:3] == ["runs/first-run"] * 3  # the first job's shards went first, and passed


def test_a_free_worker_takes_a_shard_of_the_model_it_holds_and_every_row_is_reported():
    jobs = [fake_job("a", "runs/a1"), fake_job("b", "runs/b1"), fake_job("b", "runs/b2"), fake_job("a", "runs/a2")]
    fake = FakeRay(2)
    rows = []
    distributed._Schedule(fake, jobs, fake.actors, fake.progress).run(on_rows=rows.append)
    # worker 0 holds a and is free first: it skips b2 for a2, the next shard of a
    assert fake.swept == [(0, "a", "runs/a1"), (1, "b", "runs/b1"), (0, "a", "runs/a2"), (1, "b", "runs/b2")]
    assert sum(rows) == 4
