"""White-box gradient attacks: FGSM and PGD (through CleverHans 4.0) and DI2-FGSM.

All take any logits callable (a Keras model, a ``tf.function``, a SavedModel signature
wrapped to return logits), inputs in ``[clip_min, clip_max]`` and the TRUE labels ``y``
(never the model's predictions: that would be the label-leaking variant of Kurakin
et al. 2017), and return ``x_adv`` with ``|x_adv - x|_norm <= eps`` inside the clip
range, enforced by the one shared `project`.
"""

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

from tfnode.attacks import registry
from tfnode.attacks._utils import (check_eps, check_norm, check_positive_int, logits_fn,
                                   project)
from tfnode.errors import TfnodeError


def _inputs(x, y):
    return tf.cast(x, tf.float32), tf.cast(y, tf.int64)


def fgsm(model, x, y, *, eps, norm=np.inf, clip_min=0.0, clip_max=1.0):
    """Fast Gradient (Sign) Method, Goodfellow et al. 2015: ``x + eps * sign(grad)``.

    CleverHans' ``fast_gradient_method`` on the cross-entropy of the true labels
    (``norm=2``: the L2-normalized gradient step instead of the sign).

    Args:
      model: logits callable.
      x: inputs ``[N, ...]`` in ``[clip_min, clip_max]``.
      y: true integer labels ``[N]``.
      eps: perturbation budget in the ``norm``.
      norm: ``np.inf`` or ``2``.
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.

    Returns:
      ``x_adv`` (float32 tensor of ``x``'s shape).
    """
    check_norm(norm)
    check_eps(eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    x, y = _inputs(x, y)
    x_adv = fast_gradient_method(logits_fn(model, per_shape=True), x, float(eps), norm,
                                 clip_min=clip_min, clip_max=clip_max, y=y)
    return project(x_adv, x, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)


def random_start(x, *, eps, norm=np.inf, clip_min=0.0, clip_max=1.0, seed=0):
    """A uniform random point of the ``eps``-ball around ``x`` (Madry et al. 2018's start).

    Seeded (stateless), so an attack run is repeatable.
    """
    seed = tf.constant([int(seed), 0], tf.int64) if np.ndim(seed) == 0 else seed
    shape = tf.shape(x)
    if norm == np.inf:
        delta = tf.random.stateless_uniform(shape, seed, -eps, eps)
    else:  # uniform in the L2 ball: a uniform direction, radius eps * U^(1/d)
        flat = tf.random.stateless_normal((shape[0], tf.reduce_prod(shape[1:])), seed)
        dim = tf.cast(tf.shape(flat)[1], tf.float32)
        radius = eps * tf.random.stateless_uniform((shape[0], 1), seed + 1) ** (1.0 / dim)
        delta = tf.reshape(flat / tf.norm(flat, axis=1, keepdims=True) * radius, shape)
    return project(x + delta, x, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)


def pgd(model, x, y, *, eps, step_size=0.01, num_steps=40, rand_init=True, restarts=1,
        norm=np.inf, clip_min=0.0, clip_max=1.0, seed=0):
    """Projected Gradient Descent, Madry et al. 2018 (Kurakin et al.'s BIM without a start).

    Each step is CleverHans' ``fast_gradient_method`` with budget ``step_size``, followed
    by the projection onto the ``eps``-ball and the clip range: exactly the loop of
    CleverHans' ``projected_gradient_descent`` (tested to agree with it). It is run here
    rather than called because CleverHans' version asserts ``eps_iter <= eps`` and draws
    its random start unseeded; here ``step_size > eps`` is allowed (the projection keeps
    every iterate inside the ball; useful for small eps with the paper's fixed 0.01 step)
    and the start is seeded. The defaults are the paper's: 40 steps of 0.01 (Linf) from
    a random start (Chu et al. 2020, Sec. 4).

    Args:
      model: logits callable.
      x: inputs ``[N, ...]`` in ``[clip_min, clip_max]``.
      y: true integer labels ``[N]``.
      eps: perturbation budget.
      step_size: budget of each FGM step.
      num_steps: number of steps.
      rand_init: start from a uniform random point of the ball (else from ``x``).
      restarts: independent runs from different random starts; per sample, the first
        run that fools the model is kept (else the first run's point). Only meaningful
        with ``rand_init``.
      norm: ``np.inf`` or ``2``.
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.
      seed: seed of the random starts.

    Returns:
      ``x_adv`` (float32 tensor of ``x``'s shape).
    """
    check_norm(norm)
    check_eps(eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    check_eps(step_size, name="step_size", norm=norm, clip_min=clip_min, clip_max=clip_max)
    check_positive_int(num_steps, "num_steps")
    check_positive_int(restarts, "restarts")
    if restarts > 1 and not rand_init:
        raise TfnodeError("restarts > 1 needs rand_init=True (every run would be the same)")
    x, y = _inputs(x, y)
    fn = logits_fn(model, per_shape=True)
    best, fooled = None, None
    for r in range(restarts):
        x_adv = (random_start(x, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max,
                              seed=seed * 1000 + r) if rand_init and eps > 0 else x)
        for _ in range(num_steps):
            x_adv = fast_gradient_method(fn, x_adv, float(step_size), norm,
                                         clip_min=clip_min, clip_max=clip_max, y=y)
            x_adv = project(x_adv, x, eps=eps, norm=norm, clip_min=clip_min,
                            clip_max=clip_max)
        if restarts == 1:
            return x_adv
        now = tf.argmax(fn(x_adv), axis=-1) != y
        if best is None:
            best, fooled = x_adv, now
        else:
            take = now & ~fooled  # keep the first success of each sample
            best = tf.where(tf.reshape(take, (-1,) + (1,) * (len(x.shape) - 1)), x_adv, best)
            fooled = fooled | now
    return best


def input_diversity(x, *, resize_rate, diversity_prob, seed):
    """Xie et al. 2019's random transform T(x): resize to a random smaller size, pad back.

    With probability ``diversity_prob`` the whole batch is resized (nearest neighbour) to
    a random ``r x r`` with ``r`` in ``[resize_rate * H, H)`` and zero-padded at a random
    offset back to ``H x W``; otherwise ``x`` is returned unchanged. Differentiable in x.
    """
    height, width = x.shape[1], x.shape[2]
    low = max(1, int(min(height, width) * resize_rate))
    seeds = tf.random.experimental.stateless_split(seed, 4)
    apply = tf.random.stateless_uniform((), seeds[0]) < diversity_prob
    if low >= min(height, width):  # resize_rate = 1: nothing to resize
        return x
    r = tf.random.stateless_uniform((), seeds[1], low, min(height, width), tf.int32)
    resized = tf.image.resize(x, tf.stack([r, r]), method="nearest")
    top = tf.random.stateless_uniform((), seeds[2], 0, height - r + 1, tf.int32)
    left = tf.random.stateless_uniform((), seeds[3], 0, width - r + 1, tf.int32)
    padded = tf.pad(resized, [[0, 0], [top, height - r - top], [left, width - r - left],
                              [0, 0]])
    padded = tf.ensure_shape(padded, x.shape)
    return tf.cond(apply, lambda: padded, lambda: x)


# Traced once per input shape (a full and a last batch), not relaxed to an unknown batch
# size: an ODE-Net's gradient graph traced for an unknown batch size ran slower
# (benchmarks/README.md).
@tf.function
def _diverse_gradient(fn, x, y, seed, resize_rate, diversity_prob):
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = fn(input_diversity(x, resize_rate=resize_rate,
                                    diversity_prob=diversity_prob, seed=seed))
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    return tape.gradient(loss, x)


def di2_fgsm(model, x, y, *, eps, step_size=0.01, num_steps=40, resize_rate=0.9,
             diversity_prob=0.5, decay=0.0, clip_min=0.0, clip_max=1.0, seed=0):
    """Diverse-Input Iterative FGSM (DI2-FGSM), Xie et al. 2019 (Linf).

    Each of ``num_steps`` steps takes the gradient of the loss at `input_diversity`
    ``(x_adv)`` (a random resize-and-pad with probability ``diversity_prob``) and moves
    ``step_size * sign``; ``decay > 0`` accumulates L1-normalized gradients with that
    momentum first (M-DI2-FGSM, Dong et al. 2018's momentum). With ``diversity_prob=0``
    and ``decay=0`` it is I-FGSM (BIM) exactly. No random start.

    Args:
      model: logits callable.
      x: inputs ``[N, H, W, C]`` in ``[clip_min, clip_max]``.
      y: true integer labels ``[N]``.
      eps: Linf budget.
      step_size: Linf step.
      num_steps: number of steps.
      resize_rate: smallest resize as a fraction of the input size (in (0, 1]).
      diversity_prob: probability of transforming the input at a step.
      decay: momentum factor mu (0: no momentum).
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.
      seed: seed of the transforms.

    Returns:
      ``x_adv`` (float32 tensor of ``x``'s shape).
    """
    check_eps(eps, clip_min=clip_min, clip_max=clip_max)
    check_eps(step_size, name="step_size", clip_min=clip_min, clip_max=clip_max)
    check_positive_int(num_steps, "num_steps")
    if not 0.0 < resize_rate <= 1.0:
        raise TfnodeError(f"resize_rate must lie in (0, 1], got {resize_rate!r}")
    if not 0.0 <= diversity_prob <= 1.0:
        raise TfnodeError(f"diversity_prob must lie in [0, 1], got {diversity_prob!r}")
    if decay < 0:
        raise TfnodeError(f"decay must be >= 0, got {decay!r}")
    x, y = _inputs(x, y)
    fn = logits_fn(model, per_shape=True)
    x_adv, momentum = x, tf.zeros_like(x)
    axes = list(range(1, len(x.shape)))
    for i in range(num_steps):
        grad = _diverse_gradient(fn, x_adv, y, tf.constant([int(seed), i], tf.int64),
                                 float(resize_rate), tf.constant(diversity_prob, tf.float32))
        if decay > 0:
            l1 = tf.reduce_mean(tf.abs(grad), axes, keepdims=True)
            momentum = decay * momentum + grad / tf.maximum(l1, 1e-12)
            grad = momentum
        x_adv = project(x_adv + step_size * tf.sign(grad), x, eps=eps, clip_min=clip_min,
                        clip_max=clip_max)
    return x_adv


def _steps(options):
    return options["num_steps"] * options.get("restarts", 1)


registry.register(registry.AttackSpec(
    name="fgsm", fn=fgsm, kind="white-box", defaults={}, rules={}, seeded=False,
    transferable=True, iterations=lambda options: 1,
    summary="Fast Gradient Sign Method (CleverHans 4.0 fast_gradient_method), Linf",
    reference="Goodfellow, Shlens & Szegedy 2015"))
# The paper's settings (Chu et al. 2020, Sec. 4): 40 steps of 0.01 from a random start.
registry.register(registry.AttackSpec(
    name="pgd", fn=pgd, kind="white-box",
    defaults={"step_size": 0.01, "num_steps": 40, "rand_init": True, "restarts": 1},
    rules={"step_size": registry.UNIT, "num_steps": registry.COUNT,
           "rand_init": registry.BOOL, "restarts": registry.COUNT},
    check=lambda o: ("restarts > 1 needs rand_init (every run would be the same)"
                     if o["restarts"] > 1 and not o["rand_init"] else None),
    transferable=True, iterations=_steps,
    summary="PGD, Linf: CleverHans FGM steps + projection, seeded random start, restarts",
    reference="Madry et al. 2018"))
registry.register(registry.AttackSpec(
    name="di2_fgsm", fn=di2_fgsm, kind="white-box",
    defaults={"step_size": 0.01, "num_steps": 40, "resize_rate": 0.9,
              "diversity_prob": 0.5, "decay": 0.0},
    rules={"step_size": registry.UNIT, "num_steps": registry.COUNT,
           "resize_rate": registry.UNIT, "diversity_prob": registry.PROBABILITY,
           "decay": registry.NONNEGATIVE},
    transferable=True, iterations=_steps,
    summary="Diverse-Input I-FGSM (random resize and pad); decay > 0: M-DI2-FGSM",
    reference="Xie et al. 2019"))
