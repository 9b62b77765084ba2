"""``gradtx.minimize(method="lbfgs")`` against ``scipy.optimize.minimize(method="L-BFGS-B")``.

Both run with scipy's default stopping rules (``gtol=1e-5``, ``ftol=2.2e-9``, m = 10) in float64
on convex problems (an ill-conditioned quadratic, L2-regularized logistic regression) and the
non-convex Rosenbrock function in 10, 30 and 100 dimensions from (-1.2, 1, -1.2, 1, ...).
SciPy gets the objective and gradient two ways: a jitted ``jax.value_and_grad`` (what a JAX user
passes) and a hand-written NumPy function (SciPy at its fastest). Reported: iterations,
evaluations of ``f`` with its gradient, the final ``f``, the median wall time of ``--repeats``
solves (compilation excluded; gradtx's one-time compile is its own column), and the ratio of
gradtx's time to SciPy's best.

    python benchmarks/minimize_vs_scipy.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize  # noqa: E402

import gradtx  # noqa: E402


def quadratic_problem(n: int = 100, condition: float = 1e4):
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = q @ np.diag(np.geomspace(1.0, condition, n)) @ q.T
    b = rng.normal(size=n)
    a_jax, b_jax = jnp.asarray(a), jnp.asarray(b)

    def jax_fun(x):
        return 0.5 * x @ a_jax @ x - b_jax @ x

    def numpy_fun(x):
        ax = a @ x
        return 0.5 * x @ ax - b @ x, ax - b

    return jax_fun, numpy_fun, np.zeros(n)


def logistic_problem(samples: int = 1000, dim: int = 50, l2: float = 1e-3):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(samples, dim)) * rng.uniform(0.2, 3.0, size=dim)
    labels = (features @ rng.normal(size=dim) + rng.normal(size=samples) > 0).astype(np.float64)
    f_jax, y_jax = jnp.asarray(features), jnp.asarray(labels)

    def jax_fun(w):
        z = f_jax @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - y_jax * z) + 0.5 * l2 * w @ w

    def numpy_fun(w):
        z = features @ w
        value = np.mean(np.logaddexp(0.0, z) - labels * z) + 0.5 * l2 * w @ w
        gradient = features.T @ (scipy.special.expit(z) - labels) / samples + l2 * w
        return value, gradient

    return jax_fun, numpy_fun, np.zeros(dim)


def rosenbrock_problem(n: int):
    def jax_fun(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    def numpy_fun(x):
        d = x[1:] - x[:-1] ** 2
        value = np.sum(100.0 * d**2 + (1 - x[:-1]) ** 2)
        gradient = np.zeros_like(x)
        gradient[:-1] = -400.0 * x[:-1] * d - 2 * (1 - x[:-1])
        gradient[1:] += 200.0 * d
        return value, gradient

    return jax_fun, numpy_fun, np.tile([-1.2, 1.0], n // 2)


def median_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compare(name: str, jax_fun, numpy_fun, x0: np.ndarray, repeats: int) -> list[str]:
    x0_jax = jnp.asarray(x0)
    start = time.perf_counter()
    solve = jax.jit(lambda x: gradtx.minimize(jax_fun, x)).lower(x0_jax).compile()
    compile_seconds = time.perf_counter() - start
    result = solve(x0_jax)
    gradtx_time = median_time(lambda: jax.block_until_ready(solve(x0_jax)), repeats)

    value_and_grad = jax.jit(jax.value_and_grad(jax_fun))
    value_and_grad(x0_jax)  # compile outside the timing

    def jax_for_scipy(x):
        value, gradient = value_and_grad(x)
        return float(value), np.asarray(gradient)

    def scipy_solve(fun):
        return scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B")

    reference = scipy_solve(numpy_fun)
    scipy_jax_time = median_time(lambda: scipy_solve(jax_for_scipy), repeats)
    scipy_numpy_time = median_time(lambda: scipy_solve(numpy_fun), repeats)
    best = min(scipy_jax_time, scipy_numpy_time)
    status = gradtx.SolverStatus(int(result.status)).name
    return [
        name,
        str(x0.size),
        f"{int(result.nit)} / {reference.nit}",
        f"{int(result.nfev)} / {reference.nfev}",
        f"{float(result.fun):.3g} / {reference.fun:.3g}",
        f"{1e3 * gradtx_time:.2f}",
        f"{1e3 * scipy_jax_time:.2f}",
        f"{1e3 * scipy_numpy_time:.2f}",
        f"{gradtx_time / best:.2f}",
        f"{compile_seconds:.2f}",
        status,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed solves per entry (median)")
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, JAX {jax.__version__} "
        f"({jax.default_backend()}), SciPy {scipy.__version__}, float64\n"
    )
    problems = {
        "quadratic (kappa 1e4)": quadratic_problem(),
        "logistic regression": logistic_problem(),
        "Rosenbrock": rosenbrock_problem(10),
        "Rosenbrock ": rosenbrock_problem(30),
        "Rosenbrock  ": rosenbrock_problem(100),
    }
    header = [
        "problem", "n", "iterations (gradtx / SciPy)", "f evaluations", "final f", "gradtx ms",
        "SciPy + jitted JAX ms", "SciPy + NumPy ms", "gradtx / best SciPy", "gradtx compile s", "gradtx status",
    ]  # fmt: skip
    rows = [compare(name.strip(), *problem, repeats=args.repeats) for name, problem in problems.items()]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
