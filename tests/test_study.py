"""Studies: a grid of sweeps into one study directory, resumed on rerun, a dry
run that loads no model, the paper's PilotSet study file, and one sentence for
a wrong study file."""

from __future__ import annotations

import subprocess
import sys

import pytest

import xtl
from xtl import cli, datasets, results
from xtl.errors import XtlError
from xtl.study import plan, read_study, study, study_from_dict

from conftest import DATA_DIR, MODELS_DIR, REPO

TOML = """
out = "{out}"
data_dir = "{data}"
benchmarks = ["xnli", "xcopa"]
languages = {{xnli = ["sw"], xcopa = ["sw", "th"]}}
sites = ["ffn", "attn-paper"]
limit = 2

[[models]]
model = "{models}/tiny-llama"
layers = "0,3"

[[models]]
model = "{models}/tiny-qwen2"
dtype = "float64"
layers = "1:2"
name = "qwen"
"""


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(TOML.format(out=tmp_path / "out", data=DATA_DIR, models=MODELS_DIR))
    return path


def test_a_study_runs_its_grid_into_one_run_directory_per_sweep_and_resumes(study_file, tmp_path, capsys):
    assert cli.main(["study", str(study_file), "--quiet"]) == 0
    out = tmp_path / "out"
    runs = sorted(str(p.relative_to(out)) for p in out.glob("*/*") if (p / "_run.json").is_file())
    assert runs == ["qwen/xcopa-sample", "qwen/xnli-sample", "tiny-llama/xcopa-sample", "tiny-llama/xnli-sample"]
    assert (out / "_report.html").is_file()
    llama = results.load(out / "tiny-llama" / "xcopa-sample")
    assert len(llama) == 4 * (1 + 2 * 4) and set(llama.lang) == {"sw", "th"}
    qwen = results.load(out / "qwen" / "xnli-sample")
    assert len(qwen) == 2 * (1 + 2 * 1) and set(qwen.dtype) == {"float64"}
    # the rows are those of a plain sweep of the same model and instances
    items = datasets.load("xnli", "sw", data_dir=DATA_DIR)[:2]
    model = xtl.load_model(MODELS_DIR / "tiny-qwen2", dtype="float64")
    plain = xtl.sweep(model, items, sites=["ffn", "attn-paper"], configs="1:2", progress=False)
    key = ["instance_id", "site", "source_layer", "target_layer"]
    assert qwen.sort_values(key)[["text", "correct"]].values.tolist() == plain.sort_values(key)[["text", "correct"]].values.tolist()
    # a rerun resumes: a removed part is recomputed, nothing else is
    removed = results.parts(out / "tiny-llama" / "xcopa-sample")[0]
    removed.unlink()
    before = {p.name for p in out.glob("*/*/part-*.parquet")}
    capsys.readouterr()
    assert cli.main(["study", str(study_file), "--quiet"]) == 0
    after = {p.name for p in out.glob("*/*/part-*.parquet")}
    new = after - before
    assert before <= after and all(
        (out / "tiny-llama" / "xcopa-sample" / name).is_file() for name in new
    ) and new  # fmt: skip
    again = results.load(out / "tiny-llama" / "xcopa-sample")
    def texts(frame):
        return sorted(tuple(map(str, r)) for r in frame[key + ["text"]].itertuples(index=False))

    assert texts(again) == texts(llama)
    assert "72 rows in 4 runs" in capsys.readouterr().out
    frame = xtl.report.load_results([p for p in out.glob("*/*") if p.is_dir()])
    assert len(frame) == 4 * 9 + 2 * 9 + 4 * 3 + 2 * 3


def test_dry_run_prints_the_plan_without_loading_a_model(study_file, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("a dry run loaded a model")

    monkeypatch.setattr(xtl.model, "load_model", no_loading)
    assert cli.main(["study", str(study_file), "--dry-run", "--gpus", "2"]) == 0
    text = capsys.readouterr().out
    assert "4 sweeps" in text
    assert "model tiny-llama:" in text and "LlamaForCausalLM, 4 layers" in text
    assert "xcopa/sample: 4 instances, 2 languages x 2 sites x 4 configurations = 36 rows" in text
    assert "xnli/sample: 2 instances, 1 languages x 2 sites x 1 configurations = 6 rows" in text
    assert "on 2 GPUs" in text
    assert not (study_file.parent / "out").exists()


def test_dry_run_imports_no_torch(study_file):
    """The plan reads config.json files only: a dry run in a fresh process imports neither torch nor transformers."""
    code = (
        "import sys, xtl; print(xtl.study(sys.argv[1], dry_run=True)); "
        "print([m for m in ('torch', 'transformers', 'transformer_lens') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code, str(study_file)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    *plan_text, imported = result.stdout.strip().splitlines()
    assert "4 sweeps" in plan_text[0] and "LlamaForCausalLM, 4 layers" in "\n".join(plan_text)
    assert imported == "[]"


def test_the_paper_pilot_study_dry_run(capsys, monkeypatch):
    monkeypatch.setenv("XTL_DATA_DIR", str(DATA_DIR))
    paper = REPO / "studies" / "paper-pilot.toml"
    the_study = read_study(paper)
    assert the_study.options.sites == ("ffn", "attn-paper") and the_study.splits == ("sample",)
    assert len(the_study.models) == 5 and set(the_study.benchmarks) == {"xnli", "xquad", "xcopa", "globalopinionqa"}
    jobs = plan(the_study)
    # every language of every benchmark, English included: the public code's pooled PilotSets
    assert {job.benchmark: len(job.instances) for job in jobs[:4]} == {"xnli": 750, "xquad": 600, "xcopa": 550, "globalopinionqa": 1200}
    assert cli.main(["study", str(paper), "--dry-run", "--gpus", "8"]) == 0
    text = capsys.readouterr().out
    assert "20 sweeps" in text and "BloomForCausalLM, 30 layers" in text and "Qwen2ForCausalLM, 28 layers" in text and "2 sites x 784 configurations" in text
    assert "estimated time: ~" in text and "on 8 GPUs" in text
    # scoring mode forces the options once: max_new_tokens, unused there, does not change the estimate
    import dataclasses

    from xtl.estimates import describe

    def scoring(tokens: int) -> str:
        options = dataclasses.replace(the_study.options, mode="score", max_new_tokens=tokens)
        return describe(dataclasses.replace(the_study, options=options), [dataclasses.replace(j, options=options) for j in jobs])

    assert scoring(5) == scoring(50) and scoring(5).splitlines()[-1] != text.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "text, message",
    [
        ("out = 'x'\nbenchmarks = ['xnli']\n", "has no 'models'"),
        ("out = 'x'\nbenchmarks = ['xnli']\nmodelz = 1\n[[models]]\nmodel = 'm'\n", "unknown key 'modelz'"),
        ("out = 'x'\nbenchmarks = ['xnli']\n[[models]]\npath = 'm'\n", "needs model ="),
        ("out = 'x'\nbenchmarks = ['xnli']\nsites = ['mlp']\n[[models]]\nmodel = 'm'\n", "bad.toml: unknown site 'mlp'"),
        ("out = 'x'\nbenchmarks = [xnli\n", "is not valid TOML"),
        ("out = 'x'\nbenchmarks = ['xnli']\nlimit = 0\n[[models]]\nmodel = 'm'\n", "limit must be a whole number"),
        ("out = 'x'\nbenchmarks = ['xnli']\n[[models]]\nmodel = 'm'\nn_ctx = 1\n", "bad.toml: [[models]] 'm': n_ctx must be a whole number of tokens"),
        ("out = 'x'\nbenchmarks = ['xnli']\nmax_new_tokens = 0\n[[models]]\nmodel = 'm'\n", "bad.toml: max_new_tokens must be a positive"),
        ("out = 'x'\nbenchmarks = ['xnli']\nmode = 'scores'\n[[models]]\nmodel = 'm'\n",
         "bad.toml: unknown mode 'scores': the modes are generate, score."),
    ],
)
def test_a_wrong_study_file_is_one_sentence(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert cli.main(["study", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_model_entry_is_its_load_options_and_every_sweep_gets_the_study_options(tmp_path):
    from xtl.options import LoadOptions, SweepOptions

    grid = {
        "out": str(tmp_path / "s"), "data_dir": str(DATA_DIR), "benchmarks": ["xcopa"], "languages": ["sw"], "limit": 1,
        "sites": ["attn"], "max_new_tokens": 5, "models": [{"model": "m", "device": "cpu", "n_ctx": 64, "layers": "0:1"}],
    }  # fmt: skip
    (job,) = plan(study_from_dict(grid))
    assert job.model.load == LoadOptions("m", device="cpu", n_ctx=64)
    assert job.options == SweepOptions(sites=("attn",), configs="0:1", max_new_tokens=5)


def test_study_from_python_with_a_dict(tmp_path, capsys):
    grid = {
        "out": str(tmp_path / "s"), "data_dir": str(DATA_DIR), "benchmarks": ["xcopa"], "languages": ["sw"],
        "limit": 1, "models": [{"model": str(MODELS_DIR / "tiny-mistral"), "layers": "0:0"}],
    }  # fmt: skip
    frame = xtl.study(grid, progress=True)  # the function; xtl.study.plan etc. are there too
    assert len(frame) == 2 and set(frame.site.dropna()) == {"ffn"}
    bar = capsys.readouterr().err
    assert "study" in bar and "2/2" in bar and "configs/s" in bar  # one bar for the whole study
    assert "ffn" in study(grid, dry_run=True)
    with pytest.raises(XtlError, match="does not exist"):
        study(tmp_path / "missing.toml")


def test_plan_shapes_come_from_config_json(tmp_path):
    from xtl.estimates import model_shape
    from xtl.options import LoadOptions
    from xtl.study import ModelSpec

    bloom = tmp_path / "bloomz-7b1"
    bloom.mkdir()
    # bigscience/bloomz-7b1's config.json (the keys that count)
    (bloom / "config.json").write_text('{"architectures": ["BloomForCausalLM"], "hidden_size": 4096, "n_layer": 30, '
                                       '"n_head": 32, "vocab_size": 250880, "tie_word_embeddings": true}')  # fmt: skip
    shape = model_shape(ModelSpec(LoadOptions(str(bloom))))
    assert shape.n_layers == 30 and shape.source == "config.json"
    assert abs(shape.params - 7.07e9) / 7.07e9 < 0.01  # the published 7.07B
    qwen = model_shape(ModelSpec(LoadOptions(str(MODELS_DIR / "tiny-qwen2"))))
    model = xtl.load_model(MODELS_DIR / "tiny-qwen2")
    total = sum(p.numel() for p in model.parameters())
    assert qwen.n_layers == 4 and 0.98 * total < qwen.params <= total  # weight matrices; norms and biases left out
    assert model_shape(ModelSpec(LoadOptions("nobody/nothing"))) is None


def test_a_gpt_neox_plan_counts_an_mlp_without_a_gate(tmp_path):
    from xtl.estimates import model_shape
    from xtl.options import LoadOptions
    from xtl.study import ModelSpec

    pythia = tmp_path / "pythia-160m"
    pythia.mkdir()
    # EleutherAI/pythia-160m's config.json (the keys that count): up and down projections, no gate
    (pythia / "config.json").write_text('{"architectures": ["GPTNeoXForCausalLM"], "hidden_size": 768, '
                                        '"num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, '
                                        '"vocab_size": 50304, "tie_word_embeddings": false}')  # fmt: skip
    shape = model_shape(ModelSpec(LoadOptions(str(pythia))))
    assert shape.n_layers == 12 and abs(shape.params - 162_322_944) / 162_322_944 < 0.01  # the published 162.3M
