"""The benchmark reports compute the ratios they print, on CPU runs and on GPU-shaped runs.

The benchmarks themselves are scripts (their timings are never asserted); these tests feed the
report functions synthetic times whose ratios are known, including a run without the CPU-only
chunked variant, as a GPU run produces.
"""

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    import step_time
finally:
    sys.path.pop(0)

SIZE = 1_000_000


def synthetic_result(with_chunked: bool) -> dict:
    rounds = 5
    base = np.linspace(0.010, 0.012, rounds)  # gradtx fused: 10-12 ms
    times = {
        "gradtx fused": base,
        "gradtx fused, tree grads": 1.5 * base,
        "gradtx default": 1.1 * base,
        "Optax": 4.0 * base,
        "Optax, donated": 1.25 * base,
        "torch foreach": 3.0 * base,
        "torch fused": 0.5 * base,
        # The floor: 28 bytes per parameter at the streaming kernel's 12 bytes per element.
        "stream (JAX)": 0.7 * base * 12 / 28,
        "stream (torch)": 0.8 * base * 12 / 28,
    }
    if with_chunked:
        times["gradtx fused, chunked"] = 0.9 * base
    return {"big tree": {"Adam": {"times": times, "size": SIZE, "bytes": 28}}}


def test_headline_ratios_are_gradtx_over_each_peer(monkeypatch):
    monkeypatch.setattr(step_time, "peak_bandwidth", lambda: None)
    table = step_time.headline(synthetic_result(with_chunked=True))
    row = next(line for line in table.splitlines() if line.startswith("| big tree"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == f"{1e3 * np.median(np.linspace(0.010, 0.012, 5)):.1f}"
    assert cells[3:6] == ["0.25x", "0.80x", "2.00x"]  # over Optax, donated Optax, torch fused
    # The chunked variant is the faster gradtx here: 0.7 / 0.9 of the floor fraction.
    assert cells[6] == "78% (chunked)"


def test_gpu_shaped_run_without_chunked_variant_reports_peak_fraction(monkeypatch):
    monkeypatch.setattr(step_time, "peak_bandwidth", lambda: 3350.0)
    results = synthetic_result(with_chunked=False)
    table = step_time.headline(results)
    row = next(line for line in table.splitlines() if line.startswith("| big tree"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    gbs = 28 * SIZE / np.median(np.linspace(0.010, 0.012, 5)) / 1e9
    assert cells[2] == f"{gbs:.0f} ({100 * gbs / 3350:.0f}% of peak)"
    assert cells[6] == "70%"
    full = step_time.report(results)
    assert "gradtx fused, chunked | " in full and "n/a" in full


def test_default_path_benchmark_smoke_run():
    # Tiny trees, one round: every optimizer compiles and steps in both libraries and the report
    # is complete. Timings are printed, never asserted.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import default_path
    finally:
        sys.path.pop(0)
    section = default_path.main(["--smoke"])
    for name in default_path.OPTIMIZERS:
        assert section.count(f"| {name} |") == len(default_path.SMOKE_TREES), name
    for variant in default_path.TRAIN_VARIANTS:
        assert f"| {variant} |" in section
    assert "Training step compile at 3 leaves" in section
    text = default_path.replace_between_markers("# Results\n", "body one")
    assert text.count(default_path.BEGIN) == 1 and "body one" in text
    assert default_path.replace_between_markers(text, "body two").count("body") == 1
