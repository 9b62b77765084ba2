"""gradtx.microbatching against optax.microbatching and against the unbatched computation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradtx import microbatching as ours

theirs = optax.microbatching
RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(12, 3)))
Y = jnp.asarray(RNG.normal(size=(12,)))


def fun(x, y):
    return x * 2 + y[:, None], jnp.sum(x) * jnp.sum(y), jnp.mean(x, axis=0)


def close(a, b):
    jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-10, atol=1e-14), a, b)


@pytest.mark.parametrize(
    "accumulator, options",
    [
        ("SUM", {}),
        (("CONCAT", "MEAN", "RUNNING_MEAN"), {}),
        (("CONCAT", "SUM", "RUNNING_MEAN"), {"num_real_microbatches": 2}),
    ],
)
def test_microbatch_matches_optax_and_the_full_batch(accumulator, options):
    def resolve(module):
        names = accumulator if isinstance(accumulator, tuple) else (accumulator,)
        types = tuple(getattr(module.AccumulationType, n) for n in names)
        return types if isinstance(accumulator, tuple) else types[0]

    result = ours.microbatch(fun, (0, 1), 3, resolve(ours), **options)(X, Y)
    close(result, theirs.microbatch(fun, (0, 1), 3, resolve(theirs), **options)(X, Y))
    if accumulator == ("CONCAT", "MEAN", "RUNNING_MEAN"):
        full = fun(X, Y)
        close(result[0], full[0])  # CONCAT restores the original row order
        rows = [fun(X[i::4], Y[i::4]) for i in range(4)]  # microbatch i holds rows i, i + 4, i + 8
        close(result[1], sum(r[1] for r in rows) / 4)
        close(result[2], full[2])


def test_keyword_arguments_axes_and_custom_accumulator():
    max_acc = ours.Accumulator(
        init=lambda s: jnp.full(s.shape, -jnp.inf, s.dtype),
        update=lambda c, v, i: jnp.maximum(c, v),
        finalize=lambda c: c,
        aggregate=lambda v: jnp.max(v, axis=0),
    )
    a = jnp.asarray(RNG.normal(size=(6, 8)))
    # Batch axis 1, an unbatched second argument, and a running maximum as the accumulator.
    ours_fn = ours.microbatch(lambda a, shift: jnp.max(a, axis=1) + shift, 0, 2, max_acc, in_axes=(1,))
    np.testing.assert_allclose(ours_fn(a, 1.0), jnp.max(a, axis=1) + 1.0)
    kw = ours.microbatch(lambda x, *, y: jnp.sum(x) + jnp.sum(y), (0,), 4, argnames="y", in_axes=(0, 1))(
        jnp.ones((8, 2)), y=jnp.ones((3, 8))
    )
    assert float(kw) == 40.0


def test_micro_vmap_and_micro_grad_match_optax():
    square = lambda a: a ** 2  # noqa: E731
    close(ours.micro_vmap(square, microbatch_size=4)(X), jax.vmap(square)(X))
    close(ours.micro_vmap(square, microbatch_size=4)(X), theirs.micro_vmap(square, microbatch_size=4)(X))
    scaled = lambda a, s: a * s  # noqa: E731
    close(
        ours.micro_vmap(scaled, (0, None), microbatch_size=3, accumulator=ours.AccumulationType.MEAN)(X, 2.0),
        jnp.mean(X * 2.0, axis=0),
    )

    def loss(w, features, targets):
        return 0.5 * jnp.mean((features @ w - targets) ** 2)

    def build(module, size):
        return module.micro_grad(
            loss, argnums=0, batch_argnums=(1, 2), accumulator=module.AccumulationType.MEAN,
            transform_fn=lambda g: (g, g ** 2), metrics_fn=jnp.linalg.norm, microbatch_size=size,
        )

    w = jnp.asarray([0.3, -0.2, 0.5])
    for size in (None, 4):
        (grad, squared), aux = build(ours, size)(w, X, Y)
        (grad_o, squared_o), aux_o = build(theirs, size)(w, X, Y)
        close((grad, squared, aux.values, aux.metrics), (grad_o, squared_o, aux_o.values, aux_o.metrics))
        per_example = jnp.stack([jax.grad(loss)(w, X[i : i + 1], Y[i : i + 1]) for i in range(12)])
        close(grad, per_example.mean(0))
        close(squared, (per_example ** 2).mean(0))
        close(aux.metrics, jnp.linalg.norm(per_example, axis=1))


def test_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        ours.microbatch(fun, (0, 1), 5)(X, Y)
    with pytest.raises(ValueError, match="one size"):
        ours.microbatch(fun, (0, 1), 3)(X, Y[:6])
    with pytest.raises(ValueError, match="microbatch_size"):
        ours.microbatch(fun, 0, 0)
    with pytest.raises(ValueError, match="floating-point"):
        ours.microbatch(lambda x: x, 0, 2, ours.AccumulationType.MEAN)(jnp.arange(4))
    with pytest.raises(ValueError, match="Unknown accumulator"):
        ours.microbatch(lambda x: x, 0, 2, "sum")(X)
    with pytest.raises(NotImplementedError, match="out_axes"):
        ours.micro_vmap(jnp.sin, out_axes=1)
    assert ours.microbatch(fun, 0, None) is fun
