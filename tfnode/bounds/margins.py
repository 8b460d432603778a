"""Certificates from interval bounds: margins, worst-case logits, certified flags.

An example ``(x, y)`` is certified at ``eps`` when every point of the L-infinity ball
(within the image range) provably keeps ``z_y > z_j`` for every ``j != y``. As Gowal et
al. 2018 (Sec. 3), the last linear layer is elided: the margins ``z_y - z_j = (w_y -
w_j) . h + b_y - b_j`` are bounded directly from the box of its input ``h``, which is
tighter than subtracting the logits' separate bounds.
"""

import keras
import tensorflow as tf
from keras import ops

from tfnode.bounds.box import Box
from tfnode.bounds.rules import propagate


def logit_bounds(model, x, eps, clip=(0.0, 1.0)):
    """The `Box` of ``model``'s logits over the ball of radius ``eps`` around ``x``."""
    return propagate(model, Box.around(ops.convert_to_tensor(x, "float32"), eps, clip))


def _elidable(layer):
    return (isinstance(layer, keras.layers.Dense)
            and layer.activation is keras.activations.linear)


def margin_lower_bounds(model, x, y, eps, clip=(0.0, 1.0)):
    """Lower bounds of ``z_y - z_j``, ``[N, K]`` (0 at ``j = y``), over the ball of
    radius ``eps`` around each ``x`` (within ``clip``), for integer labels ``y``."""
    x = ops.convert_to_tensor(x, "float32")
    y = tf.cast(y, tf.int32)
    box = Box.around(x, eps, clip)
    last = model.layers[-1]
    if not _elidable(last):
        logits = propagate(model, box)
        lo_y = tf.gather(logits.lo, y, batch_dims=1)[:, None]
        lower = lo_y - logits.hi
    else:
        h = propagate(model, box, stop_before=last)
        kernel = ops.convert_to_tensor(last.kernel)  # [D, K]
        diff = tf.gather(tf.transpose(kernel), y)[:, :, None] - kernel[None]  # [N, D, K]
        center = tf.einsum("nd,ndk->nk", h.center, diff)
        if last.use_bias:
            bias = ops.convert_to_tensor(last.bias)
            center = center + tf.gather(bias, y)[:, None] - bias[None]
        lower = center - tf.einsum("nd,ndk->nk", h.radius, tf.abs(diff))
    # inf - inf in the elided layer: a NaN bound proves nothing (-inf).
    lower = tf.where(tf.math.is_nan(lower), tf.fill(tf.shape(lower), -float("inf")), lower)
    return tf.where(_own(y, lower), tf.zeros_like(lower), lower)


def _own(y, lower):
    return tf.one_hot(tf.cast(y, tf.int32), tf.shape(lower)[1]) > 0.5


def worst_case_logits(model, x, y, eps, clip=(0.0, 1.0)):
    """Gowal et al.'s ``z_hat``: ``z_hat_j`` bounds ``z_j - z_y`` from above (0 at
    ``j = y``); its cross-entropy bounds the loss of every point of the ball."""
    return -margin_lower_bounds(model, x, y, eps, clip)


def certified(model, x, y, eps, clip=(0.0, 1.0)):
    """``[N]`` bools: the bounds prove the label's logit the largest over the whole ball."""
    lower = margin_lower_bounds(model, x, y, eps, clip)
    return tf.reduce_min(tf.where(_own(y, lower), tf.fill(tf.shape(lower), float("inf")), lower),
                         axis=1) > 0
