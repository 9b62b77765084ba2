"""The code base stays ruff-clean (configuration in pyproject.toml)."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ruff_clean():
    command = [shutil.which("ruff")] if shutil.which("ruff") else [sys.executable, "-m", "ruff"]
    try:
        paths = [p for p in ("gradtx", "tests", "benchmarks", "examples") if (ROOT / p).exists()]
        result = subprocess.run([*command, "check", *paths], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        pytest.fail("ruff is not installed; it is part of the test extra")
    assert result.returncode == 0, result.stdout + result.stderr
