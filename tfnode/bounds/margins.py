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


def _elided(model):
    """The model's last layer if the margins can elide it: a linear Dense (of its own
    class) that produces the model's one output; else None."""
    last = model.layers[-1] if model.layers else None
    producer = (model.operations[-1] if getattr(model, "operations", None) else last)
    if (type(last) is keras.layers.Dense and last.activation is keras.activations.linear
            and producer is last and len(model.outputs) == 1):
        return last
    return None


def margin_lower_bounds(model, x, y, eps, clip=(0.0, 1.0)):
    """Lower bounds of ``z_y - z_j``, ``[N, K]`` (0 at ``j = y``), over the ball of
    radius ``eps`` around each ``x`` (within ``clip``), for integer labels ``y``."""
    x = ops.convert_to_tensor(x, "float32")
    y = tf.reshape(tf.cast(y, tf.int32), [-1])
    tf.debugging.assert_equal(tf.shape(y)[0], tf.shape(x)[0],
                              message="one integer label per input")
    box = Box.around(x, eps, clip)
    last = _elided(model)
    if last is None:
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


# A margin's lower bound must clear float32 rounding, which the bounds do not round
# outward (they sum in another order than the model's forward pass): relative to the
# logits' scale.
SLACK = 1e-5


def certified(model, x, y, eps, clip=(0.0, 1.0)):
    """``[N]`` bools: the bounds prove the label's logit the largest over the whole ball,
    each margin's lower bound above `SLACK` times ``1 + max |logit|``."""
    y = tf.reshape(tf.cast(y, tf.int32), [-1])
    lower = margin_lower_bounds(model, x, y, eps, clip) - SLACK * (
        1.0 + tf.reduce_max(tf.abs(model(x, training=False)), axis=1, keepdims=True))
    return tf.reduce_min(tf.where(_own(y, lower), tf.fill(tf.shape(lower), float("inf")), lower),
                         axis=1) > 0
