"""scripts/setup.sh: its optional browser step never stops the setup. The step runs
here as the script runs it (sourced, under `set -euo pipefail`), with an apt-get
that fails as a held lock makes it fail, and no browser on PATH."""

from __future__ import annotations

import shutil
import subprocess

from conftest import REPO

DRIVER = """
set -euo pipefail
source scripts/setup.sh --functions
started=$SECONDS
py="$STUB/python"
browser_step
finish
"""


def _stubs(tmp_path, *, apt_get: str) -> dict:
    stub = tmp_path / "bin"
    stub.mkdir()
    for tool in ("bash", "mktemp", "grep", "tail", "rm", "cat"):  # what the step uses, and no browser
        (stub / tool).symlink_to(shutil.which(tool))
    scripts = {
        "id": 'echo 0',  # root, so the step tries apt-get
        "apt-get": apt_get,
        "python": 'echo "torch 2.13.0 CPU-only"',
    }
    for name, body in scripts.items():
        (stub / name).write_text(f"#!{shutil.which('bash')}\n{body}\n")
        (stub / name).chmod(0o755)
    return {"PATH": str(stub), "STUB": str(stub), "HOME": str(tmp_path)}


def _run(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([env["STUB"] + "/bash", "-c", DRIVER], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)


def test_setup_goes_on_when_apt_get_cannot_install_the_browser(tmp_path):
    locked = "echo 'E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)' >&2; exit 100"
    result = _run(_stubs(tmp_path, apt_get=locked))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    skipped = next(line for line in lines if line.startswith("setup: [4/4] skipped"))
    assert "apt-get could not install chromium" in skipped and "Could not get lock" in skipped
    assert "everything but PNG export works" in skipped
    assert lines[-2].startswith("setup: done in ") and "(skipped: the browser for PNG export)" in lines[-2]


def test_setup_installs_the_browser_when_apt_get_works(tmp_path):
    result = _run(_stubs(tmp_path, apt_get="exit 0"))
    assert result.returncode == 0, result.stderr
    assert "setup: [4/4] chromium installed" in result.stderr
    assert "skipped" not in result.stderr and "setup: done in " in result.stderr


def test_setup_without_root_says_what_to_install_and_finishes(tmp_path):
    env = _stubs(tmp_path, apt_get="exit 0")
    (tmp_path / "bin" / "id").write_text(f"#!{shutil.which('bash')}\necho 1000\n")
    result = _run(env)
    assert result.returncode == 0, result.stderr
    assert "skipped: no Chrome or Chromium found" in result.stderr and "sudo apt-get install chromium" in result.stderr
    assert "setup: done in " in result.stderr

