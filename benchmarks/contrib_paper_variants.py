"""The parameter-free methods (and ACProp) on the workloads in their paper / authors' forms, loss at 1/3, 2/3, end.

Evidence for CONTRIB.md's "Why the parameter-free methods fall short on the digits CNN": each named
variant is trained with 3 seeds for the workload's full run; printed: the mean batch loss over the
10% of steps before 1/3, 2/3 and the end of the run, the ratio to tuned AdamW (CONTRIB.md's numbers)
and the held-out loss. Variants not in gradtx (LDoG, DoWG without epsilon, mechanic-pytorch's
Mechanic) are written out here, for measurement only.

    python benchmarks/contrib_paper_variants.py dog ldog dowg dowg_paper      # digits_cnn
    python benchmarks/contrib_paper_variants.py stdlib_char_lm mechanic_pytorch
"""
# ruff: noqa: E731
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import workloads

import gradtx
from gradtx import contrib
from gradtx.base import GradientTransformation

VARIANTS = {
    "adamw0.01": lambda: gradtx.adamw(0.01),
    "dog": lambda: contrib.dog(),
    "dowg": lambda: contrib.dowg(),
    "cocob": lambda: contrib.cocob(),
    "mechanize": lambda: contrib.mechanize(gradtx.adam(1.0)),
    "dadapt": lambda: contrib.dadapt_adamw(),
    "dadapt_nobc": lambda: contrib.dadapt_adamw(bias_correction=False),
    "acprop": lambda: contrib.acprop(1e-3),
}


def ldog(reps_rel=1e-6, eps=1e-8):
    """Layer-wise DoG (dog-optimizer's LDoG): DoG's rule on each leaf."""
    def init(params):
        return (params, jax.tree.map(lambda p: reps_rel * (1 + jnp.linalg.norm(p)), params),
                jax.tree.map(lambda p: jnp.zeros([], p.dtype) + eps, params), jnp.asarray(True))

    def update(g, state, params):
        p0, rbar, G, first = state
        grow = lambda r, p, q: jnp.where(first, r, jnp.maximum(r, jnp.linalg.norm(p - q)))
        rbar = jax.tree.map(grow, rbar, params, p0)
        G = jax.tree.map(lambda s, x: s + jnp.sum(x * x), G, g)
        u = jax.tree.map(lambda r, s, x: -r / jnp.sqrt(s) * x, rbar, G, g)
        return u, (p0, rbar, G, jnp.asarray(False))
    return GradientTransformation(init, update)


def dowg_paper(r_eps_sq=1e-4):
    """DoWG, Algorithm 1 without the denominator epsilon."""
    def init(params):
        return params, jnp.zeros([]), jnp.asarray(r_eps_sq, jnp.float32)

    def update(g, state, params):
        p0, v, r2 = state
        d2 = sum(jnp.sum((p - q) ** 2) for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(p0)))
        r2 = jnp.maximum(r2, d2)
        v = v + r2 * sum(jnp.sum(x * x) for x in jax.tree.leaves(g))
        eta = r2 / jnp.sqrt(v)
        return jax.tree.map(lambda x: -eta * x, g), (p0, v, r2)
    return GradientTransformation(init, update)


def mechanic_pytorch(base, s_decay=0.01, s_init=1e-8, eps=1e-8, n=6):
    """mechanic-pytorch 0.0.1 (store_delta=False): s_0 = 0, m_0 = 1e-6, h not clipped, r clamped at 0."""
    betas = jnp.asarray([1 - 10.0 ** -i for i in range(1, n + 1)])

    def init(params):
        return (base.init(params), params, jnp.zeros([n]), jnp.full([n], 1e-6), jnp.zeros([n]), jnp.zeros([n]))

    def update(g, state, params):
        bstate, ref, s, m, v, r = state
        u, bstate = base.update(g, bstate, params)
        ssum = jnp.sum(s)
        delta = jax.tree.map(lambda p, q: (p - q) / (ssum + eps), params, ref)
        gn = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(g)))
        pn = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(params)))
        h = sum(jnp.sum(d * (x + s_decay * p * ssum * gn / (pn + eps)))
                for d, x, p in zip(jax.tree.leaves(delta), jax.tree.leaves(g), jax.tree.leaves(params)))
        delta = jax.tree.map(jnp.add, delta, u)
        m = jnp.maximum(betas * m, jnp.abs(h))
        v = betas ** 2 * v + h ** 2
        r = jnp.maximum(betas * r - s * h, 0.0)
        s = (m * s_init / n + r) / (jnp.sqrt(v) + eps)
        new = jax.tree.map(lambda q, d: q + d * jnp.maximum(jnp.sum(s), 0.0), ref, delta)
        return jax.tree.map(jnp.subtract, new, params), (bstate, ref, s, m, v, r)
    return GradientTransformation(init, update)


VARIANTS.update({
    "ldog": ldog,
    "dog_reps1e-4": lambda: contrib.dog(init_step=("heuristic", 1e-4)),
    "dowg_paper": dowg_paper,
    "mechanize_sinit1e-8": lambda: contrib.mechanize(gradtx.adam(1.0), s_init=1e-8),
    "mechanic_pytorch": lambda: mechanic_pytorch(gradtx.adam(1.0)),
    "acprop_paper": lambda: contrib.acprop(1e-3, center_on_previous_mu=False),
    "acprop_paper_eps1e-8": lambda: contrib.acprop(1e-3, eps=1e-8, eps_root=1e-8, center_on_previous_mu=False),
    "acprop_eps1e-8": lambda: contrib.acprop(1e-3, eps=1e-8, eps_root=1e-8),
    "acprop_1e-4": lambda: contrib.acprop(1e-4),
    "adabelief1e-3": lambda: gradtx.adabelief(1e-3),
})
VARIANTS.update({
    "acprop_3e-3_eps1e-8": lambda: contrib.acprop(3e-3, eps=1e-8, eps_root=1e-8),
    "acprop_paper_3e-3_eps1e-8": lambda: contrib.acprop(3e-3, eps=1e-8, eps_root=1e-8, center_on_previous_mu=False),
})

def main() -> None:
    names = sys.argv[1:]
    wl = workloads.WORKLOADS[sys.argv[1]]() if sys.argv[1] in workloads.WORKLOADS else workloads.digits_cnn()
    if sys.argv[1] in workloads.WORKLOADS:
        names = names[1:]
    steps = wl.steps
    ADAMW = {"digits_cnn": 0.0026, "stdlib_char_lm": 2.0707}[wl.name]
    for name in names:
        t = time.perf_counter()
        opt = VARIANTS[name]()
        r = workloads.train(wl, opt, (0, 1, 2), steps)
        L = r.losses
        tail = max(1, steps // 10)
        marks = [steps // 3, 2 * steps // 3, steps]
        at = [float(np.mean(L[:, m - tail:m])) for m in marks]
        print(f"{wl.name} {name}: " + " ".join(f"s{m}={a:.4f}" for m, a in zip(marks, at))
              + f" final ratio={at[-1] / ADAMW:.2f}x heldout={float(np.mean(r.eval_loss)):.4f}"
              + f" ({time.perf_counter() - t:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
