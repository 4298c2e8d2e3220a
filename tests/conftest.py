"""Shared fixtures. The data, checkpoints and oracle live in ../shared beside the
repository (XTL_SHARED overrides). They are always there in CI, so a missing
folder is an error, never a skip."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XTL_SHARED", REPO.parent / "shared")).resolve()
DATA_DIR = SHARED / "data" / "xtransplant"
MODELS_DIR = SHARED / "models"
ORACLE_DIR = SHARED / "oracle"
TINY_MODELS = ("tiny-llama", "tiny-mistral", "tiny-qwen2")

if not DATA_DIR.is_dir() or not MODELS_DIR.is_dir():
    raise RuntimeError(
        f"the shared test data was not found at {SHARED}: tests need ../shared "
        "(or XTL_SHARED) with data/xtransplant, models and oracle"
    )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS_DIR


@pytest.fixture(scope="session")
def oracle_dir() -> Path:
    return ORACLE_DIR


@pytest.fixture(scope="session")
def smollm2():
    """The embedded real model (SmolLM2-135M-Instruct, Q4_1 GGUF) in float32 on
    the CPU, loaded once per session. The test command installs it: never skipped."""
    import xtl

    return xtl.load_model("SmolLM2-135M-Instruct", dtype="float32", device="cpu")


# --- the oracle cases' prompts (used by the oracle, model, generation and CLI tests)


@lru_cache(maxsize=None)
def _lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def prompts_for(data_dir: Path, dataset: str, lang: str, index: int) -> tuple[str, str]:
    """(source, target) of an oracle case, exactly as ../shared/oracle/README.md lists them."""
    if dataset == "XNLI_sample":
        folder = data_dir / "XNLI/XNLI_sample/split"
        return _lines(folder / "en.json")[index], _lines(folder / f"{lang}.json")[index]
    if dataset == "XCOPA_sample":
        folder = data_dir / "XCOPA/XCOPA_sample"
        return _lines(folder / "en" / f"{lang}.json")[index], _lines(folder / "split" / f"{lang}.json")[index]
    if dataset == "XQuAD_sample":
        folder = data_dir / "XQuAD/XQuAD_sample/split"
        return _lines(folder / "xquad.en.json")[index], _lines(folder / f"xquad.{lang}.json")[index]
    if dataset == "GlobalOpinionQA_sample":
        folder = data_dir / "GlobalOpinionQA/GlobalOpinionQA_sample"
        return _lines(folder / "translated" / f"{lang}.json")[index], _lines(folder / "split" / f"{lang}.json")[index]["input_text"]
    raise ValueError(dataset)
