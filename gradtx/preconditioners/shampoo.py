"""Shampoo: a Kronecker-factored full-matrix AdaGrad, with the practical choices of Anil et al. 2020.

Each tensor-shaped gradient ``G`` keeps one statistic per dimension (``L = sum G G^T`` and
``R = sum G^T G`` for a matrix) and is preconditioned as ``L^(-1/p) G R^(-1/p)``. Large dimensions
are cut into blocks, small ones merged, and the step is rescaled to the size of a simple diagonal
method's step ("grafting"). Arguments follow Google's ``distributed_shampoo`` (the Optax one in
google-research/scalable_shampoo) with ``beta1, beta2`` spelled ``b1, b2`` as everywhere in gradtx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import MaskOrFn, chain
from gradtx.preconditioners._matrix_roots import (
    ROOT_METHODS,
    BlockPartition,
    check_non_negative_int,
    inverse_pth_root,
    merge_small_dims,
    work_dtype,
)
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.second_order._common import check_choice, check_positive_int
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_trees_match,
    saturating_increment,
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

GRAFT_TYPES = ("sgd", "adagrad", "rmsprop", "adam", "none")
_LETTERS = "abcdefghijklm"  # einsum indices of block dimensions ("n" and "z" are used apart)


class ShampooState(NamedTuple):
    """State of ``scale_by_shampoo`` (the field names of Google's ``ParameterStats``).

    count: int32 number of updates.
    mu: momentum of the Shampoo update, like the parameters.
    diagonal_momentum: momentum of the grafting update, like the parameters; None when
      ``start_preconditioning_step == 0`` (it is then never used).
    diagonal_statistics: the grafting method's sum or average of ``g^2``; None for SGD grafting.
    statistics: per leaf, a tuple with one ``(num_blocks, n, n)`` Kronecker factor per dimension
      (None for a dimension left unpreconditioned); ``()`` for a leaf that takes the grafting step.
    preconditioners: the inverse roots of ``statistics``, same shapes.
    """

    count: jax.Array
    mu: PyTree
    diagonal_momentum: PyTree
    diagonal_statistics: PyTree
    statistics: PyTree
    preconditioners: PyTree


@dataclass(frozen=True)
class _LeafPlan:
    """How one leaf is preconditioned: its merged shape, the blocks, the preconditioned dimensions."""

    merged: tuple[int, ...]
    preconditioned: tuple[bool, ...]
    partition: BlockPartition | None  # None: the leaf takes the grafting step
    exponent: int


def _plan(shape: tuple[int, ...], config: dict) -> _LeafPlan:
    merged = merge_small_dims(shape, config["merge_small_dims_block_size"]) if config["interpret"] else tuple(shape)
    preconditioned = tuple(n <= config["skip_preconditioning_dim_size_gt"] for n in merged)
    if len(shape) < config["skip_preconditioning_rank_lt"] or not any(preconditioned):
        return _LeafPlan(merged, preconditioned, None, 0)
    blocked = tuple(p and n > config["block_size"] for n, p in zip(merged, preconditioned))
    partition = BlockPartition.create(merged, config["block_size"], blocked)
    exponent = config["exponent_override"] or 2 * sum(preconditioned)
    return _LeafPlan(merged, preconditioned, partition, exponent)


def _factor(blocks: jax.Array, axis: int) -> jax.Array:
    """``G_(i) G_(i)^T`` for every block: the contraction over all dimensions but ``axis``."""
    letters = _LETTERS[: blocks.ndim - 1]
    other = letters.replace(letters[axis], "z")
    spec = f"n{letters},n{other}->n{letters[axis]}z"
    return jnp.einsum(spec, blocks, blocks, precision=jax.lax.Precision.HIGHEST)


def _apply(blocks: jax.Array, root: jax.Array, axis: int) -> jax.Array:
    """Multiplies every block by its (symmetric) ``root`` along ``axis``."""
    letters = _LETTERS[: blocks.ndim - 1]
    out = letters.replace(letters[axis], "z")
    spec = f"n{letters},n{letters[axis]}z->n{out}"
    return jnp.einsum(spec, blocks, root, precision=jax.lax.Precision.HIGHEST)


def _check_shampoo_args(args: dict) -> None:
    check_positive_int(args["block_size"], "block_size")
    check_decay(args["b1"], "b1")
    check_closed_unit(args["b2"], "b2")
    check_positive(args["diagonal_epsilon"], "diagonal_epsilon")
    check_non_negative(args["matrix_epsilon"], "matrix_epsilon")
    check_non_negative(args["weight_decay"], "weight_decay")
    check_non_negative_int(args["start_preconditioning_step"], "start_preconditioning_step")
    check_positive_int(args["preconditioning_compute_steps"], "preconditioning_compute_steps")
    check_choice(args["graft_type"], GRAFT_TYPES, "graft_type")
    check_non_negative_int(args["exponent_override"], "exponent_override")
    check_positive_int(args["skip_preconditioning_dim_size_gt"], "skip_preconditioning_dim_size_gt")
    check_non_negative_int(args["skip_preconditioning_rank_lt"], "skip_preconditioning_rank_lt")
    check_positive_int(args["merge_small_dims_block_size"], "merge_small_dims_block_size")
    check_positive(args["inverse_failure_threshold"], "inverse_failure_threshold")
    check_choice(args["root_method"], ROOT_METHODS, "root_method")
    if args["graft_type"] == "adam" and isinstance(args["b2"], (int, float)) and args["b2"] == 1:
        raise ValueError("b2 must be < 1 with graft_type='adam' (its bias correction divides by 1 - b2^t).")


@check_schedule_arguments
def scale_by_shampoo(
    block_size: int = 1024,
    b1: float = 0.9,
    b2: float = 0.999,
    diagonal_epsilon: float = 1e-10,
    matrix_epsilon: float = 1e-6,
    weight_decay: float = 0.0,
    start_preconditioning_step: int = 5,
    preconditioning_compute_steps: int = 1,
    graft_type: str = "sgd",
    nesterov: bool = True,
    exponent_override: int = 0,
    *,
    moving_average_for_momentum: bool = False,
    skip_preconditioning_dim_size_gt: int = 4096,
    skip_preconditioning_rank_lt: int = 2,
    best_effort_shape_interpretation: bool = True,
    merge_small_dims_block_size: int = 4096,
    relative_matrix_epsilon: bool = True,
    inverse_failure_threshold: float = 0.1,
    root_method: str = "newton",
) -> GradientTransformation:
    """Shampoo scaling (Gupta, Koren & Singer 2018; blocked and grafted as in Anil et al. 2020).

    For a leaf with gradient ``G`` of rank ``k`` (after merging small dimensions and cutting each
    dimension ``n > block_size`` into ``ceil(n / block_size)`` near-equal blocks, where Google's
    code cuts blocks of exactly ``block_size`` and a remainder; each block below is treated on its
    own), at step ``t = 0, 1, ...``:

    .. math::
        S^{(i)}_t = \\beta_2 S^{(i)}_{t-1} + w_2\\, G_{(i)} G_{(i)}^T, \\qquad
        S^{(i)}_{-1} = \\epsilon_{m} I, \\qquad w_2 = 1 - \\beta_2 \\ (\\text{or } 1 \\text{ if } \\beta_2 = 1)

        P^{(i)} = (S^{(i)}_t + \\epsilon\\, I)^{-1/p} \\quad\\text{when } t \\bmod
        \\text{preconditioning\\_compute\\_steps} = 0, \\qquad p = 2k \\text{ or exponent\\_override}

        \\tilde G = G \\times_1 P^{(1)} \\cdots \\times_k P^{(k)}
        \\ \\ (\\text{a matrix: } P^{(L)} G P^{(R)}), \\qquad
        D = \\frac{\\|D_{graft}\\|_F}{\\|\\tilde G\\|_F + 10^{-16}}\\, \\tilde G

        m_t = \\beta_1 m_{t-1} + w D, \\qquad
        u_t = w D + \\beta_1 m_t \\ (\\text{nesterov}) \\ \\text{or} \\ m_t, \\qquad
        w = 1 - \\beta_1 \\ \\text{(moving\\_average\\_for\\_momentum) or } 1

    where ``G_(i)`` is ``G`` unfolded along dimension ``i`` and the ridge is
    ``eps = matrix_epsilon * lambda_max(S)`` (``relative_matrix_epsilon``) or ``matrix_epsilon``.
    The grafting step ``D_graft`` is ``G`` (``"sgd"``), ``G / (sqrt(sum g^2) + eps_d)``
    (``"adagrad"``), ``G / (sqrt(v_t) + eps_d)`` with ``v_t = b2 v_{t-1} + w_2 g^2`` (``"rmsprop"``)
    or ``G / (sqrt(v_t / (1 - b2^(t+1))) + eps_d)`` (``"adam"``: Adam's second moment, with momentum
    applied after grafting as in Meta's Distributed Shampoo); ``"none"`` skips the rescaling.
    Before ``start_preconditioning_step`` the update is the grafting step with its own momentum;
    leaves of rank below ``skip_preconditioning_rank_lt`` (default: vectors and scalars) always take
    it. A dimension larger than ``skip_preconditioning_dim_size_gt`` gets the identity instead of a
    factor (and ``p`` counts only the preconditioned dimensions). With ``weight_decay`` ``lambda``
    (coupled, Google's default) ``D <- D + lambda w`` and ``D_graft <- D_graft + lambda w``.

    The default ``p = 2k`` (``L^(-1/4) G R^(-1/4)`` for a matrix) is the exponent of Gupta et al.'s
    regret bound. With ``exponent_override=2`` and ``b2=1`` the full-matrix step
    ``L^(-1/2) G R^(-1/2)`` is the Newton step, up to a scalar, on a quadratic whose Hessian is
    ``B kron A`` when the statistics are ``c A^2`` and ``c' B^2`` (tested on
    ``0.5 tr((X - X*)^T A (X - X*) B)``).

    Inverse roots are computed in the statistics' dtype, at least float32, by ``root_method``:
    ``"newton"`` (default, Google's: coupled Newton iterations, matrix products only, fast on
    accelerators) or ``"eigh"`` (an eigendecomposition, backward stable; exact to rounding, which
    the float64 reference tests use). With JAX 0.10.2 on CPU, programs holding ~20 LAPACK ``eigh``
    calls (Shampoo on the 250K-parameter transformer of ``benchmarks/workloads.py``) were seen to
    stall in XLA's runtime although each call alone takes milliseconds; the Newton path has no
    such calls.
    A root that is not finite (or whose Newton error exceeds ``inverse_failure_threshold``) is
    discarded and the previous preconditioner kept. Recomputation runs under ``lax.cond`` on the
    step count, so the update is one jit-compiled program.

    Args:
      block_size: largest factor; bigger dimensions are split into blocks. Default 1024.
      b1: momentum ``beta_1`` in [0, 1). Default 0.9.
      b2: statistics decay ``beta_2`` in [0, 1]; 1 sums (AdaGrad, the original Shampoo). Default 0.999.
      diagonal_epsilon: ``eps_d`` of the AdaGrad/RMSProp/Adam graft. Default 1e-10.
      matrix_epsilon: ``epsilon_m``, initial statistic and ridge. Default 1e-6.
      weight_decay: coupled decay ``lambda`` (see ``shampoo`` for decoupled). Default 0.
      start_preconditioning_step: first step (0-based) that uses Shampoo. Default 5.
      preconditioning_compute_steps: recompute the roots every this many steps. Default 1.
      graft_type: ``"sgd"`` (default, Google's), ``"adagrad"``, ``"rmsprop"``, ``"adam"``, ``"none"``.
      nesterov: Nesterov momentum (default True).
      exponent_override: ``p`` if > 0, else ``2k``. Default 0.
      moving_average_for_momentum: ``w = 1 - beta_1`` instead of 1. Default False.
      skip_preconditioning_dim_size_gt: identity for larger dimensions. Default 4096.
      skip_preconditioning_rank_lt: leaves of smaller rank take the grafting step. Default 2
        (Google's default 1 preconditions vectors with a full ``n x n`` matrix).
      best_effort_shape_interpretation: merge small dimensions (``(3, 3, 16, 32) -> (144, 32)``)
        up to ``merge_small_dims_block_size`` (default 4096) and drop sizes of 1. Default True.
      relative_matrix_epsilon: ridge relative to ``lambda_max``. Default True.
      inverse_failure_threshold: Newton error above which a root is discarded. Default 0.1.
      root_method: ``"newton"`` (default) or ``"eigh"``.

    State: ``ShampooState(count, mu, diagonal_momentum, diagonal_statistics, statistics,
    preconditioners)``.

    Memory per leaf of shape ``(n_1, ..., n_k)`` (in blocks of ``b``): two copies of the leaf
    (three with a diagonal graft, four before ``start_preconditioning_step`` is 0) plus
    ``2 sum_i n_i min(n_i, b) (prod_{j != i} ceil(n_j / b))`` numbers for statistics and roots.
    Cost per step: ``O(numel * sum_i b_i)`` for the statistics and the preconditioning, plus
    ``O(b^3)`` per factor every ``preconditioning_compute_steps`` steps.

    Matches the update of ``pytorch_optimizer.Shampoo`` (Gupta et al.'s algorithm; tested in
    float64) with ``root_method="eigh"``, ``b2=1``, ``graft_type="none"``,
    ``start_preconditioning_step=0``, ``b1=0``, ``relative_matrix_epsilon=False`` and its
    ``matrix_eps = 2 matrix_epsilon`` (gradtx, like Google, starts the statistics at
    ``epsilon_m I`` and adds ``epsilon_m I`` again as a ridge). Differs from Google's
    ``distributed_shampoo`` in: ``skip_preconditioning_rank_lt`` (2 rather than 1), per-dimension
    identity for a dimension over the cap (Google grafts the whole leaf), and the
    ``"adam"``/``"none"`` grafts.

    References:
      Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML 2018,
      arXiv:1802.09568. Anil, Gupta, Koren, Regan & Singer, "Scalable Second Order Optimization
      for Deep Learning", 2020, arXiv:2002.09018.
    """
    args = dict(locals())
    _check_shampoo_args(args)
    config = {
        "block_size": block_size,
        "merge_small_dims_block_size": merge_small_dims_block_size,
        "interpret": best_effort_shape_interpretation,
        "skip_preconditioning_dim_size_gt": skip_preconditioning_dim_size_gt,
        "skip_preconditioning_rank_lt": skip_preconditioning_rank_lt,
        "exponent_override": exponent_override,
    }
    diagonal = graft_type in ("adagrad", "rmsprop", "adam")
    coupled_decay = not (isinstance(weight_decay, (int, float)) and weight_decay == 0)

    def init_leaf(leaf):
        plan = _plan(tuple(leaf.shape), config)
        if plan.partition is None:
            return (), ()
        dtype = work_dtype(leaf.dtype)
        statistics, roots = [], []
        for n, preconditioned in zip(plan.partition.block_shape, plan.preconditioned):
            if not preconditioned:
                statistics.append(None)
                roots.append(None)
                continue
            eye = jnp.broadcast_to(jnp.eye(n, dtype=dtype), (plan.partition.num_blocks, n, n))
            statistics.append(jnp.asarray(matrix_epsilon, dtype) * eye)
            roots.append(eye)
        return tuple(statistics), tuple(roots)

    def init_fn(params: Params) -> ShampooState:
        check_float_leaves(params)
        leaves, treedef = jax.tree.flatten(params)
        pairs = [init_leaf(leaf) for leaf in leaves]
        return ShampooState(
            count=zero_step_count(),
            mu=tree_zeros_like(params),
            diagonal_momentum=tree_zeros_like(params) if start_preconditioning_step > 0 else None,
            diagonal_statistics=tree_zeros_like(params) if diagonal else None,
            statistics=treedef.unflatten([s for s, _ in pairs]),
            preconditioners=treedef.unflatten([r for _, r in pairs]),
        )

    def graft_step(g, nu, count):
        """``(D_graft, new nu)`` in ``g``'s dtype."""
        if not diagonal:
            return g, nu
        beta2 = cast_like(b2, g)
        if graft_type == "adagrad":
            nu = nu + g * g
            denominator = jnp.sqrt(nu)
        else:
            weight = 1 - beta2 if graft_type == "adam" else jnp.where(beta2 == 1, beta2, 1 - beta2)
            nu = beta2 * nu + weight * g * g
            if graft_type == "adam":
                steps = (count + 1).astype(g.dtype)
                denominator = jnp.sqrt(nu / (1 - beta2**steps))
            else:
                denominator = jnp.sqrt(nu)
        return g / (denominator + cast_like(diagonal_epsilon, g)), nu

    def recompute(statistics, roots, exponents):
        """New inverse roots for every factor; a failed one keeps its previous root."""
        new_roots, previous = [], None
        for stat, old, p in zip(statistics, roots, exponents):
            if previous is not None:
                # One decomposition after the other: XLA's CPU runtime can deadlock running many
                # LAPACK eigh calls at once (seen with ~20 factors in one program).
                previous, stat = jax.lax.optimization_barrier((previous, stat))
            root, error = inverse_pth_root(
                stat,
                p,
                method=root_method,
                matrix_epsilon=matrix_epsilon,
                relative_matrix_epsilon=relative_matrix_epsilon,
            )
            ok = jnp.isfinite(error) & (error < inverse_failure_threshold)
            previous = jnp.where(ok[:, None, None], root.astype(old.dtype), old)
            new_roots.append(previous)
        return new_roots

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_state_type(state, ShampooState, "scale_by_shampoo")
        check_trees_match(updates, state.mu, name="updates", reference_name="shampoo state", context="scale_by_shampoo")
        if coupled_decay and params is None:
            raise ValueError("scale_by_shampoo: weight_decay needs the parameters: call update(grads, state, params).")
        count = state.count
        leaves, treedef = jax.tree.flatten(updates)
        plans = [_plan(tuple(g.shape), config) for g in leaves]
        statistics = treedef.flatten_up_to(state.statistics)
        roots = treedef.flatten_up_to(state.preconditioners)

        # 1. Statistics of every preconditioned factor.
        blocks, new_statistics = [], []
        for g, plan, stats in zip(leaves, plans, statistics):
            if plan.partition is None:
                blocks.append(None)
                new_statistics.append(stats)
                continue
            x = plan.partition.split(g.reshape(plan.merged).astype(work_dtype(g.dtype)))
            blocks.append(x)
            updated = []
            for axis, stat in enumerate(stats):
                if stat is None:
                    updated.append(None)
                    continue
                beta2 = cast_like(b2, stat)
                weight = jnp.where(beta2 == 1, beta2, 1 - beta2)
                updated.append(beta2 * stat + weight * _factor(x, axis))
            new_statistics.append(tuple(updated))

        # 2. Inverse roots, every preconditioning_compute_steps steps (one lax.cond for all factors).
        flat_stats = [s for stats in new_statistics for s in stats if s is not None]
        flat_roots = [r for rs in roots for r in rs if r is not None]
        exponents = [plan.exponent for plan, stats in zip(plans, new_statistics) for s in stats if s is not None]
        if flat_stats:
            if preconditioning_compute_steps == 1:
                flat_roots = recompute(flat_stats, flat_roots, exponents)
            else:
                flat_roots = jax.lax.cond(
                    count % preconditioning_compute_steps == 0,
                    lambda s, r: recompute(s, r, exponents),
                    lambda s, r: list(r),
                    flat_stats,
                    flat_roots,
                )
        flat_roots = iter(flat_roots)
        new_roots = [tuple(None if r is None else next(flat_roots) for r in rs) for rs in roots]

        # 3. Precondition, graft, momentum.
        params_leaves = treedef.flatten_up_to(params) if coupled_decay else [None] * len(leaves)
        mus = treedef.flatten_up_to(state.mu)
        diagonal_momenta = treedef.flatten_up_to(state.diagonal_momentum) if start_preconditioning_step > 0 else None
        nus = treedef.flatten_up_to(state.diagonal_statistics) if diagonal else [None] * len(leaves)
        outputs, new_mu, new_diagonal_momentum, new_nu = [], [], [], []
        for i, (g, plan, x, rs) in enumerate(zip(leaves, plans, blocks, new_roots)):
            # The graft runs in at least float32: in bfloat16, 1 - 0.999^t rounds to 0.
            wide = work_dtype(g.dtype)
            graft, nu = graft_step(g.astype(wide), None if nus[i] is None else nus[i].astype(wide), count)
            graft = graft.astype(g.dtype)
            new_nu.append(None if nu is None else nu.astype(nus[i].dtype))
            if plan.partition is None:
                direction = graft
            else:
                for axis, root in enumerate(rs):
                    if root is not None:
                        x = _apply(x, root, axis)
                preconditioned = plan.partition.merge(x).reshape(g.shape)
                if graft_type != "none":
                    scale = jnp.linalg.norm(graft.astype(preconditioned.dtype)) / (
                        jnp.linalg.norm(preconditioned) + 1e-16
                    )
                    preconditioned = preconditioned * scale
                direction = preconditioned.astype(g.dtype)
            if coupled_decay:
                decay = cast_like(weight_decay, g) * params_leaves[i]
                direction, graft = direction + decay, graft + decay
            beta1 = cast_like(b1, g)
            w = 1 - beta1 if moving_average_for_momentum else jnp.ones([], g.dtype)
            mu = beta1 * mus[i] + w * direction
            new_mu.append(mu)
            momentum, current = mu, direction
            if diagonal_momenta is not None:
                graft_mu = beta1 * diagonal_momenta[i] + w * graft
                new_diagonal_momentum.append(graft_mu)
                run = count >= start_preconditioning_step
                momentum = jnp.where(run, mu, graft_mu)
                current = jnp.where(run, direction, graft)
            outputs.append(w * current + beta1 * momentum if nesterov else momentum)

        new_state = ShampooState(
            count=saturating_increment(count),
            mu=treedef.unflatten(new_mu),
            diagonal_momentum=treedef.unflatten(new_diagonal_momentum) if diagonal_momenta is not None else None,
            diagonal_statistics=treedef.unflatten(new_nu) if diagonal else None,
            statistics=treedef.unflatten(new_statistics),
            preconditioners=treedef.unflatten(new_roots),
        )
        return treedef.unflatten(outputs), new_state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def shampoo(
    learning_rate: ScalarOrSchedule,
    block_size: int = 1024,
    b1: float = 0.9,
    b2: float = 0.999,
    diagonal_epsilon: float = 1e-10,
    matrix_epsilon: float = 1e-6,
    weight_decay: float = 0.0,
    start_preconditioning_step: int = 5,
    preconditioning_compute_steps: int = 1,
    graft_type: str = "sgd",
    nesterov: bool = True,
    exponent_override: int = 0,
    *,
    moving_average_for_momentum: bool = False,
    skip_preconditioning_dim_size_gt: int = 4096,
    skip_preconditioning_rank_lt: int = 2,
    best_effort_shape_interpretation: bool = True,
    merge_small_dims_block_size: int = 4096,
    relative_matrix_epsilon: bool = True,
    inverse_failure_threshold: float = 0.1,
    root_method: str = "newton",
    decoupled_weight_decay: bool = False,
    mask: MaskOrFn | None = None,
) -> GradientTransformation:
    """Shampoo (Gupta et al. 2018, Anil et al. 2020): ``scale_by_shampoo`` then the learning rate.

    .. math::
        w_t = w_{t-1} - \\eta_t\\, u_t \\qquad (u_t \\text{ the update of } \\texttt{scale\\_by\\_shampoo}),

    or, with ``decoupled_weight_decay``, ``w_t = w_{t-1} - eta_t (u_t + lambda w_{t-1})`` (AdamW's
    decay; ``mask`` selects the leaves that decay). Every other argument is ``scale_by_shampoo``'s,
    with the same defaults (Google's ``distributed_shampoo``'s, ``beta1, beta2`` spelled ``b1, b2``).
    The learning rate may be a schedule. Google's ``decoupled_learning_rate=False`` variant (the
    learning rate inside the momentum) is not offered; its ``decoupled_weight_decay`` multiplies the
    decay by ``eta_t^2``, gradtx's by ``eta_t``.

    References:
      Gupta, Koren & Singer 2018, arXiv:1802.09568. Anil et al. 2020, arXiv:2002.09018.
    """
    check_non_negative(learning_rate, "learning_rate")
    check_non_negative(weight_decay, "weight_decay")
    scaling = scale_by_shampoo(
        block_size,
        b1,
        b2,
        diagonal_epsilon,
        matrix_epsilon,
        0.0 if decoupled_weight_decay else weight_decay,
        start_preconditioning_step,
        preconditioning_compute_steps,
        graft_type,
        nesterov,
        exponent_override,
        moving_average_for_momentum=moving_average_for_momentum,
        skip_preconditioning_dim_size_gt=skip_preconditioning_dim_size_gt,
        skip_preconditioning_rank_lt=skip_preconditioning_rank_lt,
        best_effort_shape_interpretation=best_effort_shape_interpretation,
        merge_small_dims_block_size=merge_small_dims_block_size,
        relative_matrix_epsilon=relative_matrix_epsilon,
        inverse_failure_threshold=inverse_failure_threshold,
        root_method=root_method,
    )
    if decoupled_weight_decay:
        return chain(scaling, add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))
    return chain(scaling, scale_by_learning_rate(learning_rate))
