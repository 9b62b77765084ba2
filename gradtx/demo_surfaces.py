"""Two-dimensional test surfaces and optimizer paths on them, for the demo and the notebooks.

Three classic pictures of what an optimizer does (each a function ``f(w) -> scalar`` of ``w`` of
shape ``[2]``):

* a ravine, ``f(x, y) = x^2 / 20 + y^2``: condition number 20, so gradient descent zig-zags across
  the steep axis while it crawls along the shallow one;
* Rosenbrock's banana, ``f(x, y) = (1 - x)^2 + 100 (y - x^2)^2``: a curved valley with its minimum
  at ``(1, 1)``;
* a saddle, ``f(x, y) = x^2 / 2 - y^2 / 2 + y^4 / 4``: a saddle point at the origin between minima
  at ``(0, +-1)``; started almost on the ridge, plain gradient descent lingers before escaping.

``optimizer_paths`` runs every method on every surface in one compiled program per method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import adadelta, adagrad, adam, apply_updates, rmsprop, rprop, sgd
from gradtx.base import GradientTransformation


class Surface(NamedTuple):
    """A 2-D test function with where to start, where its minima are and what to plot."""

    name: str
    fn: Callable[[jax.Array], jax.Array]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    log_levels: bool


def ravine(w: jax.Array) -> jax.Array:
    """``f(x, y) = x^2 / 20 + y^2``, Hessian ``diag(0.1, 2)``: condition number 20."""
    return w[0] ** 2 / 20 + w[1] ** 2


def rosenbrock(w: jax.Array) -> jax.Array:
    """``f(x, y) = (1 - x)^2 + 100 (y - x^2)^2`` (Rosenbrock, 1960), minimum 0 at ``(1, 1)``."""
    return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2


def saddle(w: jax.Array) -> jax.Array:
    """``f(x, y) = x^2 / 2 - y^2 / 2 + y^4 / 4``: a saddle at 0, minima ``-1/4`` at ``(0, +-1)``."""
    return w[0] ** 2 / 2 - w[1] ** 2 / 2 + w[1] ** 4 / 4


SURFACES: tuple[Surface, ...] = (
    Surface("ravine", ravine, (-9.0, 1.6), ((0.0, 0.0),), (-10.0, 2.0), (-2.0, 2.0), False),
    Surface("Rosenbrock", rosenbrock, (-1.2, 1.0), ((1.0, 1.0),), (-1.6, 1.5), (-0.6, 1.8), True),
    Surface("saddle", saddle, (-2.0, 1e-3), ((0.0, 1.0), (0.0, -1.0)), (-2.2, 1.2), (-1.6, 1.6), False),
)

# Learning rates per surface (ravine, Rosenbrock, saddle), chosen so that each path is visible and
# representative within 300 steps; AdaDelta has none (Zeiler's rule is learning-rate free).
PATH_OPTIMIZERS: dict[str, tuple[Callable[[jax.Array], GradientTransformation], tuple[float, float, float]]] = {
    "sgd": (lambda lr: sgd(lr), (0.9, 2e-3, 0.1)),
    "momentum": (lambda lr: sgd(lr, momentum=0.9), (0.1, 3e-4, 0.02)),
    "nesterov": (lambda lr: sgd(lr, momentum=0.9, nesterov=True), (0.1, 3e-4, 0.02)),
    "adagrad": (lambda lr: adagrad(lr), (1.0, 0.3, 0.5)),
    "rmsprop": (lambda lr: rmsprop(lr), (0.1, 0.02, 0.05)),
    "adadelta": (lambda lr: adadelta(), (1.0, 1.0, 1.0)),
    "adam": (lambda lr: adam(lr), (0.3, 0.2, 0.1)),
    "rprop": (lambda lr: rprop(lr), (0.1, 0.05, 0.05)),
}


def _surface_value(index: jax.Array, w: jax.Array) -> jax.Array:
    return jax.lax.switch(index, [surface.fn for surface in SURFACES], w)


def _path(factory: Callable[[jax.Array], GradientTransformation], num_steps: int) -> Callable:
    def run(index: jax.Array, start: jax.Array, learning_rate: jax.Array) -> jax.Array:
        optimizer = factory(learning_rate)

        def step(carry, _):
            w, state = carry
            grads = jax.grad(_surface_value, argnums=1)(index, w)
            updates, state = optimizer.update(grads, state, w)
            w = apply_updates(w, updates)
            return (w, state), w

        _, ws = jax.lax.scan(step, (start, optimizer.init(start)), None, length=num_steps)
        return jnp.concatenate([start[None], ws])

    return jax.jit(jax.vmap(run))


def optimizer_paths(names: Sequence[str], num_steps: int = 200) -> dict[str, np.ndarray]:
    """The iterates ``w_0, ..., w_T`` of each named method on every surface.

    Args:
      names: keys of ``PATH_OPTIMIZERS``.
      num_steps: ``T``, default 200.

    Returns:
      ``{name: array [len(SURFACES), T + 1, 2]}``, float32.
    """
    unknown = [name for name in names if name not in PATH_OPTIMIZERS]
    if unknown:
        raise ValueError(f"optimizer_paths: unknown method(s) {unknown}; choose from {list(PATH_OPTIMIZERS)}")
    indices = jnp.arange(len(SURFACES))
    starts = jnp.asarray([surface.start for surface in SURFACES], jnp.float32)
    paths = {}
    for name in names:
        factory, learning_rates = PATH_OPTIMIZERS[name]
        paths[name] = np.asarray(_path(factory, num_steps)(indices, starts, jnp.asarray(learning_rates, jnp.float32)))
    return paths


def contour(ax: Any, surface: Surface, resolution: int = 160) -> None:
    """Draws ``surface`` as filled contours on a matplotlib axis, minima marked with stars."""
    xs = np.linspace(*surface.xlim, resolution)
    ys = np.linspace(*surface.ylim, resolution)
    # The surfaces are plain arithmetic, so NumPy evaluates them on the whole grid at once.
    values = np.asarray(surface.fn(np.stack(np.meshgrid(xs, ys))))
    if surface.log_levels:
        values = np.log10(values - values.min() + 1e-3)
    ax.contourf(xs, ys, values, levels=30, cmap="Greys_r", alpha=0.55)
    ax.contour(xs, ys, values, levels=15, colors="k", linewidths=0.3, alpha=0.5)
    for x, y in surface.minima:
        ax.plot(x, y, marker="*", color="gold", markeredgecolor="k", markersize=13, zorder=5)
    ax.set_xlim(*surface.xlim)
    ax.set_ylim(*surface.ylim)
    ax.set_title(surface.name)
