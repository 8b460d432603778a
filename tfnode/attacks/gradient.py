"""White-box gradient attacks: FGSM and PGD (through CleverHans 4.0).

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
                                   check_positive_int, first_success, logits_fn,
                                   per_sample_rngs, per_sample_uniform, project, row_mask,
                                   sample_ids)
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


def _run(gradient, x, y, x_adv, todo, *, eps, step_size, num_steps, norm, clip_min,
         clip_max, early_exit, gradients):
    """One PGD run (one restart) from ``x_adv`` on the samples ``todo``.

    ``x_adv`` is moved in place (every active sample takes every step; with
    ``early_exit`` a sample stops at its first misclassified iterate) and ``gradients``
    counts each sample's gradient evaluations.

    Returns:
      The run's state: ``x_adv`` (its last iterates, the array passed in), ``x_first``
      (each early-exited sample's first adversarial) and ``fooled`` (which exited).
    """
    n = len(x)
    state = {"x_adv": x_adv, "x_first": x_adv.copy(), "fooled": np.zeros(n, bool),
             "active": todo.copy()}
    for _ in range(num_steps):
        idx = np.flatnonzero(state["active"])
        if len(idx) == 0:
            break
        logits, grad = call_active(gradient, idx, n, x_adv, y)
        gradients[idx] += 1
        if early_exit:
            keep = first_success(state, idx, logits, y)
            idx, grad = idx[keep], grad[keep]
        step = optimize_linear(tf.constant(grad), float(step_size), norm)
        moved = tf.clip_by_value(x_adv[idx] + step, clip_min, clip_max)
        x_adv[idx] = project(moved, x[idx], eps=eps, norm=norm, clip_min=clip_min,
                             clip_max=clip_max).numpy()
    return state


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
        state = _run(gradient, x, y, x_adv, todo, eps=eps, step_size=step_size,
                     num_steps=num_steps, norm=norm, clip_min=clip_min, clip_max=clip_max,
                     early_exit=early_exit, gradients=gradients)
        exited |= state["fooled"]
        run_adv = np.where(row_mask(state["fooled"], x.ndim), state["x_first"], x_adv)
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
