"""Shared fixtures. The data, checkpoints and oracle live in ../shared beside the
repository (XTL_SHARED overrides). They are always there in CI, so a missing
folder is an error, never a skip."""

from __future__ import annotations

import os
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
