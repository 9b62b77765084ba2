"""Second-order and curvature-aware optimization.

Curvature oracles (Hessian- and Gauss-Newton-vector products, Hutchinson diagonals, Lanczos and
power-iteration eigenvalues, linear CG), line searches, and the optimizers built on them: Newton,
nonlinear and scaled conjugate gradients, Hessian-free, L-BFGS, equilibrated SGD, Goh's optimal
momentum and a YellowFin-style momentum tuner.

Methods that need the objective take it as a keyword of ``update``:
``tx.update(grads, state, params, value_fn=loss)`` (Hessian-free with Gauss-Newton curvature
takes ``model_fn=`` and ``output_loss_fn=``). ``grads`` must be the gradient of that objective
at ``params``. A whole run fits in one ``jit``::

    import jax, jax.numpy as jnp
    from gradtx import apply_updates
    from gradtx.second_order import lbfgs

    def loss(w):
        return jnp.sum((w - 3.0) ** 2) + jnp.sum(w**4)

    tx = lbfgs()

    @jax.jit
    def run(w):
        def step(carry, _):
            w, state = carry
            value, grad = jax.value_and_grad(loss)(w)
            updates, state = tx.update(grad, state, w, value=value, grad=grad, value_fn=loss)
            return (apply_updates(w, updates), state), None

        return jax.lax.scan(step, (w, tx.init(w)), None, length=20)[0][0]

    run(jnp.zeros(3))  # -> about [1.0, 1.0, 1.0], where 4 w^3 + 2 (w - 3) = 0
"""

from gradtx.second_order.backtracking_linesearch import (
    BacktrackingLinesearchInfo,
    ScaleByBacktrackingLinesearchState,
    scale_by_backtracking_linesearch,
)
from gradtx.second_order.conjugate_gradient import (
    ConjugateGradientState,
    ScaledConjugateGradientState,
    conjugate_gradient,
    scaled_conjugate_gradient,
)
from gradtx.second_order.curvature import (
    ConjugateGradientResult,
    conjugate_gradient_solve,
    extreme_eigenvalues,
    gauss_newton_operator,
    gauss_newton_vector_product,
    hessian_operator,
    hessian_vector_product,
    hutchinson_diagonal,
    lanczos_eigenvalues,
    random_like,
)
from gradtx.second_order.esgd import ESGDState, esgd, scale_by_esgd
from gradtx.second_order.hessian_free import HessianFreeState, hessian_free
from gradtx.second_order.lbfgs import (
    LbfgsState,
    ScaleByLBFGSState,
    lbfgs,
    lbfgs_direction,
    lbfgs_solver,
    scale_by_lbfgs,
    two_loop_recursion,
)
from gradtx.second_order.line_search import LineSearchResult, backtracking_line_search, wolfe_line_search
from gradtx.second_order.linear_algebra import matrix_inverse_pth_root, nnls, power_iteration
from gradtx.second_order.loss_curvature import fisher_diag, hessian_diag, hvp
from gradtx.second_order.minimize import MinimizeResult, minimize
from gradtx.second_order.momentum_tuning import MomentumAutotunerState, momentum_autotuner, optimal_momentum
from gradtx.second_order.newton import NewtonState, newton
from gradtx.second_order.status import SolverStatus
from gradtx.second_order.zoom_linesearch import (
    ScaleByZoomLinesearchState,
    ZoomLinesearchInfo,
    scale_by_zoom_linesearch,
)

__all__ = [
    "ConjugateGradientResult",
    "ConjugateGradientState",
    "ESGDState",
    "HessianFreeState",
    "LbfgsState",
    "LineSearchResult",
    "MinimizeResult",
    "MomentumAutotunerState",
    "NewtonState",
    "ScaledConjugateGradientState",
    "SolverStatus",
    "backtracking_line_search",
    "conjugate_gradient",
    "conjugate_gradient_solve",
    "esgd",
    "extreme_eigenvalues",
    "gauss_newton_operator",
    "gauss_newton_vector_product",
    "hessian_free",
    "hessian_operator",
    "hessian_vector_product",
    "hutchinson_diagonal",
    "lanczos_eigenvalues",
    "lbfgs",
    "lbfgs_direction",
    "minimize",
    "momentum_autotuner",
    "newton",
    "optimal_momentum",
    "power_iteration",
    "random_like",
    "scale_by_esgd",
    "scaled_conjugate_gradient",
    "wolfe_line_search",
    # Optax's names (issue 13).
    "BacktrackingLinesearchInfo",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByLBFGSState",
    "ScaleByZoomLinesearchState",
    "ZoomLinesearchInfo",
    "fisher_diag",
    "hessian_diag",
    "hvp",
    "lbfgs_solver",
    "matrix_inverse_pth_root",
    "nnls",
    "scale_by_backtracking_linesearch",
    "scale_by_lbfgs",
    "scale_by_zoom_linesearch",
    "two_loop_recursion",
]
