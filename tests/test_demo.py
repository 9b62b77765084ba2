"""``python -m gradtx.demo``: a tiny run prints the table and writes the PNG; flags and errors."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from gradtx import demo

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_demo(*args: str) -> subprocess.CompletedProcess:
    # A subprocess, as a user runs it (and without the float64 mode of tests/conftest.py).
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "gradtx.demo", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_tiny_run_prints_the_table_and_writes_the_png(tmp_path):
    out = tmp_path / "figures" / "demo.png"
    result = run_demo("--optimizers", "adam,lbfgs", "--steps", "4", "--second-order-steps", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("optimizer"))
    assert lines[header].split() == ["optimizer", "model", "train", "loss", "test", "acc", "compile", "s", "run", "s"]
    rows = {line.split()[0]: line.split() for line in lines[header + 1 : header + 3]}
    assert list(rows) == ["adam", "lbfgs"]
    assert [row[1] for row in rows.values()] == ["MLP", "logreg"]
    for row in rows.values():
        loss, accuracy, compile_s, run_s = map(float, row[2:])
        assert 0 <= loss < 10  # finite; after 4 steps batch norm's running averages still lag
        assert 0.05 < accuracy <= 1 and compile_s >= 0 and run_s >= 0
    assert float(rows["lbfgs"][2]) < 1.5  # two L-BFGS iterations already cut the loss from log(10)
    assert "s CPU" in lines[-1] and str(out) in lines[-1]
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000  # five panels, not an empty canvas
    assert "gradtx demo" in result.stderr  # the progress bar


def test_bad_flag_gets_a_one_line_error():
    result = run_demo("--no-such-flag")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "unrecognized arguments: --no-such-flag" in result.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--optimizers", "sgd,adamm"], "unknown optimizer(s) adamm"),
        (["--steps", "0"], "must be positive"),
        (["--steps", "many"], "invalid int value"),
        (["--out", "figure.pdf"], ".png"),
        (["--optimizers", ","], "empty"),
    ],
)
def test_invalid_values_get_a_one_line_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("python -m gradtx.demo: error:")


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--optimizers", "--steps", "--second-order-steps", "--out", "--seed"):
        assert flag in text
    assert "lbfgs" in text and "sign_sgd" in text


def test_defaults_cover_every_first_order_named_optimizer_and_one_second_order_method():
    import gradtx

    named = {"sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam", "amsgrad", "rprop",
             "sign_sgd"}
    assert named <= set(demo.FIRST_ORDER) and all(hasattr(gradtx, name) for name in named)
    args = demo.parse_args([])
    assert args.optimizers == [*demo.FIRST_ORDER, "lbfgs"] and args.steps == 300
