"""gradtx.nn: pure-function initializers, layers (dense and normalization) and activations.

No framework: an initializer is ``init(key, shape, dtype) -> Array`` and a layer is a
``Layer(init, apply)`` pair of pure functions (see ``gradtx.nn.layer``)::

    import jax
    from gradtx import nn

    hidden, bn, out = nn.dense(784, 256, kernel_init=nn.he_normal()), nn.batch_norm(256), nn.dense(256, 10)
    k1, k2 = jax.random.split(jax.random.key(0))
    (p1, s1), (p2, s2), (p3, s3) = hidden.init(k1), bn.init(None), out.init(k2)

    def forward(params, bn_state, x, train):
        p1, p2, p3 = params
        h, _ = hidden.apply(p1, s1, x, train=train)
        h, bn_state = bn.apply(p2, bn_state, h, train=train)
        logits, _ = out.apply(p3, s3, nn.relu(h), train=train)
        return logits, bn_state

The modules ``nn.initializers``, ``nn.activations``, ``nn.normalization`` and ``nn.layer`` are
attributes too (``nn.initializers.he_normal``); ``nn.dense`` is the layer function, its module
is ``gradtx.nn.dense`` in ``sys.modules``.
"""

from gradtx.nn import activations, initializers, layer, normalization
from gradtx.nn.activations import elu, leaky_relu, maxout, relu, sigmoid, softmax, tanh
from gradtx.nn.dense import dense
from gradtx.nn.initializers import (
    Initializer,
    compute_fans,
    constant,
    delta_orthogonal,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    lecun_normal,
    lecun_uniform,
    normal,
    ones,
    orthogonal,
    truncated_normal,
    uniform,
    variance_scaling,
    zeros,
)
from gradtx.nn.layer import EmptyState, Layer
from gradtx.nn.normalization import (
    BatchNormState,
    BatchRenormState,
    batch_norm,
    batch_renorm,
    fold_batch_norm,
    group_norm,
    instance_norm,
    layer_norm,
    rms_norm,
    weight_norm,
    weight_normalize,
)

__all__ = [
    "BatchNormState",
    "BatchRenormState",
    "EmptyState",
    "Initializer",
    "Layer",
    "activations",
    "batch_norm",
    "batch_renorm",
    "compute_fans",
    "constant",
    "delta_orthogonal",
    "dense",
    "elu",
    "fold_batch_norm",
    "glorot_normal",
    "glorot_uniform",
    "group_norm",
    "he_normal",
    "he_uniform",
    "initializers",
    "instance_norm",
    "layer",
    "layer_norm",
    "lecun_normal",
    "lecun_uniform",
    "leaky_relu",
    "maxout",
    "normal",
    "normalization",
    "ones",
    "orthogonal",
    "relu",
    "rms_norm",
    "sigmoid",
    "softmax",
    "tanh",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "weight_norm",
    "weight_normalize",
    "zeros",
]
