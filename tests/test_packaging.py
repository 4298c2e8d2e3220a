"""The wheel: built from this tree (no network, no build isolation), it is the
distribution `xtransplant` holding the import package `xtl`, the `xtl` command,
the demo data and py.typed, and nothing of the repository around it. A wheel
built with `python -m build` and installed into a fresh virtual environment ran
`xtl demo` (recorded in benchmarks/results/2026-12-07-cpu-wheel-install.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from conftest import REPO


def test_the_wheel_is_xtransplant_with_the_xtl_package_and_command(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "runs", "xtl-demo", "__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name.startswith("xtransplant-")
    names = zipfile.ZipFile(wheel).namelist()
    info = next(n for n in names if n.endswith(".dist-info/METADATA")).rsplit("/", 1)[0]
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "\nName: xtransplant\n" in metadata and "Provides-Extra: ray" in metadata
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "xtl = xtl.cli:main" in entry_points
    top_level = {name.split("/")[0] for name in names if not name.startswith(info)}
    assert top_level == {"xtl"}, top_level
    for needed in ("xtl/cli.py", "xtl/checkpoints.py", "xtl/py.typed", "xtl/demo_data/facts-demo.jsonl", "xtl/commands/demo.py"):
        assert needed in names, needed
