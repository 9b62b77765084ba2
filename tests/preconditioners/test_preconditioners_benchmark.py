"""The preconditioner benchmark's report computes the ratios it prints (synthetic curves and times).

The benchmark itself is a script (``benchmarks/preconditioners.py``; its timings are never asserted).
"""

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
try:
    import preconditioners as bench
finally:
    sys.path.pop(0)


def test_steps_to_target_uses_a_trailing_mean_of_a_tenth_of_the_steps():
    losses = np.linspace(2.0, 1.0, 100)  # window 10: trailing mean ending at step s is 2 - (s - 5.5)/99
    assert bench.final_loss(losses) == np.mean(losses[-10:])
    assert bench.steps_to_target(losses, bench.final_loss(losses)) == 100
    assert bench.steps_to_target(losses, 1.5) == 55  # the first window whose mean is <= 1.5 ends at step 55
    assert bench.steps_to_target(losses, 0.5) is None


def test_summary_rows_give_ratios_to_tuned_adamw():
    steps = 100
    adamw = np.linspace(2.0, 1.0, steps)
    faster = np.concatenate([np.linspace(2.0, 1.0, 50), np.full(50, 0.9)])
    never = np.full(steps, 1.8)
    result = {
        "name": "synthetic",
        "steps": steps,
        "num_params": 1000,
        "curves": {"AdamW": {1e-3: adamw}, "Shampoo": {3e-3: faster}, "SOAP": {1e-3: never}},
        "best": {"AdamW": 1e-3, "Shampoo": 3e-3, "SOAP": 1e-3},
        "target": bench.final_loss(adamw),
        "memory": {"AdamW": 8.0, "Shampoo": 20.0, "SOAP": 30.0},
        "times": {"AdamW": np.full(5, 0.010), "Shampoo": np.full(5, 0.015), "SOAP": np.full(5, 0.020)},
    }
    rows = {row[0]: row for row in bench.summary_rows(result)}
    assert rows["AdamW"][3] == "100 (1.00x)" and rows["AdamW"][4] == "1.0 s (1.00x)"
    hit = bench.steps_to_target(faster, result["target"])
    assert rows["Shampoo"][3] == f"{hit} ({hit / 100:.2f}x)"
    assert rows["Shampoo"][4] == f"{hit * 0.015:.1f} s ({hit * 0.015 / 1.0:.2f}x)"
    assert rows["Shampoo"][5] == "15.0 (1.50x)" and rows["Shampoo"][6] == "20.0"
    assert rows["SOAP"][3].startswith("not reached")
    assert "synthetic" in bench.report([result])
