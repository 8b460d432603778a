"""PGD adversarial training (Madry, Makelov, Schmidt, Tsipras & Vladu, ICLR 2018).

Each batch is replaced by its PGD adversarials (random start uniform in the eps ball,
signed steps, projection onto the ball and the image range), and the model is trained
on those alone with cross-entropy. The attack runs with ``training=True``: Madry et
al.'s code and Rice et al. 2020's PyTorch reimplementation attack the model in training
mode (BatchNorm on batch statistics).
"""

import keras
import tensorflow as tf

from tfnode.registry import BOOL, COUNT, NONNEGATIVE, POSITIVE
from tfnode.training.defenses import registry
from tfnode.training.defenses._inner import ascend, cross_entropy


def pgd_at_loss(model, x, y, *, seed, eps, step_size, num_steps, rand_init):
    """PGD-AT's loss on one batch: ``(cross-entropy at the adversarials, their logits)``.

    Madry et al.'s min-max objective, with the inner max by PGD: the adversarials enter
    as constants (Danskin's theorem: the gradient of the max is the loss's gradient at
    the maximizer), so the training loop's tape never differentiates the attack.
    """
    start = x
    if rand_init:
        start = tf.clip_by_value(x + keras.random.uniform(tf.shape(x), -eps, eps, seed=seed),
                                 0.0, 1.0)
    x_adv = tf.stop_gradient(ascend(lambda v: cross_entropy(y, model(v, training=True)), x,
                                    start, eps=eps, step_size=step_size,
                                    num_steps=num_steps))
    logits = model(x_adv, training=True)
    return cross_entropy(y, logits), logits


# MNIST: Madry et al.'s mnist_challenge config (eps 0.3, 40 steps of 0.01, random start).
# CIFAR-10: the paper's 7 steps of 2/255 within 8/255 (their cifar10_challenge config
# uses 10 steps; set pgd_at.num_steps=10 for it).
registry.register(registry.DefenseSpec(
    name="pgd_at", fn=pgd_at_loss,
    defaults={"eps": 0.3, "step_size": 0.01, "num_steps": 40, "rand_init": True},
    dataset_defaults={"cifar10": {"eps": 8 / 255, "step_size": 2 / 255, "num_steps": 7}},
    rules={"eps": NONNEGATIVE, "step_size": POSITIVE, "num_steps": COUNT, "rand_init": BOOL},
    summary="train on PGD adversarials only (random start, signed steps, Linf ball)",
    reference="Madry et al. 2018"))
