"""What the defenses share: the in-graph signed-gradient ascent inside an eps ball, and
cross-entropy on logits.

The evaluation's attacks (`tfnode.attacks`) run eagerly over numpy batches; a defense's
inner maximization runs inside the training loop's compiled step (``fit``'s train
function, or a custom loop's), so it is a ``tf.while_loop``. Both project with the one
projection, `tfnode.attacks.project`.
"""

import tensorflow as tf

from tfnode.attacks import project


def cross_entropy(y, logits):
    """Mean sparse softmax cross-entropy over the batch."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(y, tf.int32), logits=logits))


def ascend(objective, x, start, *, eps, step_size, num_steps, clip_min=0.0, clip_max=1.0):
    """``num_steps`` steps ``x' <- P(x' + step_size * sign(grad objective(x')))``.

    ``P`` projects onto the Linf ball of radius ``eps`` around ``x`` and the input range
    (`tfnode.attacks.project`). Each iterate is stop-gradient'd; a loss function still
    wraps the result in ``tf.stop_gradient``, so that the training loop's tape never
    differentiates the ``tf.while_loop`` itself.

    Args:
      objective: ``objective(x_adv) -> scalar`` to increase.
      x: the clean batch.
      start: the first iterate (not projected: TRADES starts just outside the ball).
      eps: the Linf radius.
      step_size: the signed step.
      num_steps: steps (0 returns ``start``).
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.
    """
    def body(i, x_adv):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            value = objective(x_adv)
        step = step_size * tf.sign(tape.gradient(value, x_adv))
        return i + 1, tf.stop_gradient(project(x_adv + step, x, eps=eps, clip_min=clip_min,
                                               clip_max=clip_max))

    _, x_adv = tf.while_loop(lambda i, _: i < num_steps, body,
                             (tf.constant(0), tf.stop_gradient(start)))
    return x_adv
