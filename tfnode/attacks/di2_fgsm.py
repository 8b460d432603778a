"""DI2-FGSM, Diverse-Input Iterative FGSM (Xie, Zhang, Zhou, Bai, Wang, Ren & Yuille,
CVPR 2019), Linf, with Dong et al. 2018's momentum as an option (M-DI2-FGSM).

Like `tfnode.attacks.gradient`'s attacks it takes any logits callable, inputs in
``[clip_min, clip_max]`` and the TRUE labels, and returns ``x_adv`` within ``eps`` of
``x`` inside the clip range (the shared `project`).
"""

import functools

import numpy as np
import tensorflow as tf

from tfnode.attacks import registry
from tfnode.attacks._utils import (AttackResult, call_active, check_eps, check_positive_int,
                                   first_success, logits_fn, project, row_mask)
from tfnode.errors import TfnodeError


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


@tf.function(autograph=False)
def _diverse_gradient(fn, x, y, seed, resize_rate, diversity_prob):
    """The gradient at T(x) (`input_diversity`), T(x)'s logits, and whether T acted."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        moved = input_diversity(x, resize_rate=resize_rate, diversity_prob=diversity_prob,
                                seed=seed)
        logits = fn(moved)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    # Per sample whether T acted (the draw is the batch's, so all rows agree).
    changed = tf.fill(tf.shape(y), tf.reduce_any(tf.not_equal(moved, x)))
    return logits, tape.gradient(loss, x), changed


def di2_fgsm(model, x, y, *, eps, step_size=0.01, num_steps=40, resize_rate=0.9,
             diversity_prob=0.5, decay=0.0, clip_min=0.0, clip_max=1.0, seed=0,
             ids=None, early_exit=False, return_result=False):
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
      seed: seed of the transforms (step i's transform is drawn from ``(seed, i)``).
      ids: accepted for a uniform call (`pgd`'s); the transforms are drawn per call.
      early_exit: per sample, return the first iterate the model misclassifies and stop
        attacking it. When the step's transform acted, the check costs one forward pass
        of the untransformed iterates (the gradient's logits are T(x_adv)'s).
      return_result: return an `AttackResult` with ``details["gradients"]`` and
        ``details["exited"]`` (as `pgd`).

    Returns:
      ``x_adv`` (float32 tensor of ``x``'s shape), or an `AttackResult`.
    """
    del ids  # no per-sample randomness
    check_eps(eps, clip_min=clip_min, clip_max=clip_max)
    check_eps(step_size, name="step_size", clip_min=clip_min, clip_max=clip_max)
    check_positive_int(num_steps, "num_steps")
    if not 0.0 < resize_rate <= 1.0:
        raise TfnodeError(f"resize_rate must lie in (0, 1], got {resize_rate!r}")
    if not 0.0 <= diversity_prob <= 1.0:
        raise TfnodeError(f"diversity_prob must lie in [0, 1], got {diversity_prob!r}")
    if decay < 0:
        raise TfnodeError(f"decay must be >= 0, got {decay!r}")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    fn = logits_fn(model, per_shape=True)
    n = len(x)
    x_adv, momentum = x.copy(), np.zeros_like(x)
    axes = tuple(range(1, x.ndim))
    state = {"x_adv": x_adv, "x_first": x.copy(), "fooled": np.zeros(n, bool),
             "active": np.ones(n, bool)}
    gradients = np.zeros(n, np.int64)
    for i in range(num_steps):
        idx = np.flatnonzero(state["active"])
        if len(idx) == 0:
            break
        # The transform of step i is drawn from (seed, i) for the whole call: the same
        # for every batch and every subset of it, so dropping samples changes no draw.
        gradient = functools.partial(
            _diverse_gradient, fn, seed=tf.constant([int(seed), i], tf.int64),
            resize_rate=float(resize_rate),
            diversity_prob=tf.constant(diversity_prob, tf.float32))
        logits, grad, changed = call_active(gradient, idx, n, x_adv, y)
        gradients[idx] += 1
        if early_exit:
            if changed.any():  # T(x_adv)'s logits say nothing about x_adv itself
                (logits,) = call_active(lambda v: (fn(v),), idx, n, x_adv)
            keep = first_success(state, idx, logits, y)
            idx, grad = idx[keep], grad[keep]
        if decay > 0:
            l1 = np.mean(np.abs(grad), axis=axes, keepdims=True)
            momentum[idx] = decay * momentum[idx] + grad / np.maximum(l1, 1e-12)
            grad = momentum[idx]
        x_adv[idx] = project(x_adv[idx] + step_size * np.sign(grad), x[idx], eps=eps,
                             clip_min=clip_min, clip_max=clip_max).numpy()
    best = np.where(row_mask(state["fooled"], x.ndim), state["x_first"], x_adv)
    if not return_result:
        return tf.constant(best)
    return AttackResult(x_adv=best, details={"gradients": gradients,
                                             "exited": state["fooled"].copy()})


registry.register(registry.AttackSpec(
    name="di2_fgsm", fn=di2_fgsm, kind="white-box",
    defaults={"step_size": 0.01, "num_steps": 40, "resize_rate": 0.9,
              "diversity_prob": 0.5, "decay": 0.0},
    rules={"step_size": registry.UNIT, "num_steps": registry.COUNT,
           "resize_rate": registry.UNIT, "diversity_prob": registry.PROBABILITY,
           "decay": registry.NONNEGATIVE},
    transferable=True, iterations=lambda options: options["num_steps"], early_exit=True,
    summary="Diverse-Input I-FGSM (random resize and pad); decay > 0: M-DI2-FGSM",
    reference="Xie et al. 2019"))
