"""PSGD-Kron: preconditioned SGD with a learned Kronecker-factored preconditioner (Li 2018, 2019).

Each parameter tensor of shape ``(d_1, ..., d_n)`` gets one factor ``Q_i`` per dimension: an
upper-triangular ``d_i x d_i`` matrix, or a diagonal stored as a vector of length ``d_i`` when the
dimension is large, skewed, of size 1, or the tensor has fewer than ``min_ndim_triangular``
dimensions. The preconditioner is ``P = Q^H Q`` with ``Q = Q_1 (x) ... (x) Q_n``; it is fitted by
a few normalized steps on the Lie group of triangular matrices so that ``P`` whitens gradient
perturbations against random probes, without any matrix inverse or root.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, PyTree, ScalarOrSchedule
from gradtx.combinators import MaskOrFn, chain
from gradtx.momentum import bias_correction
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    check_float_leaves,
    check_trees_match,
    moving_average,
    saturating_increment,
    tree_cast,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import (
    check_closed_unit,
    check_decay,
    check_non_negative,
    check_positive,
    check_schedule_arguments,
    check_state_type,
)

_MEMORY_SAVE_MODES = (None, "one_diag", "all_diag")
# sqrt of float32's machine epsilon, psgd_jax's damping of the gradient fed to the Q update.
_PRECONDITIONER_DAMPING = float(np.sqrt(np.finfo(np.float32).eps))
# psgd_jax caps the RMS of each preconditioned gradient at this value (a well-fitted P gives RMS ~1).
_MAX_UPDATE_RMS = 1.1


def precond_update_prob_schedule(
    max_prob: float = 1.0, min_prob: float = 0.03, decay: float = 0.001, flat_start: int = 500
) -> Callable[[jax.Array], jax.Array]:
    """psgd_jax's default preconditioner update probability: flat, then an exponential anneal.

    .. math::

        p(t) = \\min(\\max(p_{\\max} e^{-\\text{decay} (t - \\text{flat\\_start})}, p_{\\min}), p_{\\max})

    The preconditioner is fitted every step at first and about every ``1 / min_prob`` steps once
    trained. Matches ``psgd_jax.kron.precond_update_prob_schedule`` (Evan Walters, 2024).
    """
    check_closed_unit(max_prob, "max_prob")
    check_closed_unit(min_prob, "min_prob")
    check_non_negative(decay, "decay")

    def schedule(count):
        return jnp.minimum(jnp.maximum(max_prob * jnp.exp(-decay * (count - flat_start)), min_prob), max_prob)

    return schedule


_DEFAULT_UPDATE_PROBABILITY = precond_update_prob_schedule()


class ScaleByKronState(NamedTuple):
    """State of :func:`scale_by_kron` and :func:`psgd_kron` (psgd_jax's field names).

    Attributes:
      count: number of updates so far (int32, saturating).
      key: the PRNG key of the probes; step ``t`` uses ``fold_in(key, t)`` (see :func:`scale_by_kron`).
      mu: the momentum ``m_t`` shaped like the params, or ``None`` when ``b1 == 0``.
      Qs_preconditioners: for each parameter leaf, a tuple of its factors ``Q_i`` (a ``d_i x d_i``
        upper-triangular matrix or a length-``d_i`` diagonal; one scalar for a scalar leaf).
      update_counter: steps since the preconditioner was last fitted.
    """

    count: jax.Array
    key: jax.Array
    mu: PyTree
    Qs_preconditioners: PyTree
    update_counter: jax.Array


def _diagonal_dims(
    shape: tuple[int, ...], max_size: int, max_skew: float, min_ndim: int, memory_save_mode: str | None
) -> list[bool]:
    """For each dimension, whether its factor is diagonal (True) or triangular (False)."""
    if not shape:
        return []
    if memory_save_mode == "all_diag":
        forced = [True] * len(shape)
    elif memory_save_mode == "one_diag":
        forced = [False] * len(shape)
        forced[int(np.argsort(shape)[::-1][0])] = True
    else:
        forced = [False] * len(shape)
    beta_size = 1 if len(shape) < 2 else sorted(shape)[-2]  # the second largest dimension
    return [
        size == 1 or size > max_size or size > max_skew * beta_size or len(shape) < min_ndim or force
        for size, force in zip(shape, forced, strict=True)
    ]


def _init_factors(leaf: jax.Array, scale: float, diagonal: list[bool], dtype: Any) -> tuple[jax.Array, ...]:
    """``Q_i = scale^(1/n) I`` (or a vector of ones times it) for each dimension; ``scale`` for a scalar."""
    dtype = leaf.dtype if dtype is None else dtype
    if leaf.ndim == 0:
        return (jnp.full((), scale, dtype),)
    per_dim = scale ** (1.0 / leaf.ndim)
    return tuple(
        jnp.full((size,), per_dim, dtype) if diag else per_dim * jnp.eye(size, dtype=dtype)
        for size, diag in zip(leaf.shape, diagonal, strict=True)
    )


def _apply_along(q: jax.Array, x: jax.Array, axis: int, transpose: bool = False) -> jax.Array:
    """``Q_i`` (or ``Q_i^T``) applied to every fiber of ``x`` along ``axis``."""
    if q.ndim < 2:
        return x * jnp.reshape(q, (-1,) + (1,) * (x.ndim - axis - 1))
    product = jnp.tensordot(q.T if transpose else q, x, axes=([1], [axis]))
    return jnp.moveaxis(product, 0, axis)


def _solve_transposed(q: jax.Array, x: jax.Array, axis: int) -> jax.Array:
    """``Q_i^{-T}`` applied along ``axis`` (a triangular solve, or a division for a diagonal)."""
    if q.ndim < 2:
        return x / jnp.reshape(q, (-1,) + (1,) * (x.ndim - axis - 1))
    moved = jnp.moveaxis(x, axis, 0)
    solved = jax.scipy.linalg.solve_triangular(q, moved.reshape(moved.shape[0], -1), trans="T", lower=False)
    return jnp.moveaxis(solved.reshape(moved.shape), 0, axis)


def _gram(x: jax.Array, axis: int, diagonal: bool) -> jax.Array:
    """``sum over the other axes of x[..b..] x[..c..]``: a matrix, or its diagonal."""
    others = [i for i in range(x.ndim) if i != axis]
    if diagonal:
        return jnp.sum(jnp.square(x), axis=tuple(others))
    return jnp.tensordot(x, x, axes=(others, others))


def _norm_lower_bound(a: jax.Array) -> jax.Array:
    """A cheap lower bound of the spectral norm of a symmetric ``a`` (psgd's, within ~sqrt 2 of it).

    Scale by ``max|a_ij|``, take the row of largest norm ``r`` and return ``max|a| ||r a|| / ||r||``.
    """
    max_abs = jnp.max(jnp.abs(a))

    def bound(a):
        a = a / max_abs
        squares = jnp.square(a)
        col_sums, row_sums = jnp.sum(squares, axis=0), jnp.sum(squares, axis=1)
        i, j = jnp.argmax(col_sums), jnp.argmax(row_sums)

        def by_column():
            x = a[:, i] @ a
            return max_abs * jnp.linalg.norm((x / jnp.linalg.norm(x)) @ a.T)

        def by_row():
            x = a @ a[j, :]
            return max_abs * jnp.linalg.norm(a.T @ (x / jnp.linalg.norm(x)))

        return jax.lax.cond(col_sums[i] > row_sums[j], by_column, by_row)

    return jax.lax.cond(max_abs > 0, bound, lambda _: max_abs, a)


def _add_tiny(x: jax.Array) -> jax.Array:
    return x + jnp.finfo(x.dtype).tiny


def _update_factors(qs: tuple, g: jax.Array, v: jax.Array, lr: Any) -> tuple:
    """One normalized Lie-group step of every ``Q_i`` towards ``E[h h^T] P = P^{-1} E[v v^T] P``-balance."""
    if g.ndim == 0:
        (q,) = qs
        a, b = q * g, v / q
        term1, term2 = a * a, b * b
        return (q - lr * (term1 - term2) * q / _add_tiny(jnp.abs(term1 + term2)),)
    a = g
    for axis, q in enumerate(qs):
        a = _apply_along(q, a, axis)  # A = Q g
    conj_b = v
    for axis, q in enumerate(qs):
        conj_b = _solve_transposed(q, conj_b, axis)  # B = Q^{-T} v
    new_qs = []
    for axis, q in enumerate(qs):
        diagonal = q.ndim < 2
        term1, term2 = _gram(a, axis, diagonal), _gram(conj_b, axis, diagonal)
        if diagonal:
            step = lr * (term1 - term2) * q / _add_tiny(jnp.max(jnp.abs(term1 + term2)))
        else:
            step = (lr * jnp.triu(term1 - term2) / _add_tiny(_norm_lower_bound(term1 + term2))) @ q
        new_qs.append(q - step)
    return tuple(new_qs)


def _precondition(qs: tuple, g: jax.Array) -> jax.Array:
    """``P g = Q^T Q g`` applied factor by factor."""
    if g.ndim == 0:
        return qs[0] * qs[0] * g
    for axis, q in enumerate(qs):
        g = _apply_along(q, g, axis)
    for axis, q in enumerate(qs):
        g = _apply_along(q, g, axis, transpose=True)
    return g


def _balance(qs: tuple) -> tuple:
    """Rescale the factors to equal ``max|Q_i|`` (their geometric mean); ``Q`` itself is unchanged."""
    if len(qs) < 2:
        return qs
    norms = jnp.stack([jnp.max(jnp.abs(q)) for q in qs])
    mean = jnp.prod(norms) ** (1.0 / len(qs))
    return tuple(q * (mean / norms[i]).astype(q.dtype) for i, q in enumerate(qs))


def _is_factors(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) > 0 and all(isinstance(q, jax.Array) for q in x)


def _leaf_shapes(qs_tree: PyTree) -> PyTree:
    """The parameter shapes the factors were built for, as ``ShapeDtypeStruct`` leaves."""

    def shape(qs):
        dims = () if qs[0].ndim == 0 else tuple(q.shape[0] for q in qs)
        return jax.ShapeDtypeStruct(dims, qs[0].dtype)

    return jax.tree.map(shape, qs_tree, is_leaf=_is_factors)


def kron_probes(key: jax.Array, count: jax.Array, updates: PyTree) -> tuple[jax.Array, PyTree]:
    """The random draws of step ``count`` of :func:`scale_by_kron`: a balancing uniform and the probes.

    ``fold_in(key, count)`` is split into ``(balance_key, probe_key)``; ``u = uniform(balance_key)``
    and the probe of leaf ``i`` (in ``jax.tree.leaves`` order) is ``normal(split(probe_key, n)[i])``
    shaped and typed like that leaf. Exposed so that tests and references can replay them.
    """
    balance_key, probe_key = jax.random.split(jax.random.fold_in(key, count))
    leaves, treedef = jax.tree.flatten(updates)
    keys = jax.random.split(probe_key, max(len(leaves), 1))
    probes = [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    return jax.random.uniform(balance_key), jax.tree.unflatten(treedef, probes)


@check_schedule_arguments
def scale_by_kron(
    b1: float | jax.Array = 0.9,
    preconditioner_update_probability: ScalarOrSchedule = _DEFAULT_UPDATE_PROBABILITY,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    memory_save_mode: str | None = None,
    momentum_into_precond_update: bool = True,
    preconditioner_lr: float | jax.Array = 0.1,
    preconditioner_init_scale: float = 1.0,
    mu_dtype: Any = None,
    precond_dtype: Any = None,
    max_skew_triangular: float = float("inf"),
    preconditioner_damping: float | jax.Array = _PRECONDITIONER_DAMPING,
    balance_probability: float = 0.01,
    key: int | jax.Array = 0,
) -> GradientTransformation:
    """Preconditions the (momentum of the) gradient by a learned Kronecker preconditioner ``P = Q^T Q``.

    With ``t`` the 1-based step, ``m_t = b1 m_{t-1} + (1 - b1) g_t``, ``m_hat = m_t / (1 - b1^t)``
    and ``Q = Q_1 (x) ... (x) Q_n`` (``Q_i`` acting on dimension ``i``):

    .. math::

        &\\text{if } c_t = c_{t-1} + 1 \\ge 1 / p(t):\\ c_t \\leftarrow 0 \\text{ and, with }
          v \\sim N(0, I),\\ h = m_{hat} + \\delta\\,\\mathrm{mean}|m_{hat}|\\, v: \\\\
        &\\quad A = Q h, \\quad B = Q^{-T} v, \\quad
          \\nabla_i = [A A^T]_i - [B B^T]_i \\ \\text{(contracted over the other dimensions)} \\\\
        &\\quad Q_i \\leftarrow Q_i - \\frac{\\eta_Q}{\\| [A A^T]_i + [B B^T]_i \\|}\\,
          \\mathrm{triu}(\\nabla_i)\\, Q_i \\\\
        &u = P m_{hat} / \\max(1, \\mathrm{rms}(P m_{hat}) / 1.1)

    The fitted ``P`` minimizes ``E[h^T P h + v^T P^{-1} v]``, so ``P ~ E[h h^T]^{-1/2}`` (Li 2018):
    a whitening preconditioner like Shampoo's, learned by normalized gradient steps on the group
    of triangular matrices (no inverse or root is ever taken). The norm is the spectral norm
    (psgd's cheap lower bound of it) for a triangular ``Q_i`` and the max-norm for a diagonal one,
    so ``eta_Q <= 1`` keeps ``Q_i`` invertible. With probability ``balance_probability`` per fit the
    factors are first rescaled to equal max-norms (``Q`` unchanged). Each update is capped at an
    RMS of 1.1; the learning rate then sets the step length.

    Args:
      b1: momentum decay in ``[0, 1)`` (default 0.9; 0 keeps no momentum, ``mu = None``).
      preconditioner_update_probability: ``p``, a number in ``[0, 1]`` or a schedule of the
        1-based step (default :func:`precond_update_prob_schedule`). Fits happen deterministically
        every ``1 / p`` steps, as in psgd_jax.
      max_size_triangular: dimensions larger than this get a diagonal factor (default 8192).
      min_ndim_triangular: tensors with fewer dimensions get diagonal factors only (default 2,
        so biases are diagonal).
      memory_save_mode: ``None`` (default), ``"one_diag"`` (the largest dimension diagonal) or
        ``"all_diag"``.
      momentum_into_precond_update: fit ``P`` on ``m_hat`` (default True) or on ``g``.
      preconditioner_lr: ``eta_Q`` in ``(0, 1]`` (default 0.1).
      preconditioner_init_scale: ``Q_0 = scale^(1/n) I`` per factor (default 1.0).
      mu_dtype: storage dtype of ``m`` (default: the gradient's).
      precond_dtype: storage dtype of the ``Q_i`` (default: the parameter's).
      max_skew_triangular: a dimension more than this times the second largest one is diagonal
        (default inf; earlier psgd_jax releases).
      preconditioner_damping: ``delta``, noise added to ``h`` relative to ``mean|h|`` so that the
        fit is well posed when ``h`` vanishes (default ``sqrt(float32 eps)``, psgd_jax's; 0 gives the
        undamped pair of Li's original Kron and of ``pytorch_optimizer.Kron``).
      balance_probability: chance of balancing the factors at a fit (default 0.01, psgd_jax's).
      key: an int seed or a PRNG key for the probes (default 0). Step ``count`` draws them with
        :func:`kron_probes`.

    State:
      :class:`ScaleByKronState` (``count``, ``key``, ``mu``, ``Qs_preconditioners``, ``update_counter``).

    Memory and cost: ``sum_i d_i^2`` per tensor for triangular factors (``d_i`` for diagonal ones)
    plus the momentum. A fit costs ``O(sum_i d_i^2 prod_j d_j / d_i)`` like one preconditioning
    (``prod`` over all dims) plus one triangular solve per factor; preconditioning costs two such
    products per step.

    Matches ``psgd_jax.kron.scale_by_kron`` (Evan Walters; commit be95524) with its defaults, except
    that the probes come from ``key`` in the state instead of a fixed seed, a ``balance_probability``
    and ``preconditioner_damping`` that psgd_jax hard-codes are arguments, and matmul precision
    options (GPU/TPU only) and scanned layers are absent. Optax and ``torch.optim`` have no PSGD.

    References:
      Li, "Preconditioned stochastic gradient descent", IEEE TNNLS 2018 (arXiv:1512.04202);
      Li, "Preconditioner on matrix Lie group for SGD", ICLR 2019 (arXiv:1809.10232);
      https://github.com/lixilinx/psgd_torch and https://github.com/evanatyourservice/psgd_jax.
    """
    check_decay(b1, "b1")
    if not callable(preconditioner_update_probability):
        check_closed_unit(preconditioner_update_probability, "preconditioner_update_probability")
    for name, value in (("max_size_triangular", max_size_triangular), ("min_ndim_triangular", min_ndim_triangular)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}.")
    if memory_save_mode not in _MEMORY_SAVE_MODES:
        raise ValueError(f"memory_save_mode must be one of {_MEMORY_SAVE_MODES}, got {memory_save_mode!r}.")
    check_positive(preconditioner_lr, "preconditioner_lr")
    check_closed_unit(preconditioner_lr, "preconditioner_lr")
    check_positive(preconditioner_init_scale, "preconditioner_init_scale")
    check_positive(max_skew_triangular, "max_skew_triangular")
    check_non_negative(preconditioner_damping, "preconditioner_damping")
    check_closed_unit(balance_probability, "balance_probability")

    def layout(leaf):
        return _diagonal_dims(
            tuple(leaf.shape), max_size_triangular, max_skew_triangular, min_ndim_triangular, memory_save_mode
        )

    def init_fn(params):
        check_float_leaves(params)
        qs = jax.tree.map(
            lambda p: _init_factors(p, preconditioner_init_scale, layout(p), precond_dtype), params
        )
        seed = jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key
        mu = tree_zeros_like(params, mu_dtype) if not (isinstance(b1, (int, float)) and b1 == 0) else None
        return ScaleByKronState(zero_step_count(), seed, mu, qs, jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, ScaleByKronState, "scale_by_kron")
        check_trees_match(updates, _leaf_shapes(state.Qs_preconditioners), name="updates",
                          reference_name="psgd_kron state")
        count = saturating_increment(state.count)
        if state.mu is not None:
            mu = jax.tree.map(lambda g, m: moving_average(g, m, b1), updates, state.mu)
            momentum = bias_correction(mu, b1, count)
        else:
            mu, momentum = None, updates
        fit_input = momentum if momentum_into_precond_update else updates

        probability = preconditioner_update_probability
        if callable(probability):
            probability = probability(count)
        counter = state.update_counter + 1
        do_update = counter >= 1.0 / jnp.asarray(probability, jnp.float32)
        counter = jnp.where(do_update, 0, counter)

        flat_qs = jax.tree.structure(updates).flatten_up_to(state.Qs_preconditioners)
        leaves, treedef = jax.tree.flatten(fit_input)

        def fit(flat_qs):
            uniform, probes = kron_probes(state.key, state.count, fit_input)
            balanced = jax.lax.cond(
                uniform < balance_probability, lambda qs: [_balance(q) for q in qs], lambda qs: qs, flat_qs
            )
            new = []
            for qs, h, v in zip(balanced, leaves, jax.tree.leaves(probes), strict=True):
                h = h + (preconditioner_damping * jnp.mean(jnp.abs(h)) * v).astype(h.dtype)
                h, v = h.astype(qs[0].dtype), v.astype(qs[0].dtype)
                lr = jnp.asarray(preconditioner_lr, qs[0].dtype)
                new.append(tuple(q.astype(old.dtype) for q, old in zip(_update_factors(qs, h, v, lr), qs)))
            return new

        flat_qs = jax.lax.cond(do_update, fit, lambda qs: [tuple(q) for q in qs], [tuple(q) for q in flat_qs])

        def precondition(qs, m):
            u = _precondition(qs, m.astype(qs[0].dtype))
            rms = jnp.sqrt(jnp.mean(jnp.square(u)))
            return (u / jnp.maximum(1.0, rms / _MAX_UPDATE_RMS)).astype(jnp.result_type(m))

        new_updates = treedef.unflatten(
            [precondition(qs, m) for qs, m in zip(flat_qs, treedef.flatten_up_to(momentum), strict=True)]
        )
        new_state = ScaleByKronState(
            count=count,
            key=state.key,
            mu=tree_cast(mu, mu_dtype) if mu is not None else None,
            Qs_preconditioners=treedef.unflatten(flat_qs),
            update_counter=counter,
        )
        return new_updates, new_state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def psgd_kron(
    learning_rate: ScalarOrSchedule = 0.001,
    b1: float | jax.Array = 0.9,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn | None = None,
    preconditioner_update_probability: ScalarOrSchedule = _DEFAULT_UPDATE_PROBABILITY,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    memory_save_mode: str | None = None,
    momentum_into_precond_update: bool = True,
    preconditioner_lr: float | jax.Array = 0.1,
    preconditioner_init_scale: float = 1.0,
    mu_dtype: Any = None,
    precond_dtype: Any = None,
    max_skew_triangular: float = float("inf"),
    preconditioner_damping: float | jax.Array = _PRECONDITIONER_DAMPING,
    balance_probability: float = 0.01,
    key: int | jax.Array = 0,
) -> GradientTransformation:
    """PSGD-Kron: SGD with momentum preconditioned by a learned Kronecker-factored ``P = Q^T Q``.

    .. math::

        w_t = w_{t-1} - \\eta_t \\left( \\mathrm{clip}_{1.1}(P_t \\hat m_t) + \\lambda w_{t-1} \\right)

    :func:`scale_by_kron` (the momentum ``m_hat``, the fit of ``P`` and the RMS cap), then decoupled
    weight decay ``lambda`` on the leaves selected by ``weight_decay_mask``, then ``-eta_t``.

    Args:
      learning_rate: ``eta``, a number or a schedule (default 0.001, psgd_jax's).
      b1: momentum decay (default 0.9).
      weight_decay: ``lambda`` >= 0 or a schedule (default 0).
      weight_decay_mask: which leaves to decay (a tree of bools or ``params -> tree``; default all).
      preconditioner_update_probability: see :func:`scale_by_kron`, as for ``max_size_triangular``,
        ``min_ndim_triangular``, ``memory_save_mode``, ``momentum_into_precond_update``,
        ``preconditioner_lr``, ``preconditioner_init_scale``, ``mu_dtype``, ``precond_dtype``,
        ``max_skew_triangular``, ``preconditioner_damping``, ``balance_probability`` and ``key``.

    State:
      ``(ScaleByKronState, AddDecayedWeightsState, ScaleByScheduleState-or-ScaleState)``, the
      states of the chain.

    Matches ``psgd_jax.kron.kron`` with the differences listed in :func:`scale_by_kron`; with
    ``preconditioner_damping=0`` and constant ``p`` it equals ``pytorch_optimizer.Kron`` (which
    caps by ``1.1 / (rms + 1e-6)``) up to that ``1e-6`` (tests/preconditioners/test_psgd_kron.py).

    References:
      Li, "Preconditioned stochastic gradient descent", IEEE TNNLS 2018 (arXiv:1512.04202);
      Li, "Preconditioner on matrix Lie group for SGD", ICLR 2019 (arXiv:1809.10232).
    """
    return chain(
        scale_by_kron(
            b1=b1,
            preconditioner_update_probability=preconditioner_update_probability,
            max_size_triangular=max_size_triangular,
            min_ndim_triangular=min_ndim_triangular,
            memory_save_mode=memory_save_mode,
            momentum_into_precond_update=momentum_into_precond_update,
            preconditioner_lr=preconditioner_lr,
            preconditioner_init_scale=preconditioner_init_scale,
            mu_dtype=mu_dtype,
            precond_dtype=precond_dtype,
            max_skew_triangular=max_skew_triangular,
            preconditioner_damping=preconditioner_damping,
            balance_probability=balance_probability,
            key=key,
        ),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
