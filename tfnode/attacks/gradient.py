"""White-box gradient attacks: FGSM and PGD (through CleverHans 4.0) and DI2-FGSM.

All take any logits callable (a Keras model, a ``tf.function``, a SavedModel signature
wrapped to return logits), inputs in ``[clip_min, clip_max]`` and the TRUE labels ``y``
(never the model's predictions: that would be the label-leaking variant of Kurakin
et al. 2017), and return ``x_adv`` with ``|x_adv - x|_norm <= eps`` inside the clip
range, enforced by the one shared `project`.
"""

import functools

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.utils import optimize_linear

from tfnode.attacks import registry
from tfnode.attacks._utils import (AttackResult, call_active, check_eps, check_norm,
                                   check_positive_int, logits_fn, per_sample_rngs,
                                   per_sample_uniform, project, sample_ids)
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


def random_start(x, *, eps, norm=np.inf, clip_min=0.0, clip_max=1.0, seed=0, ids=None):
    """A uniform random point of the ``eps``-ball around ``x`` (Madry et al. 2018's start).

    Seeded per sample: row k is drawn from the key ``(seed, ids[k])`` (`per_sample_rngs`;
    ``ids`` defaults to ``0..N-1``), so a sample's start does not depend on its batch.
    """
    x = np.asarray(x, np.float32)
    ids = sample_ids(ids, len(x))
    if norm == np.inf:
        delta = eps * per_sample_uniform(x.shape[1:], seed=seed, ids=ids, stream=0)
    else:  # uniform in the L2 ball: a uniform direction, radius eps * U^(1/d)
        check_norm(norm)
        dim = int(np.prod(x.shape[1:]))
        rows = []
        for g in per_sample_rngs(seed, ids, stream=0):
            v = g.standard_normal(dim)
            rows.append(v / np.linalg.norm(v) * eps * g.uniform() ** (1.0 / dim))
        delta = np.asarray(rows, np.float32).reshape(x.shape)
    return project(x + delta, x, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)


# Traced once per callable and input shape (the batch and its halvings, `call_active`),
# not relaxed to an unknown batch size: an ODE-Net's gradient graph traced for an unknown
# batch size ran slower (benchmarks/README.md).
@tf.function(autograph=False)
def _ce_gradient(fn, x, y):
    """Logits at ``x`` and the gradient of the cross-entropy of ``y`` (CleverHans'
    ``compute_gradient``, which returns no logits)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = fn(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    return logits, tape.gradient(loss, x)


def _first_success(state, idx, logits, y):
    """Early exit: keeps the iterates of ``idx`` the model misclassifies as their
    adversarials and drops them from the active set; returns the still-active part."""
    wrong = np.argmax(logits, axis=-1) != y[idx]
    done = idx[wrong]
    state["x_first"][done] = state["x_adv"][done]
    state["fooled"][done] = True
    state["active"][done] = False
    return ~wrong


def pgd(model, x, y, *, eps, step_size=0.01, num_steps=40, rand_init=True, restarts=1,
        norm=np.inf, clip_min=0.0, clip_max=1.0, seed=0, ids=None, early_exit=False,
        return_result=False):
    """Projected Gradient Descent, Madry et al. 2018 (Kurakin et al.'s BIM without a start).

    Each step is CleverHans' fast gradient step (its ``optimize_linear`` of the
    cross-entropy gradient) with budget ``step_size``, clipped, then projected onto the
    ``eps``-ball and the clip range: the loop of CleverHans' ``projected_gradient_descent``
    (tested to agree with it). It is run here rather than called because CleverHans'
    version asserts ``eps_iter <= eps``, draws its random start unseeded and runs every
    step on every sample; here ``step_size > eps`` is allowed (the projection keeps every
    iterate inside the ball; useful for small eps with the paper's fixed 0.01 step), the
    start is seeded per sample, and with ``early_exit`` a sample stops at its first
    adversarial. The defaults are the paper's: 40 steps of 0.01 (Linf) from a random
    start (Chu et al. 2020, Sec. 4).

    Args:
      model: logits callable.
      x: inputs ``[N, ...]`` in ``[clip_min, clip_max]``.
      y: true integer labels ``[N]``.
      eps: perturbation budget.
      step_size: budget of each FGM step.
      num_steps: number of steps.
      rand_init: start from a uniform random point of the ball (else from ``x``).
      restarts: independent runs from different random starts; per sample, the first
        run that fools the model is kept (else the first run's point; with
        ``early_exit``, the last run's last iterate, which the caller checks). Only
        meaningful with ``rand_init``.
      norm: ``np.inf`` or ``2``.
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.
      seed: seed of the random starts; restart r of sample k draws from
        ``(seed * 1000 + r, ids[k])``.
      ids: per-sample keys of the random starts (default ``0..N-1``).
      early_exit: per sample, return the first iterate the model misclassifies (seen
        in the logits that come with each gradient, so the check costs nothing) and stop
        attacking it; the remaining samples are attacked in smaller calls (`bucket`).
        Robust accuracy can only go down against the last-iterate convention (False:
        every sample takes every step of a run and the run's last iterate is kept).
      return_result: return an `AttackResult` with ``details["gradients"]`` (gradient
        evaluations per sample) and ``details["exited"]`` (samples returned early).

    Returns:
      ``x_adv`` (float32 tensor of ``x``'s shape), or an `AttackResult`.
    """
    check_norm(norm)
    check_eps(eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    check_eps(step_size, name="step_size", norm=norm, clip_min=clip_min, clip_max=clip_max)
    check_positive_int(num_steps, "num_steps")
    check_positive_int(restarts, "restarts")
    if restarts > 1 and not rand_init:
        raise TfnodeError("restarts > 1 needs rand_init=True (every run would be the same)")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    ids = sample_ids(ids, len(x))
    fn = logits_fn(model, per_shape=True)
    gradient = functools.partial(_ce_gradient, fn)
    n = len(x)
    best, fooled = x.copy(), np.zeros(n, bool)
    gradients, exited = np.zeros(n, np.int64), np.zeros(n, bool)
    for r in range(restarts):
        # Exhaustive: every sample runs every restart (each run's last iterate); early
        # exit: only the samples no earlier run fooled.
        todo = ~fooled if early_exit else np.ones(n, bool)
        if not todo.any():
            break
        x_adv = (random_start(x, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max,
                              seed=seed * 1000 + r, ids=ids).numpy()
                 if rand_init and eps > 0 else x.copy())
        state = {"x_adv": x_adv, "x_first": x_adv.copy(), "fooled": np.zeros(n, bool),
                 "active": todo.copy()}
        for _ in range(num_steps):
            idx = np.flatnonzero(state["active"])
            if len(idx) == 0:
                break
            logits, grad = call_active(gradient, idx, n, x_adv, y)
            gradients[idx] += 1
            if early_exit:
                keep = _first_success(state, idx, logits, y)
                idx, grad = idx[keep], grad[keep]
            step = optimize_linear(tf.constant(grad), float(step_size), norm)
            moved = tf.clip_by_value(x_adv[idx] + step, clip_min, clip_max)
            x_adv[idx] = project(moved, x[idx], eps=eps, norm=norm, clip_min=clip_min,
                                 clip_max=clip_max).numpy()
        exited |= state["fooled"]
        run_adv = np.where(_rows(state["fooled"], x.ndim), state["x_first"], x_adv)
        if restarts == 1:
            best = run_adv
            break
        run_fooled = state["fooled"].copy()
        last_run = r == restarts - 1
        unchecked = np.flatnonzero(todo & ~run_fooled)
        if len(unchecked) and not (early_exit and last_run):
            # Whether the run's last iterate fools the model decides what is kept (and,
            # with early exit, who runs the next restart). The evaluation checks the
            # last run's last iterates itself.
            (logits,) = call_active(lambda v: (fn(v),), unchecked, n, x_adv)
            run_fooled[unchecked] = np.argmax(logits, axis=-1) != y[unchecked]
        if r == 0:
            take = np.ones(n, bool)
        elif early_exit and last_run:
            take = todo  # its first adversarial, or else its last iterate
        else:
            take = todo & run_fooled & ~fooled  # each sample's first success
        best[take] = run_adv[take]
        fooled |= run_fooled & todo
    if not return_result:
        return tf.constant(best)
    return AttackResult(x_adv=best, details={"gradients": gradients, "exited": exited})


def _rows(mask, ndim):
    return np.reshape(mask, (-1,) + (1,) * (ndim - 1))


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
            keep = _first_success(state, idx, logits, y)
            idx, grad = idx[keep], grad[keep]
        if decay > 0:
            l1 = np.mean(np.abs(grad), axis=axes, keepdims=True)
            momentum[idx] = decay * momentum[idx] + grad / np.maximum(l1, 1e-12)
            grad = momentum[idx]
        x_adv[idx] = project(x_adv[idx] + step_size * np.sign(grad), x[idx], eps=eps,
                             clip_min=clip_min, clip_max=clip_max).numpy()
    best = np.where(_rows(state["fooled"], x.ndim), state["x_first"], x_adv)
    if not return_result:
        return tf.constant(best)
    return AttackResult(x_adv=best, details={"gradients": gradients,
                                             "exited": state["fooled"].copy()})


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
    transferable=True, iterations=_steps, early_exit=True,
    summary="PGD, Linf: CleverHans FGM steps + projection, seeded random start, restarts",
    reference="Madry et al. 2018"))
registry.register(registry.AttackSpec(
    name="di2_fgsm", fn=di2_fgsm, kind="white-box",
    defaults={"step_size": 0.01, "num_steps": 40, "resize_rate": 0.9,
              "diversity_prob": 0.5, "decay": 0.0},
    rules={"step_size": registry.UNIT, "num_steps": registry.COUNT,
           "resize_rate": registry.UNIT, "diversity_prob": registry.PROBABILITY,
           "decay": registry.NONNEGATIVE},
    transferable=True, iterations=_steps, early_exit=True,
    summary="Diverse-Input I-FGSM (random resize and pad); decay > 0: M-DI2-FGSM",
    reference="Xie et al. 2019"))
