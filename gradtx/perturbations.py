"""Differentiable perturbed functions: ``gradtx.perturbations``.

A piecewise-constant function (an argmax, a ranking, a shortest path) has zero or undefined
gradients. Its perturbed version

.. math::
    f_\\sigma(x) = \\mathbb{E}_{z \\sim \\mu}\\, f(x + \\sigma z)

is smooth for a noise density ``mu`` with a smooth log-density, and its derivatives are
expectations of values of ``f`` alone (Berthet et al. 2020). ``make_perturbed_fun`` returns a
Monte-Carlo estimate of ``f_sigma`` whose JAX derivatives of every order are unbiased estimates of
those of ``f_sigma``. The noise distributions ``Normal`` and ``Gumbel`` draw exactly the numbers
Optax draws for the same key. Every name and argument is Optax's (``optax.perturbations``).

``multi_normal`` (``gradtx.multi_normal``, Optax's ``optax.multi_normal``) is the diagonal Gaussian
of the score-function gradient estimators, kept here with its fellow distributions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.stats.norm

from gradtx.tree import add_scale, random_like, scale
from gradtx.tree import sum as tree_sum

PyTree = Any

__all__ = ["make_perturbed_fun", "Gumbel", "Normal"]


class Normal:
    """The standard normal noise ``z ~ N(0, I)``, with log-density ``log mu(z) = -z^2 / 2 + const``.

    ``sample(key, sample_shape=(), dtype=float)`` draws ``jax.random.normal(key, sample_shape,
    dtype)``; ``log_prob(z)`` returns ``-z^2 / 2`` elementwise (the constant is dropped: only its
    gradient is used). Matches ``optax.perturbations.Normal``.
    """

    def sample(self, key: jax.Array, sample_shape: Sequence[int] = (), dtype: Any = float) -> jax.Array:
        """``jax.random.normal(key, sample_shape, dtype)``."""
        return jax.random.normal(key, sample_shape, dtype)

    def log_prob(self, inputs: jax.Array) -> jax.Array:
        """``-z^2 / 2``, the log-density up to a constant."""
        return -0.5 * inputs**2


class Gumbel:
    """The standard Gumbel noise, with log-density ``log mu(z) = -z - exp(-z)``.

    Gumbel noise on scores makes the perturbed argmax a softmax sample (the Gumbel-max trick),
    the default of Berthet et al. (2020). ``sample(key, sample_shape=(), dtype=float)`` draws
    ``jax.random.gumbel(key, sample_shape, dtype)``. Matches ``optax.perturbations.Gumbel``.
    """

    def sample(self, key: jax.Array, sample_shape: Sequence[int] = (), dtype: Any = float) -> jax.Array:
        """``jax.random.gumbel(key, sample_shape, dtype)``."""
        return jax.random.gumbel(key, sample_shape, dtype)

    def log_prob(self, inputs: jax.Array) -> jax.Array:
        """``-z - exp(-z)``, the log-density."""
        return -inputs - jnp.exp(-inputs)


_DEFAULT_NOISE = Gumbel()


def _magic_box(log_prob: jax.Array) -> jax.Array:
    """``exp(l - stop_gradient(l))``: equal to 1, with derivative ``dl`` (Foerster et al. 2018)."""
    return jnp.exp(log_prob - jax.lax.stop_gradient(log_prob))


def make_perturbed_fun(
    fun: Callable[[PyTree], PyTree],
    num_samples: int = 1000,
    sigma: Any = 0.1,
    noise: Any = _DEFAULT_NOISE,
    use_baseline: bool = True,
) -> Callable[[jax.Array, PyTree], PyTree]:
    """A differentiable Monte-Carlo estimate of ``f_sigma(x) = E_z f(x + sigma z)``.

    With samples ``z_1..z_N ~ mu`` (one key per sample, split from the given key; one key per
    leaf of ``x``, as ``gradtx.tree.random_like`` splits it), ``y_s = x + sigma z_s`` held
    constant and ``b = f(x)`` (or 0 without baseline):

    .. math::
        \\hat f_\\sigma(x) = \\frac{1}{N} \\sum_{s=1}^N \\Bigl( b + \\square_s \\, (f(y_s) - b) \\Bigr),
        \\qquad \\square_s = \\exp\\bigl(\\ell_s - \\bot(\\ell_s)\\bigr), \\quad
        \\ell_s = \\sum \\log \\mu\\Bigl(\\frac{y_s - x}{\\sigma}\\Bigr),

    where ``bot`` stops gradients. ``square_s`` equals 1, so the value is the sample mean of
    ``f(y_s)``, but its derivative is that of ``ell_s``: the gradient is the score-function
    (REINFORCE) estimate

    .. math::
        \\nabla \\hat f_\\sigma(x) = -\\frac{1}{N\\sigma} \\sum_s (f(y_s) - b)\\,
        \\nabla \\log \\mu(z_s)^\\top,

    and higher derivatives follow (the DiCE "magic box"). ``f`` is only evaluated, never
    differentiated, so it may be piecewise constant. The baseline ``b`` does not bias the
    estimate (the score has mean zero) and lowers its variance.

    Args:
      fun: ``f``, a function from a pytree of arrays to a pytree of arrays.
      num_samples: ``N``, the number of perturbations averaged. Default 1000.
      sigma: ``sigma``, the noise scale. Default 0.1.
      noise: ``mu``, an object with ``sample(key, sample_shape, dtype)`` and ``log_prob(z)``
        (``Normal()``, ``Gumbel()``; default ``Gumbel()``).
      use_baseline: subtract ``b = f(x)`` from every ``f(y_s)``. Default True.

    Returns:
      ``perturbed(key, x)``, with ``f``'s output structure.

    Matches ``optax.perturbations.make_perturbed_fun`` (same samples for the same key).
    References: Berthet, Blondel, Teboul, Cuturi, Vert, Bach, "Learning with differentiable
    perturbed optimizers", NeurIPS 2020 (https://arxiv.org/abs/2002.08676); Foerster et al.,
    "DiCE: the infinitely differentiable Monte Carlo estimator", ICML 2018.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"make_perturbed_fun: num_samples must be a positive int, got {num_samples!r}.")
    if not (hasattr(noise, "sample") and hasattr(noise, "log_prob")):
        raise TypeError(f"make_perturbed_fun: noise must have sample and log_prob methods, got {noise!r}.")

    def one_sample(key: jax.Array, x: PyTree, baseline: PyTree) -> PyTree:
        z = random_like(key, x, sampler=noise.sample)
        perturbed = jax.lax.stop_gradient(jax.tree.map(lambda x_, z_: x_ + sigma * z_, x, z))
        # z again, now as a function of x: its log-density carries the gradient.
        z = jax.tree.map(lambda x_, y_: (y_ - x_) / sigma, x, perturbed)
        box = _magic_box(tree_sum(jax.tree.map(noise.log_prob, z)))
        out = scale(box, fun(perturbed))
        if use_baseline:
            out = add_scale(out, 1 - box, baseline)
        return out

    def perturbed_fun(key: jax.Array, x: PyTree) -> PyTree:
        baseline = fun(jax.lax.stop_gradient(x)) if use_baseline else None
        keys = jax.random.split(key, num_samples)
        outs = jax.vmap(one_sample, in_axes=(0, None, None))(keys, x, baseline)
        return jax.tree.map(lambda o: jnp.mean(o, axis=0), outs)

    return perturbed_fun


class MultiNormalDiagFromLogScale:
    """A Gaussian with diagonal covariance, parametrised by its mean and the log of its scale.

    .. math::
        x \\sim \\mathcal{N}(\\mu, \\operatorname{diag}(\\sigma^2)), \\qquad \\sigma = \\exp(\\text{log\\_scale}),
        \\qquad \\log p(x) = \\sum_i \\Bigl(-\\frac{(x_i - \\mu_i)^2}{2 \\sigma_i^2} - \\log \\sigma_i
        - \\tfrac12 \\log 2\\pi\\Bigr)

    ``loc`` and ``log_scale`` broadcast together to the event shape (``ValueError``
    "Incompatible shapes for broadcasting" otherwise). ``sample(shape, key)`` returns
    ``mu + sigma * eps`` with ``eps ~ N(0, I)`` of shape ``shape + event_shape`` in JAX's default
    float dtype; ``log_prob(x)`` sums over the event axes; ``params`` is ``[loc, log_scale]``.
    Built by ``multi_normal``; Optax's ``MultiNormalDiagFromLogScale``, with the same numbers.
    """

    def __init__(self, loc: Any, log_scale: Any):
        self._log_scale = jnp.asarray(log_scale)
        self._scale = jnp.exp(self._log_scale)
        self._mean = jnp.asarray(loc)
        self._param_shape = jax.lax.broadcast_shapes(self._mean.shape, self._scale.shape)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """The event shape: ``loc`` and ``log_scale`` broadcast together."""
        return self._param_shape

    def sample(self, shape: Sequence[int], key: jax.Array) -> jax.Array:
        """Draws ``mu + sigma * eps`` of shape ``tuple(shape) + param_shape``."""
        eps = jax.random.normal(key, shape=tuple(shape) + self._param_shape)
        return eps * self._scale + self._mean

    def log_prob(self, x: Any) -> jax.Array:
        """``log p(x)``, summed over the event axes (the trailing ``len(param_shape)`` axes)."""
        per_coordinate = jax.scipy.stats.norm.logpdf(x, loc=self._mean, scale=self._scale)
        return jnp.sum(per_coordinate, axis=tuple(range(-len(self._param_shape), 0)))

    @property
    def log_scale(self) -> jax.Array:
        """``log sigma``, as given."""
        return self._log_scale

    @property
    def params(self) -> list[jax.Array]:
        """``[loc, log_scale]``."""
        return [self._mean, self._log_scale]


def multi_normal(loc: Any, log_scale: Any) -> MultiNormalDiagFromLogScale:
    """The diagonal Gaussian ``N(loc, diag(exp(log_scale)^2))`` as a distribution object.

    Returns a ``MultiNormalDiagFromLogScale`` with ``sample(shape, key)``, ``log_prob(x)``
    (``log p(x) = sum_i log N(x_i; loc_i, exp(log_scale_i))``), ``params`` and ``log_scale``.
    Matches ``optax.multi_normal``.
    """
    return MultiNormalDiagFromLogScale(loc, log_scale)
