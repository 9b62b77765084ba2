"""Initializers: pure functions ``init(key, shape, dtype=jnp.float32) -> Array``.

Every initializer here has the signature that ``jax.nn.initializers`` made familiar. The
constant ones (``zeros``, ``ones``) are initializers themselves; the others are built by a
factory that closes over the hyperparameters (``he_normal()`` returns an initializer).

Fan-in and fan-out
------------------
The variance-scaling family divides by a "fan" computed from the kernel shape by
``compute_fans``. With ``receptive = prod(shape) / (shape[in_axis] * shape[out_axis] *
shape[batch_axis])`` (the product of every axis not named),

    fan_in  = shape[in_axis]  * receptive
    fan_out = shape[out_axis] * receptive

so for a dense kernel ``(in, out)`` the fans are ``in`` and ``out``, and for a convolution kernel
in JAX/Flax layout ``(k_1, ..., k_d, in, out)`` they are ``in * k_1 * ... * k_d`` and
``out * k_1 * ... * k_d``: each output unit sums over ``in * prod(k)`` inputs. The defaults
``in_axis=-2, out_axis=-1`` fit both. A PyTorch-layout convolution kernel ``(out, in, k_1, ...)``
needs ``in_axis=1, out_axis=0``; with those the fans equal
``torch.nn.init._calculate_fan_in_and_fan_out``.

Dtypes
------
The default ``dtype`` is ``float32`` whatever ``jax_enable_x64`` says, so a model's parameters do
not silently double in size. The variance-scaling family and ``orthogonal`` accept real floating
dtypes only (``jax.nn.initializers`` also draws complex kernels).

Relation to ``jax.nn.initializers``
-----------------------------------
Every initializer here that ``jax.nn.initializers`` also defines draws the same array from the same
key, shape and dtype (the tests check each one). The differences are in the interface: the default
dtype (``float32`` here, JAX's default float there), no ``out_sharding`` argument, no complex
kernels, and no ``xavier_*`` / ``kaiming_*`` aliases (``glorot_*`` and ``he_*`` are the one
spelling). Like JAX's, ``uniform(scale)`` draws from ``[0, scale)``, not ``[-scale, scale)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

Shape = Sequence[int]
Axes = int | Sequence[int]
FanMode = Literal["fan_in", "fan_out", "fan_avg", "fan_geo_avg"]
Distribution = Literal["truncated_normal", "normal", "uniform"]


class Initializer(Protocol):
    """``init(key, shape, dtype=jnp.float32) -> Array``, the ``jax.nn.initializers`` signature."""

    def __call__(self, key: jax.Array, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array: ...


def _check_real_floating(dtype: DTypeLike, where: str) -> None:
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{where}: expected a real floating dtype, got {jnp.dtype(dtype)}.")


def _flat_draw(sample: Callable[[jax.Array, Shape], jax.Array], key: jax.Array, shape: Shape) -> jax.Array:
    """``sample(key, (prod(shape),)).reshape(shape)``: the same numbers as ``sample(key, shape)``.

    XLA:CPU compiles JAX's counter-based generator for an N-d shape far more slowly than for the
    same count in 1-D (seconds against a tenth of a second for a 4-d kernel). The generator numbers
    its draws in row-major order, so the flat draw reshaped is the same array; the tests check it
    against ``jax.nn.initializers`` for 2-d and 4-d shapes.
    """
    shape = tuple(shape)
    return sample(key, (math.prod(shape),)).reshape(shape)


def zeros(key: jax.Array | None, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """``W = 0``. The key is ignored.

    Zero kernels make every hidden unit of a layer compute the same function and receive the
    same gradient, so they never become different (the symmetry problem); zeros are the usual
    choice for biases only.

    Args:
      key: ignored (may be ``None``).
      shape: the array shape.
      dtype: default ``float32``.

    Matches ``jax.nn.initializers.zeros`` and ``torch.nn.init.zeros_``.
    """
    del key
    return jnp.zeros(shape, dtype)


def ones(key: jax.Array | None, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """``W = 1``. The key is ignored; the usual init of a normalization layer's scale.

    Args:
      key: ignored (may be ``None``).
      shape: the array shape.
      dtype: default ``float32``.

    Matches ``jax.nn.initializers.ones`` and ``torch.nn.init.ones_``.
    """
    del key
    return jnp.ones(shape, dtype)


def constant(value: ArrayLike) -> Initializer:
    """Builds ``W = value`` (broadcast to ``shape``). The key is ignored.

    A small positive bias such as ``constant(0.01)`` for ReLU hidden units makes them start in
    the active region, a heuristic against units that never fire ("dead" ReLUs).

    Args:
      value: the fill value, a scalar or anything that broadcasts to the requested shape.

    Matches ``jax.nn.initializers.constant(value)`` and ``torch.nn.init.constant_``.
    """

    def init(key: jax.Array | None, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
        del key
        return jnp.full(shape, value, dtype)

    return init


def normal(stddev: float = 1e-2) -> Initializer:
    """Builds ``W_ij ~ N(0, stddev^2)`` i.i.d.

    Args:
      stddev: standard deviation, default ``1e-2``. With this default a deep ReLU network's
        activations shrink by ``fan_in * stddev^2 / 2`` per layer (see ``he_normal``).

    Matches ``jax.nn.initializers.normal(stddev)`` (same key, same array) and
    ``torch.nn.init.normal_(std=stddev)`` in distribution.
    """

    def init(key: jax.Array, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
        z = _flat_draw(lambda k, s: jax.random.normal(k, s, dtype), key, shape)
        return z * jnp.asarray(stddev, dtype)

    return init


def uniform(scale: float = 1e-2) -> Initializer:
    """Builds ``W_ij ~ U[0, scale)`` i.i.d.

    The interval is one-sided, as in ``jax.nn.initializers.uniform`` (same key, same array);
    ``torch.nn.init.uniform_(a, b)`` takes both ends instead. For a zero-mean uniform kernel use
    ``variance_scaling(..., distribution="uniform")``.

    Args:
      scale: upper end of the interval, default ``1e-2``.
    """

    def init(key: jax.Array, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
        u = _flat_draw(lambda k, s: jax.random.uniform(k, s, dtype), key, shape)
        return u * jnp.asarray(scale, dtype)

    return init


def truncated_normal(stddev: float = 1e-2, lower: float = -2.0, upper: float = 2.0) -> Initializer:
    """Builds ``W_ij = stddev * z`` with ``z ~ N(0, 1)`` conditioned on ``lower < z < upper``.

    ``stddev`` is the standard deviation *before* truncation; truncation at +-2 shrinks the
    actual standard deviation to ``0.8796 * stddev``. ``variance_scaling`` corrects for that,
    this function does not.

    Args:
      stddev: scale of the untruncated normal, default ``1e-2``.
      lower: lower truncation point in units of ``stddev``, default ``-2``.
      upper: upper truncation point in units of ``stddev``, default ``2``.

    Matches ``jax.nn.initializers.truncated_normal(stddev, lower=, upper=)`` (same key, same
    array). ``torch.nn.init.trunc_normal_`` takes absolute bounds ``a, b`` instead.
    """

    def init(key: jax.Array, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
        z = _flat_draw(lambda k, s: jax.random.truncated_normal(k, lower, upper, s, dtype), key, shape)
        return z * jnp.asarray(stddev, dtype)

    return init


def _axes_size(shape: Shape, axes: Axes) -> int:
    if isinstance(axes, int):
        return shape[axes]
    return math.prod(shape[a] for a in axes)


def compute_fans(shape: Shape, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()) -> tuple[float, float]:
    """Returns ``(fan_in, fan_out)`` of a dense or convolution kernel of the given shape.

    ``fan_in = |in| * receptive`` and ``fan_out = |out| * receptive``, where ``|in|`` is the
    product of the sizes of ``in_axis``, ``|out|`` of ``out_axis``, and ``receptive`` is the
    product of every axis named in none of ``in_axis``, ``out_axis``, ``batch_axis`` (a
    convolution's spatial axes). Batch axes (a stack of independent kernels) count in neither.

    Examples: dense ``(in, out)`` -> ``(in, out)``; conv ``(3, 3, 16, 32)`` (HWIO) ->
    ``(144, 288)``; PyTorch conv ``(32, 16, 3, 3)`` (OIHW) with ``in_axis=1, out_axis=0`` ->
    ``(144, 288)``, as ``torch.nn.init._calculate_fan_in_and_fan_out`` gives.

    Args:
      shape: the kernel shape.
      in_axis: axis or axes of input features, default ``-2``.
      out_axis: axis or axes of output features, default ``-1``.
      batch_axis: axes to ignore, default ``()``.

    Raises:
      ValueError: for a shape of rank < 2 with the default ``in_axis``, whose fans are undefined.
    """
    shape = tuple(shape)
    if in_axis == -2 and len(shape) < 2:
        raise ValueError(
            f"compute_fans: a kernel of rank >= 2 is expected with the default in_axis=-2, got shape "
            f"{shape}; pass in_axis and out_axis explicitly."
        )
    in_size = _axes_size(shape, in_axis)
    out_size = _axes_size(shape, out_axis)
    batch_size = _axes_size(shape, batch_axis)
    receptive = math.prod(shape) / (in_size * out_size * batch_size)
    return in_size * receptive, out_size * receptive


def _truncated_normal_std(lower: float, upper: float) -> float:
    """Standard deviation of ``N(0, 1)`` conditioned on ``lower < z < upper``."""
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    cdf = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    mass = cdf(upper) - cdf(lower)
    mean = (pdf(lower) - pdf(upper)) / mass
    second_moment = 1.0 + (lower * pdf(lower) - upper * pdf(upper)) / mass
    return math.sqrt(second_moment - mean * mean)


# 0.8796256610342398: the +-2 truncation leaves this fraction of the standard deviation.
_STD_OF_NORMAL_TRUNCATED_AT_2 = _truncated_normal_std(-2.0, 2.0)


def variance_scaling(
    scale: float,
    mode: FanMode,
    distribution: Distribution,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
) -> Initializer:
    """Builds a zero-mean initializer with ``Var[W_ij] = scale / n``, ``n`` a fan of the shape.

    ``n`` is ``fan_in``, ``fan_out``, ``(fan_in + fan_out) / 2`` or ``sqrt(fan_in * fan_out)``
    for ``mode`` ``"fan_in"``, ``"fan_out"``, ``"fan_avg"``, ``"fan_geo_avg"`` (fans as in
    ``compute_fans``). With ``sigma = sqrt(scale / n)`` the distributions are

      ``"normal"``:           ``W ~ N(0, sigma^2)``
      ``"truncated_normal"``: ``W = sigma / 0.8796 * z``, ``z ~ N(0, 1)`` truncated to
                              ``(-2, 2)``; the factor makes the *truncated* std equal ``sigma``
      ``"uniform"``:          ``W ~ U[-sqrt(3) sigma, sqrt(3) sigma]`` (variance ``a^2 / 3``)

    Why it works: for ``y = W x`` with independent zero-mean entries,
    ``Var[y_j] = fan_in Var[W] E[x^2]``, so ``scale = 1, mode="fan_in"`` preserves the second
    moment through a linear layer and ``scale = 2`` through ReLU, which zeroes half of it.

    Args:
      scale: variance multiplier (positive).
      mode: ``"fan_in"``, ``"fan_out"``, ``"fan_avg"`` or ``"fan_geo_avg"``.
      distribution: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``.
      in_axis, out_axis, batch_axis: see ``compute_fans``; defaults ``-2``, ``-1``, ``()``.

    Matches ``jax.nn.initializers.variance_scaling`` (same key, same array) and Keras'
    ``VarianceScaling``. The named initializers below are instances of it.
    """
    if mode not in ("fan_in", "fan_out", "fan_avg", "fan_geo_avg"):
        raise ValueError(
            f"variance_scaling: mode must be 'fan_in', 'fan_out', 'fan_avg' or 'fan_geo_avg', got {mode!r}."
        )
    if distribution not in ("truncated_normal", "normal", "uniform"):
        raise ValueError(
            f"variance_scaling: distribution must be 'truncated_normal', 'normal' or 'uniform', got {distribution!r}."
        )

    def init(key: jax.Array, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
        _check_real_floating(dtype, "variance_scaling")
        fan_in, fan_out = compute_fans(shape, in_axis, out_axis, batch_axis)
        n = {
            "fan_in": fan_in,
            "fan_out": fan_out,
            "fan_avg": (fan_in + fan_out) / 2,
            "fan_geo_avg": math.sqrt(fan_in * fan_out),
        }[mode]
        variance = jnp.asarray(scale / n, dtype)
        if distribution == "normal":
            z = _flat_draw(lambda k, s: jax.random.normal(k, s, dtype), key, shape)
            return z * jnp.sqrt(variance)
        if distribution == "uniform":
            u = _flat_draw(lambda k, s: jax.random.uniform(k, s, dtype, -1.0, 1.0), key, shape)
            return u * jnp.sqrt(3 * variance)
        z = _flat_draw(lambda k, s: jax.random.truncated_normal(k, -2.0, 2.0, s, dtype), key, shape)
        return z * (jnp.sqrt(variance) / jnp.asarray(_STD_OF_NORMAL_TRUNCATED_AT_2, dtype))

    return init


def glorot_uniform(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()) -> Initializer:
    """Glorot (Xavier) uniform: ``W ~ U[-a, a]``, ``a = sqrt(6 / (fan_in + fan_out))``.

    ``Var[W] = 2 / (fan_in + fan_out)``, a compromise between keeping activations (fan-in) and
    back-propagated gradients (fan-out) at constant variance through linear/tanh layers.
    ``variance_scaling(1.0, "fan_avg", "uniform")``.

    Args:
      in_axis, out_axis, batch_axis: see ``compute_fans``; defaults ``-2``, ``-1``, ``()``.

    Matches ``jax.nn.initializers.glorot_uniform`` (same key, same array) and
    ``torch.nn.init.xavier_uniform_`` in distribution. Reference: Glorot & Bengio, 2010.
    """
    return variance_scaling(1.0, "fan_avg", "uniform", in_axis, out_axis, batch_axis)


def glorot_normal(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()) -> Initializer:
    """Glorot (Xavier) normal: truncated normal with ``Var[W] = 2 / (fan_in + fan_out)``.

    ``variance_scaling(1.0, "fan_avg", "truncated_normal")``.

    Args:
      in_axis, out_axis, batch_axis: see ``compute_fans``; defaults ``-2``, ``-1``, ``()``.

    Matches ``jax.nn.initializers.glorot_normal`` (same key, same array). Differs from
    ``torch.nn.init.xavier_normal_``, which draws an untruncated normal of the same variance
    (``variance_scaling(1.0, "fan_avg", "normal")``). Reference: Glorot & Bengio, 2010.
    """
    return variance_scaling(1.0, "fan_avg", "truncated_normal", in_axis, out_axis, batch_axis)


def he_uniform(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()) -> Initializer:
    """He (Kaiming) uniform: ``W ~ U[-a, a]``, ``a = sqrt(6 / fan_in)``, so ``Var[W] = 2 / fan_in``.

    ReLU zeroes half of the second moment, ``E[relu(y)^2] = Var[y] / 2``; the factor 2 restores
    it, so activations keep their scale through arbitrarily many ReLU layers.
    ``variance_scaling(2.0, "fan_in", "uniform")``.

    Args:
      in_axis, out_axis, batch_axis: see ``compute_fans``; defaults ``-2``, ``-1``, ``()``.

    Matches ``jax.nn.initializers.he_uniform`` (same key, same array) and
    ``torch.nn.init.kaiming_uniform_(nonlinearity="relu")`` in distribution (but not torch's
    ``nn.Linear`` default, which is ``a=sqrt(5)``: ``U[-1/sqrt(fan_in), 1/sqrt(fan_in)]``).
    Reference: He et al., 2015.
    """
    return variance_scaling(2.0, "fan_in", "uniform", in_axis, out_axis, batch_axis)


def he_normal(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()) -> Initializer:
    """He (Kaiming) normal: truncated normal with ``Var[W] = 2 / fan_in``.

    ``variance_scaling(2.0, "fan_in", "truncated_normal")``; see ``he_uniform`` for the reason.

    Args:
      in_axis, out_axis, batch_axis: see ``compute_fans``; defaults ``-2``, ``-1``, ``()``.

    Matches ``jax.nn.initializers.he_normal`` (same key, same array). Differs from
    ``torch.nn.init.kaiming_normal_(nonlinearity="relu")``, which draws an untruncated normal
    of the same variance (``variance_scaling(2.0, "fan_in", "normal")``). Reference: He et al.,
    2015.
    """
    return variance_scaling(2.0, "fan_in", "truncated_normal", in_axis, out_axis, batch_axis)


def lecun_uniform(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()) -> Initializer:
    """LeCun uniform: ``W ~ U[-a, a]``, ``a = sqrt(3 / fan_in)``, so ``Var[W] = 1 / fan_in``.

    ``variance_scaling(1.0, "fan_in", "uniform")``: preserves the second moment through a
    linear layer (and through SELU, for which it is the prescribed init).

    Args:
      in_axis, out_axis, batch_axis: see ``compute_fans``; defaults ``-2``, ``-1``, ``()``.

    Matches ``jax.nn.initializers.lecun_uniform`` (same key, same array). Reference: LeCun et
    al., "Efficient BackProp", 1998.
    """
    return variance_scaling(1.0, "fan_in", "uniform", in_axis, out_axis, batch_axis)


def lecun_normal(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()) -> Initializer:
    """LeCun normal: truncated normal with ``Var[W] = 1 / fan_in``.

    ``variance_scaling(1.0, "fan_in", "truncated_normal")``; the default kernel init of
    ``flax.linen.Dense`` and of ``gradtx.nn.dense``.

    Args:
      in_axis, out_axis, batch_axis: see ``compute_fans``; defaults ``-2``, ``-1``, ``()``.

    Matches ``jax.nn.initializers.lecun_normal`` (same key, same array). Reference: LeCun et
    al., "Efficient BackProp", 1998.
    """
    return variance_scaling(1.0, "fan_in", "truncated_normal", in_axis, out_axis, batch_axis)


def orthogonal(scale: float = 1.0, column_axis: int = -1) -> Initializer:
    """Builds ``W = scale * Q`` with ``Q`` Haar-random with orthonormal columns or rows.

    The shape is viewed as a matrix of ``rows = prod(shape) / shape[column_axis]`` by
    ``cols = shape[column_axis]``. If ``rows >= cols`` the columns are orthonormal
    (``Q^T Q = I``), otherwise the rows are (``Q Q^T = I``). An orthogonal linear map preserves
    norms exactly, so a deep linear network initialised this way neither explodes nor vanishes
    (Saxe et al., 2014).

    Args:
      scale: multiplier (the gain), default ``1.0``.
      column_axis: the axis of the columns, default ``-1`` (output features of a dense kernel).

    Matches ``jax.nn.initializers.orthogonal(scale, column_axis)`` (same key, same array) and
    ``torch.nn.init.orthogonal_(gain=scale)`` in distribution.
    """

    def init(key: jax.Array, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
        _check_real_floating(dtype, "orthogonal")
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"orthogonal: a shape of rank >= 2 is expected, got {shape}.")
        if 0 in shape:
            return jnp.zeros(shape, dtype)
        cols = shape[column_axis]
        rows = math.prod(shape) // cols
        # Mezzadri (2007): the Q of a Gaussian matrix's QR, its columns multiplied by the signs of
        # diag(R), is Haar distributed. Done on the tall orientation, transposed back if wide.
        tall, short = max(rows, cols), min(rows, cols)
        z = _flat_draw(lambda k, s: jax.random.normal(k, s, dtype), key, (tall, short))
        q, r = jnp.linalg.qr(z)
        q = q * jnp.sign(jnp.diagonal(r))
        if rows < cols:
            q = q.T
        other_axes = tuple(np.delete(np.asarray(shape), column_axis))
        q = jnp.moveaxis(q.reshape(other_axes + (cols,)), -1, column_axis)
        return jnp.asarray(scale, dtype) * q

    return init


def delta_orthogonal(scale: float = 1.0, column_axis: int = -1) -> Initializer:
    """Builds a convolution kernel that is an orthogonal matrix at the centre tap, zero elsewhere.

    For a kernel ``(k_1, ..., k_d, in, out)`` with ``d`` in 1..3 and ``in <= out``:
    ``W[c_1, ..., c_d] = scale * Q`` with ``c_i = (k_i - 1) // 2`` and ``Q`` an ``(in, out)``
    matrix with orthonormal rows (``orthogonal(scale, column_axis)`` on ``(in, out)``); every
    other tap is zero. The convolution then acts as an orthogonal map on the channels at each
    position, which lets very deep CNNs (10,000 layers in the paper) train without
    normalization.

    Args:
      scale: multiplier, default ``1.0``.
      column_axis: passed to ``orthogonal`` for the centre matrix, default ``-1``.

    Raises:
      ValueError: for a kernel of rank other than 3, 4, 5, or with ``in > out``.

    Matches ``jax.nn.initializers.delta_orthogonal`` (same key, same array). Reference: Xiao et
    al., "Dynamical Isometry and a Mean Field Theory of CNNs", 2018.
    """

    def init(key: jax.Array, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
        shape = tuple(shape)
        if len(shape) not in (3, 4, 5):
            raise ValueError(
                f"delta_orthogonal: a 1D, 2D or 3D convolution kernel (rank 3, 4 or 5) is expected, got shape {shape}."
            )
        if shape[-2] > shape[-1]:
            raise ValueError(
                f"delta_orthogonal: in features <= out features is expected, got in={shape[-2]} > "
                f"out={shape[-1]} in shape {shape}."
            )
        centre_matrix = orthogonal(scale, column_axis)(key, shape[-2:], dtype)
        centre = tuple((k - 1) // 2 for k in shape[:-2])
        return jnp.zeros(shape, dtype).at[centre].set(centre_matrix)

    return init
