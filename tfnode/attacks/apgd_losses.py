"""APGD's losses (Croce & Hein 2020; fra31/auto-attack, ``autopgd_base.py``) and their
compiled per-sample loss, logits and input gradient."""

import tensorflow as tf

from tfnode.errors import TfnodeError

LOSSES = ("ce", "dlr", "dlr_targeted")


def _ce(logits, y, target):
    del target
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)


def _dlr(logits, y, target):
    """The untargeted DLR loss, ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``."""
    num_classes = logits.shape[-1]
    if num_classes is not None and num_classes < 3:
        # Raised while tracing (the class count is static), before any model call.
        raise TfnodeError(f"loss='dlr' needs at least 3 classes (it divides by z_pi1 - "
                          f"z_pi3), the model has {num_classes}")
    top = tf.math.top_k(logits, k=3)
    # The largest logit other than z_y: the second if z_y is the largest, else the first.
    # Which of tied logits top_k ranks first changes no value.
    y_first = tf.cast(top.indices[:, 0] == tf.cast(y, top.indices.dtype), logits.dtype)
    other = top.values[:, 1] * y_first + top.values[:, 0] * (1.0 - y_first)
    del target
    true = tf.gather(logits, y, batch_dims=1)
    return -(true - other) / (top.values[:, 0] - top.values[:, 2] + 1e-12)


def _dlr_targeted(logits, y, target):
    """The targeted DLR loss, ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``
    (the reference's ``dlr_loss_targeted``)."""
    num_classes = logits.shape[-1]
    if num_classes is not None and num_classes < 4:
        raise TfnodeError(f"loss='dlr_targeted' needs at least 4 classes (it divides by "
                          f"z_pi1 - (z_pi3 + z_pi4) / 2), the model has {num_classes}")
    top = tf.math.top_k(logits, k=4).values
    true = tf.gather(logits, y, batch_dims=1)
    aimed = tf.gather(logits, target, batch_dims=1)
    return -(true - aimed) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _gradient_fn(loss_fn):
    # One graph per loss, traced per model callable and input shape (the batch is fixed).
    # autograph=False so that `_dlr`'s TfnodeError reaches the caller as it was raised.
    @tf.function(autograph=False)
    def gradient(fn, x, y, target):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = tf.cast(fn(x), tf.float32)
            loss = loss_fn(logits, y, target)
            total = tf.reduce_sum(loss)
        return loss, logits, tape.gradient(total, x)
    return gradient


GRADIENTS = {"ce": _gradient_fn(_ce), "dlr": _gradient_fn(_dlr),
              "dlr_targeted": _gradient_fn(_dlr_targeted)}
