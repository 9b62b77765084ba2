"""The contrib benchmark's report: ratios to tuned AdamW and the parameter-free verdicts, on synthetic numbers."""

import math
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    import contrib_workloads
finally:
    sys.path.pop(0)


def cells(table: str, name: str) -> list[str]:
    row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_table_ratios_and_parameter_free_verdicts():
    adamw = {"name": "adamw (tuned)", "lr": "0.003", "train": 0.5, "held_out": 0.6}
    rows = [
        {"name": "prodigy", "lr": "none", "train": 0.54, "held_out": 0.7},  # 1.08x: pass
        {"name": "dog", "lr": "none", "train": 0.56, "held_out": 0.7},  # 1.12x: fail
        {"name": "cocob", "lr": "none", "train": math.nan, "held_out": math.nan},  # diverged: fail
        {"name": "muon", "lr": "0.02", "train": 0.9, "held_out": 1.0},  # not parameter-free: no verdict
    ]
    table = contrib_workloads.report_table(rows, adamw)
    assert cells(table, "adamw (tuned)")[4:] == ["1.00x", ""]
    assert cells(table, "prodigy")[2:] == ["0.5400", "0.7000", "1.08x", "pass"]
    assert cells(table, "dog")[4:] == ["1.12x", "FAIL"]
    assert cells(table, "cocob")[2:] == ["diverged", "diverged", "n/a", "FAIL"]
    assert cells(table, "muon")[4:] == ["1.80x", ""]


def test_final_loss_is_the_seed_mean_of_the_last_tenth_of_the_counted_steps():
    losses = np.stack([np.arange(20.0), 2 * np.arange(20.0)])  # 2 seeds, 20 steps: last tenth = steps 18, 19
    assert contrib_workloads.final_loss(losses) == np.mean([18, 19, 36, 38])
    even = np.arange(0, 20, 2)  # 10 counted steps: the last tenth is step 18
    assert contrib_workloads.final_loss(losses, even) == np.mean([18, 36])
