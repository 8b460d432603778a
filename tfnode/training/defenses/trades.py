"""TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, ICML 2019).

Loss ``CE(f(x), y) + beta * KL(p(x) || p(x'))`` averaged over the batch, where ``x'``
maximizes the same KL inside the eps ball: it starts at ``x + 0.001 N(0, 1)`` and takes
signed steps, projected onto the ball and the image range, with the model in inference
mode and ``p(x)`` fixed (``trades.py`` of the authors' code, which puts the model in
``eval()`` for the inner loop). In the outer loss both ``p(x)`` and ``p(x')`` carry
gradients, as there. With ``beta = 0`` this is standard training.
"""

import keras
import tensorflow as tf

from tfnode.registry import COUNT, NONNEGATIVE, POSITIVE
from tfnode.training.defenses import registry
from tfnode.training.defenses._inner import ascend, cross_entropy


def kl_divergence(natural_logits, adversarial_logits):
    """Per-sample ``KL(softmax(natural) || softmax(adversarial))``."""
    log_p = tf.nn.log_softmax(natural_logits)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(adversarial_logits)),
                         axis=-1)


def trades_loss(model, x, y, *, seed, eps, step_size, num_steps, beta):
    """TRADES' loss on one batch: ``(CE + beta * KL, the natural logits)``.

    The adversarials enter as constants (the authors' ``x_adv`` is a detached tensor),
    and so does ``p(x)`` of the inner maximization.
    """
    natural = tf.stop_gradient(model(x, training=False))
    start = x + 0.001 * keras.random.normal(tf.shape(x), seed=seed)
    x_adv = tf.stop_gradient(ascend(
        lambda v: tf.reduce_sum(kl_divergence(natural, model(v, training=False))), x, start,
        eps=eps, step_size=step_size, num_steps=num_steps))
    logits = model(x, training=True)
    robust = tf.reduce_mean(kl_divergence(logits, model(x_adv, training=True)))
    return cross_entropy(y, logits) + beta * robust, logits


# MNIST: train_trades_mnist.py (eps 0.3, 40 steps of 0.01, beta 1); CIFAR-10:
# train_trades_cifar10.py (eps 0.031, 10 steps of 0.007, beta 6).
registry.register(registry.DefenseSpec(
    name="trades", fn=trades_loss,
    defaults={"eps": 0.3, "step_size": 0.01, "num_steps": 40, "beta": 1.0},
    dataset_defaults={"cifar10": {"eps": 0.031, "step_size": 0.007, "num_steps": 10,
                                  "beta": 6.0}},
    rules={"eps": NONNEGATIVE, "step_size": POSITIVE, "num_steps": COUNT,
           "beta": NONNEGATIVE},
    summary="CE on clean inputs + beta * KL(clean || adversarial), the KL maximized "
            "inside the Linf ball",
    reference="Zhang et al. 2019 (TRADES)", metrics_on="the clean inputs"))
