"""Muon: momentum orthogonalized by Newton–Schulz iterations, with an Adam fallback.

Each matrix-shaped update is replaced by an approximation of its polar factor ``U V^T`` (for
``M = U S V^T``), computed by a few matrix products; leaves that are not matrices go to AdamW.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp

from gradtx.adam import adamw
from gradtx.base import EmptyState, GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import MaskOrFn, chain, partition
from gradtx.momentum import bias_correction as debias
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_trees_match,
    saturating_increment,
    tree_cast,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import check_decay, check_non_negative, check_schedule_arguments, check_state_type

# Jordan's quintic coefficients (modded-nanogpt): the slope at 0 is 3.4445, so 5 steps lift
# singular values as small as ~1e-3 into [0.7, 1.2] (the output is U S' V^T, S' ~ 1, not U V^T).
_JORDAN_COEFFS = (3.4445, -4.7750, 2.0315)
# One triple per step, the schedule of Ahn et al. 2025 (Dion) and modded-nanogpt.
_DION_COEFFS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
_PRESETS = {"standard": _JORDAN_COEFFS, "dion": _DION_COEFFS}
_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a weight form the matrix that Muon orthogonalizes.

    For ``y = x W`` the ``reduction_axis`` (default 0) is contracted with the input and the
    ``output_axis`` (default 1) indexes the outputs; each may be an int or a tuple of ints, which
    are flattened together. Every other axis is a batch axis: each slice is orthogonalized on its
    own. Matches ``optax.contrib.MuonDimensionNumbers``.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


WeightDimNumOrFn = Union[MuonDimensionNumbers, PyTree, Callable[[Params], PyTree]]


def _is_spec(x: Any) -> bool:
    return x is None or isinstance(x, MuonDimensionNumbers)


def _axes(spec: MuonDimensionNumbers, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    as_tuple = lambda axes: (axes,) if isinstance(axes, int) else tuple(axes)  # noqa: E731
    reduction = tuple(a % ndim for a in as_tuple(spec.reduction_axis))
    output = tuple(a % ndim for a in as_tuple(spec.output_axis))
    return reduction, output


def _fans(shape: tuple[int, ...], spec: MuonDimensionNumbers | None) -> tuple[int, int]:
    """``(fan_in, fan_out)``: the sizes of the reduction and output axes."""
    reduction, output = _axes(spec or MuonDimensionNumbers(), len(shape))
    return math.prod(shape[a] for a in reduction), math.prod(shape[a] for a in output)


def _as_matrices(x: jax.Array, spec: MuonDimensionNumbers | None) -> tuple[jax.Array, Callable]:
    """``x`` as a stack of ``(fan_in, fan_out)`` matrices, and the map back to ``x``'s layout."""
    if x.ndim < 2:
        raise ValueError(f"Muon orthogonalizes leaves of rank >= 2, got shape {x.shape}.")
    reduction, output = _axes(spec or MuonDimensionNumbers(), x.ndim)
    if set(reduction) & set(output):
        raise ValueError(f"MuonDimensionNumbers {spec} uses an axis as both reduction and output axis "
                         f"for shape {x.shape}.")
    batch = tuple(a for a in range(x.ndim) if a not in reduction + output)
    order = batch + reduction + output
    moved_shape = tuple(x.shape[a] for a in order)
    size = lambda axes: math.prod(x.shape[a] for a in axes)  # noqa: E731
    stacked = x.transpose(order).reshape(size(batch), size(reduction), size(output))
    inverse = tuple(order.index(a) for a in range(x.ndim))
    return stacked, lambda y: y.reshape(moved_shape).transpose(inverse)


def _gram(x: jax.Array) -> jax.Array:
    return x @ x.T.conj()


def _quintic_step(x: jax.Array, a: jax.Array, coeffs: jax.Array) -> jax.Array:
    """``X <- c0 X + (c1 A + c2 A^2) X`` with ``A = X X^H``: ``s -> c0 s + c1 s^3 + c2 s^5`` on singular values."""
    return coeffs[0] * x + (coeffs[1] * a + coeffs[2] * (a @ a)) @ x


def _newton_schulz(x: jax.Array, coeffs: jax.Array, steps: int, preconditioning: str, eps: Any) -> jax.Array:
    """Approximate polar factor of one matrix; ``coeffs`` is ``(3,)`` (repeated) or ``(steps, 3)``."""
    transposed = x.shape[0] > x.shape[1]
    if transposed:  # Why: iterate on the smaller Gram matrix X X^H.
        x = x.T
    eps = cast_like(eps, x.real)
    if preconditioning == "frobenius":
        x = x / (jnp.linalg.norm(x) + eps)
    elif preconditioning == "spectral":
        x = x / (jnp.linalg.norm(x, ord=2) + eps)
    coeffs = coeffs.astype(x.dtype)
    num_steps = coeffs.shape[0] if coeffs.ndim == 2 else steps
    for i in range(num_steps):
        step_coeffs = coeffs[i] if coeffs.ndim == 2 else coeffs
        a = _gram(x)
        if i == 0 and preconditioning == "aol":
            # Row scaling by 1/sqrt(sum_j |A_ij|) bounds every singular value by 1 (Boissin et al. 2025).
            s = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(a), axis=-1), eps))[:, None]
            x, a = x * s, a * s * s.T
        elif i == 0 and preconditioning == "schatten":
            # ||X||_{S4} = ||X X^H||_F^(1/2) >= ||X||_2 (Grishina et al. 2025).
            s = jax.lax.rsqrt(jnp.maximum(jnp.linalg.norm(a), eps))
            x, a = x * s, a * s * s
        x = _quintic_step(x, a, step_coeffs)
    return x.T if transposed else x


def _orthogonalize(x, spec, coeffs, steps, preconditioning, eps):
    stacked, restore = _as_matrices(x, spec)
    return restore(jax.vmap(lambda m: _newton_schulz(m, coeffs, steps, preconditioning, eps))(stacked))


def _specs_for(weight_dimension_numbers: WeightDimNumOrFn | None, tree: PyTree) -> PyTree:
    """A tree shaped like ``tree`` whose leaves are each leaf's ``MuonDimensionNumbers`` (or None).

    ``weight_dimension_numbers`` may be a prefix of ``tree`` or a function of it; ``MaskedNode``
    subtrees of ``tree`` (leaves routed elsewhere) stay ``MaskedNode``.
    """
    if weight_dimension_numbers is None:
        return jax.tree.map(lambda _: MuonDimensionNumbers(), tree)
    specs = weight_dimension_numbers(tree) if callable(weight_dimension_numbers) else weight_dimension_numbers
    return jax.tree.map(lambda spec, sub: jax.tree.map(lambda _: spec, sub), specs, tree, is_leaf=_is_spec)


def _coefficients(ns_coeffs: Any, ns_steps: int) -> jax.Array:
    coeffs = jnp.asarray(_PRESETS[ns_coeffs] if isinstance(ns_coeffs, str) else ns_coeffs)
    if coeffs.ndim not in (1, 2) or coeffs.shape[-1] != 3:
        raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got {coeffs.shape}.")
    if coeffs.ndim == 2 and coeffs.shape[0] > ns_steps:
        raise ValueError(f"ns_coeffs has {coeffs.shape[0]} rows, more than ns_steps={ns_steps}.")
    return coeffs


def _check_muon_args(ns_coeffs: Any, ns_steps: Any, beta: Any, eps: Any, preconditioning: str) -> None:
    if isinstance(ns_coeffs, str) and ns_coeffs not in _PRESETS:
        raise ValueError(f"ns_coeffs preset must be one of {sorted(_PRESETS)}, got {ns_coeffs!r}.")
    if not isinstance(ns_steps, int) or isinstance(ns_steps, bool) or ns_steps < 1:
        raise ValueError(f"ns_steps must be a positive int, got {ns_steps!r}.")
    if preconditioning not in _PRECONDITIONINGS:
        raise ValueError(f"preconditioning must be one of {_PRECONDITIONINGS}, got {preconditioning!r}.")
    check_decay(beta, "beta")
    check_non_negative(eps, "eps")


class MuonState(NamedTuple):
    """State of ``scale_by_muon``: step ``count``, momentum ``mu`` and the Newton–Schulz ``ns_coeffs``."""

    count: jax.Array
    mu: PyTree
    ns_coeffs: jax.Array


@check_schedule_arguments
def scale_by_muon(
    ns_coeffs: Any = _JORDAN_COEFFS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: WeightDimNumOrFn | None = None,
    bias_correction: bool = False,
) -> GradientTransformation:
    """Muon scaling (Jordan et al. 2024): Newton–Schulz orthogonalized momentum.

    .. math::
        m_t = \\beta m_{t-1} + (1-\\beta) g_t, \\qquad
        M_t = \\beta m_t + (1-\\beta) g_t \\ \\text{(nesterov)} \\quad\\text{or}\\quad M_t = m_t

        X_0 = M_t / (\\|M_t\\|_F + \\epsilon), \\qquad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k, \\quad A_k = X_k X_k^H, \\qquad u_t = X_K

    ``X_K ~ U S' V^T`` with ``S' ~ 1`` for ``M_t = U S V^T`` (the matrix is transposed first if
    it has more rows than columns). With ``adaptive`` the update is ``<M_t, X_K> X_K``
    (Bernstein et al. 2024). Leaves of rank > 2 are orthogonalized per batch slice as described by
    ``weight_dimension_numbers``.

    Args:
      ns_coeffs: ``(a, b, c)`` repeated ``ns_steps`` times (default Jordan's
        ``(3.4445, -4.7750, 2.0315)``), an ``(n, 3)`` schedule of ``n <= ns_steps`` triples, or a
        preset name ``"standard"`` / ``"dion"``.
      ns_steps: number ``K`` of iterations (default 5); ignored for an ``(n, 3)`` schedule.
      beta: momentum decay in [0, 1). Default 0.95.
      eps: added to the norm before dividing. Default 1e-8.
      mu_dtype: storage dtype of ``m``.
      nesterov: the Nesterov ``M_t`` above (default True).
      adaptive: scale by the dual norm ``<M_t, X_K>`` (default False).
      preconditioning: the normalization before the iterations: ``"frobenius"`` (default, the
        ``X_0`` above), ``"spectral"`` (divide by ``||M||_2``), ``"aol"`` (rows of the first
        iterate scaled by ``(sum_j |A_ij|)^(-1/2)``, Boissin et al. 2025) or ``"schatten"``
        (divide by ``||M M^H||_F^(1/2)``, Grishina et al. 2025).
      weight_dimension_numbers: a ``MuonDimensionNumbers``, a tree of them (a prefix of the
        parameters), or a function of the updates returning one; None treats every leaf as a
        ``(fan_in, fan_out)`` matrix.
      bias_correction: False (default) is Jordan's reference Muon: ``M_t`` as above. True is
        Optax's: ``m_t`` and ``g_t`` are debiased first, as in NAdam:
        ``M_t = beta m_t / (1 - beta^(t+1)) + (1 - beta) g_t / (1 - beta^t)`` (without nesterov
        ``m_t / (1 - beta^t)``, which changes nothing but the weight of ``eps``).

    State: ``MuonState(count, mu=m, ns_coeffs)``.
    Matches ``optax.contrib.scale_by_muon`` with ``bias_correction=True``; with the default it is
    the update of Jordan's ``Muon`` (and ``pytorch_optimizer.Muon``) with ``eps=0``.

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
      https://kellerjordan.github.io/posts/muon/. Bernstein & Newhouse, "Old Optimizer, New Norm:
      An Anthology", 2024, arXiv:2409.20325.
    """
    _check_muon_args(ns_coeffs, ns_steps, beta, eps, preconditioning)
    coeffs = _coefficients(ns_coeffs, ns_steps)

    def init_fn(params: Params) -> MuonState:
        check_float_leaves(params, allow_complex=True)
        return MuonState(zero_step_count(), tree_zeros_like(params, mu_dtype), coeffs)

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, MuonState, "scale_by_muon")
        del params, extra_args
        check_trees_match(updates, state.mu, name="updates", reference_name="muon state")
        specs = _specs_for(weight_dimension_numbers, updates)
        mu = jax.tree.map(lambda g, m: cast_like(beta, m) * m + cast_like(1 - beta, m) * g, updates, state.mu)
        count = saturating_increment(state.count)
        if nesterov:
            m_next = debias(mu, beta, saturating_increment(count)) if bias_correction else mu
            g_now = debias(updates, beta, count) if bias_correction else updates
            mixed = jax.tree.map(lambda m, g: cast_like(beta, m) * m + cast_like(1 - beta, m) * g, m_next, g_now)
        else:
            mixed = debias(mu, beta, count) if bias_correction else mu
        new_updates = jax.tree.map(
            lambda x, spec: _orthogonalize(x, spec, state.ns_coeffs, ns_steps, preconditioning, eps), mixed, specs
        )
        if adaptive:
            new_updates = jax.tree.map(lambda x, o: jnp.sum(x.conj() * o) * o, mixed, new_updates)
        return new_updates, MuonState(count, tree_cast(mu, mu_dtype), state.ns_coeffs)

    return GradientTransformation(init_fn, update_fn)


def _scale_by_shape(weight_dimension_numbers: WeightDimNumOrFn | None, consistent_rms: Any) -> GradientTransformation:
    """``u <- sqrt(max(1, fan_out/fan_in)) u``, or ``sqrt(max(fan_in, fan_out)) consistent_rms u``."""

    def scale(u, spec):
        fan_in, fan_out = _fans(u.shape, spec)
        if consistent_rms is None:
            factor = math.sqrt(max(1.0, fan_out / fan_in))
            return u * cast_like(factor, u.real)
        return u * (math.sqrt(max(fan_in, fan_out)) * cast_like(consistent_rms, u.real))

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(scale, updates, _specs_for(weight_dimension_numbers, updates)), state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = _JORDAN_COEFFS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn | None = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps_root: float = 0.0,
    adam_weight_decay: ScalarOrSchedule = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: WeightDimNumOrFn | None = None,
    consistent_rms: float | None = None,
    bias_correction: bool = False,
) -> GradientTransformation:
    """Muon (Jordan et al. 2024) on matrices, AdamW on every other leaf.

    For a Muon leaf (by default every leaf of rank 2, ``W`` used as ``y = x W``):

    .. math::
        w_t = w_{t-1} - \\eta_t \\left( s \\, \\mathrm{NS}(M_t) + \\lambda w_{t-1} \\right), \\qquad
        s = \\sqrt{\\max(1, \\text{fan\\_out}/\\text{fan\\_in})}

    with ``NS(M_t)`` the orthogonalized momentum of :func:`scale_by_muon`, or
    ``s = sqrt(max(fan_in, fan_out)) * consistent_rms`` when ``consistent_rms`` is given (Liu et
    al. 2025; 0.2 gives AdamW's update RMS). Every other leaf takes
    ``adamw(adam_learning_rate, adam_b1, adam_b2, eps, adam_eps_root, mu_dtype=mu_dtype,
    weight_decay=adam_weight_decay, nesterov=nesterov)``.

    Args:
      learning_rate: ``eta`` (a float or a schedule).
      ns_coeffs, ns_steps, beta, eps, mu_dtype: as in :func:`scale_by_muon` (defaults
        ``(3.4445, -4.7750, 2.0315)``, 5, 0.95, 1e-8, None); ``eps`` is also the AdamW epsilon.
      nesterov, adaptive, preconditioning, bias_correction: as in :func:`scale_by_muon` (defaults
        True, False, ``"frobenius"``, False); ``nesterov`` also selects NAdam for the fallback.
      weight_decay: ``lambda`` of the Muon leaves (decoupled, multiplied by ``eta``). Default 0.
      weight_decay_mask: which Muon leaves decay (a tree of booleans or a function of the params).
      adam_b1, adam_b2, adam_eps_root, adam_weight_decay: the AdamW of the other leaves
        (defaults 0.9, 0.999, 0, 0).
      adam_learning_rate: its learning rate; None (default) uses ``learning_rate``.
      muon_weight_dimension_numbers: a tree (prefix of the params) of ``MuonDimensionNumbers``
        and ``None`` (None = AdamW), or a function of the params returning one. Default: the
        rank-2 leaves with ``MuonDimensionNumbers()``.
      consistent_rms: the RMS-matching factor above, or None (default) for ``s`` above.

    State: ``PartitionState({"muon": MaskedState((MuonState, EmptyState, AddDecayedWeightsState,
    ScaleByScheduleState-or-EmptyState)), "adam": MaskedState(adamw state)})``, as in Optax.
    Matches ``optax.contrib.muon`` with ``bias_correction=True``. With the default, the Muon leaves
    follow Jordan's reference implementation (no debiasing of the Nesterov momentum; the
    difference vanishes as ``beta^t -> 0``); the fallback is Optax's AdamW, where Jordan's code uses
    Adam with betas (0.9, 0.95) and eps 1e-10 (set ``adam_b2``/``eps`` to match it).

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
      https://kellerjordan.github.io/posts/muon/. Liu et al., "Muon is Scalable for LLM
      Training", 2025, arXiv:2502.16982.
    """
    _check_muon_args(ns_coeffs, ns_steps, beta, eps, preconditioning)
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate

    def labels(params: Params) -> PyTree:
        if muon_weight_dimension_numbers is None:
            return jax.tree.map(lambda x: "muon" if jnp.ndim(x) == 2 else "adam", params)
        specs = _specs_for(muon_weight_dimension_numbers, params)
        return jax.tree.map(lambda _, spec: "adam" if spec is None else "muon", params, specs)

    muon_chain = chain(
        scale_by_muon(
            ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov=nesterov, adaptive=adaptive,
            preconditioning=preconditioning, weight_dimension_numbers=muon_weight_dimension_numbers,
            bias_correction=bias_correction,
        ),
        _scale_by_shape(muon_weight_dimension_numbers, consistent_rms),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
    adam_fallback = adamw(
        adam_learning_rate, adam_b1, adam_b2, eps, adam_eps_root, mu_dtype,
        weight_decay=adam_weight_decay, nesterov=nesterov,
    )
    return partition({"muon": muon_chain, "adam": adam_fallback}, labels)


__all__ = ["MuonDimensionNumbers", "MuonState", "muon", "scale_by_muon"]
