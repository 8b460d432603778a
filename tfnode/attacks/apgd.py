"""Auto-PGD (APGD), Croce & Hein, ICML 2020, Linf, untargeted, on the CE or DLR loss.

"Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks" (arXiv:2003.01690): PGD without a step-size parameter. Each step mixes the
projected sign step (weight 0.75) with the previous step (0.25); the step size starts at
``2 * eps`` per sample and is halved at checkpoints where the loss rose in too few of the
steps since the previous one (or where the best loss did not improve since a checkpoint
that did not halve), the iterate then restarting from the highest-loss point. APGD-CE
is the first attack of AutoAttack's standard version; APGD-DLR (the untargeted
Difference of Logits Ratio loss, invariant to shifting and rescaling the logits) is in
its ``plus`` and ``rand`` versions.

Written from the semantics of the authors' reference implementation (fra31/auto-attack,
``autoattack/autopgd_base.py``: ``APGDAttack.attack_single_run``, ``check_oscillation``,
``dlr_loss`` and ``perturb``), and tested against a numpy port of that loop. What
matches it exactly: the random start ``x + eps * t / max|t|`` with ``t`` uniform in
``[-1, 1]``, clipped; the step ``x + (z - x) * a + (x - x_prev) * (1 - a)`` with
``z = P(x + step * sign(grad))``, both projected, ``a = 1`` at the first step and 0.75
after; the checkpoints (first after ``max(int(0.22 n), 1)`` steps, each next one
``max(int(0.03 n), 1)`` steps sooner, down to ``max(int(0.06 n), 1)``); the oscillation
test (the loss rose in at most ``rho * k`` of the window's ``k`` steps, counted as the
reference counts them: at the first checkpoint its first step is compared with a loss
array row not yet written, i.e. with 0); the no-improvement test; halving and restarting
from ``x_best`` with ``grad_best`` (the momentum term then uses ``x_best - x_prev``, as
there); the DLR loss ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``; per
sample, the last iterate of a run that the model misclassified.

Deliberate differences:

* Every run attacks the whole batch. The reference runs only on the points still
  classified correctly (at ``x``, then after each restart) and returns ``x`` itself for
  a point misclassified at ``x``; here the batch shape stays fixed, because an
  ODE-Net's compiled solver step is traced per shape. Each sample's run depends only on
  that sample (per-sample step sizes, checkpoints and bookkeeping; the gradient of the
  summed loss is the per-sample gradient), so the result per sample is the same as on
  the subset, given a model that treats samples independently (for an ODE-Net:
  per-sample solver steps; a step size shared by the batch couples them). Only the
  random draws differ, the start being seeded per batch.
* A sample that no run fooled gets the highest-loss point found (over all runs: the
  reference's ``best_loss`` mode) instead of ``x`` itself. This changes no robust
  accuracy and is a better transfer candidate than the clean input.
* The start is drawn by a seeded stateless TF generator (uniform in ``[-1, 1]``, as
  ``2 * rand - 1``), restart ``r`` from seed ``seed * 1000 + r`` as in tfnode's `pgd`.
* Any clip range ``[clip_min, clip_max]`` (the reference clamps to ``[0, 1]``), through
  the shared `project`: the same point as the reference's max/min/clamp up to rounding.
* Linf only, one gradient per step (no EOT), no zero-gradient warning; ``y`` is
  required (the reference falls back to the model's predictions).
"""

import numpy as np
import tensorflow as tf

from tfnode.attacks import registry
from tfnode.attacks._utils import check_eps, check_positive_int, logits_fn, project
from tfnode.errors import TfnodeError

LOSSES = ("ce", "dlr")


def _ce(logits, y):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)


def _dlr(logits, y):
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
    true = tf.gather(logits, y, batch_dims=1)
    return -(true - other) / (top.values[:, 0] - top.values[:, 2] + 1e-12)


def _gradient_fn(loss_fn):
    # One graph per loss, traced per model callable and input shape (the batch is fixed).
    # autograph=False so that `_dlr`'s TfnodeError reaches the caller as it was raised.
    @tf.function(autograph=False)
    def gradient(fn, x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = tf.cast(fn(x), tf.float32)
            loss = loss_fn(logits, y)
            total = tf.reduce_sum(loss)
        return loss, logits, tape.gradient(total, x)
    return gradient


_GRADIENTS = {"ce": _gradient_fn(_ce), "dlr": _gradient_fn(_dlr)}


def apgd_start(x, *, eps, seed, clip_min=0.0, clip_max=1.0):
    """AutoAttack's Linf start: ``x + eps * t / max|t|``, ``t`` uniform in ``[-1, 1]``.

    Per sample, the largest coordinate of the perturbation is exactly ``eps`` (before the
    clip), unlike `random_start`'s uniform point of the ball. Seeded (stateless).

    Args:
      x: inputs ``[N, ...]`` in ``[clip_min, clip_max]``.
      eps: Linf budget.
      seed: an integer, or a ``[2]`` int64 stateless seed.
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.

    Returns:
      The start (float32 tensor of ``x``'s shape), within ``eps`` and the clip range.
    """
    # Stream 1 of the seed: not the uniform draw of `random_start` (stream 0), so that
    # APGD and PGD in one evaluation start from unrelated points.
    seed = tf.constant([int(seed), 1], tf.int64) if np.ndim(seed) == 0 else seed
    x = tf.convert_to_tensor(x, tf.float32)
    t = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0)
    axes = list(range(1, len(x.shape)))
    t = t / (tf.reduce_max(tf.abs(t), axes, keepdims=True) + 1e-12)
    return project(x + eps * t, x, eps=eps, clip_min=clip_min, clip_max=clip_max)


def _single_run(fn, gradient, x, y, *, eps, num_steps, rho, clip_min, clip_max, seed):
    """One APGD run on the whole batch: ``attack_single_run`` of the reference.

    Returns:
      ``(x_best, loss_best, x_best_adv, fooled)``: per sample the highest-loss point and
      its loss, the last iterate the model misclassified (the start where none was) and
      whether there was one.
    """
    n = int(x.shape[0])
    labels = y.numpy()
    per_sample = (-1,) + (1,) * (len(x.shape) - 1)

    def where(mask, a, b):
        return tf.where(np.reshape(mask, per_sample), a, b)

    def proj(z):
        return project(z, x, eps=eps, clip_min=clip_min, clip_max=clip_max)

    # Checkpoints: the first after 22% of the steps, then each 3% sooner, down to 6%.
    k = max(int(0.22 * num_steps), 1)
    k_min = max(int(0.06 * num_steps), 1)
    k_decrease = max(int(0.03 * num_steps), 1)

    x_adv = apgd_start(x, eps=eps, seed=seed, clip_min=clip_min, clip_max=clip_max)
    loss, logits, grad = gradient(fn, x_adv, y)
    loss = loss.numpy()
    fooled = np.argmax(logits.numpy(), axis=-1) != labels
    x_best, x_best_adv, grad_best, loss_best = x_adv, x_adv, grad, loss.copy()
    step = np.full((n,) + per_sample[1:], 2.0 * eps, np.float32)
    x_prev = x_adv
    loss_steps = np.zeros((num_steps, n), np.float32)
    # As if halved at a check before the first (the reference starts reduced_last_check
    # at ones): there, only the oscillation test can halve.
    halved_last_check = np.ones(n, bool)
    loss_best_last_check = loss_best.copy()
    since_check = 0
    for i in range(num_steps):
        # After a restart from x_best the momentum is x_best - x_prev: x_prev is not
        # reset, as in the reference. The first step has no previous step: a = 1.
        momentum = x_adv - x_prev
        x_prev = x_adv
        a = 0.75 if i > 0 else 1.0
        z = proj(x_adv + step * tf.sign(grad))
        x_adv = proj(x_adv + (z - x_adv) * a + momentum * (1 - a))

        loss, logits, grad = gradient(fn, x_adv, y)
        loss = loss.numpy()
        wrong = np.argmax(logits.numpy(), axis=-1) != labels
        fooled |= wrong
        x_best_adv = where(wrong, x_adv, x_best_adv)
        loss_steps[i] = loss
        better = loss > loss_best
        x_best = where(better, x_adv, x_best)
        grad_best = where(better, grad, grad_best)
        loss_best = np.where(better, loss, loss_best)

        since_check += 1
        if since_check == k:
            # Python's index -1 at the first checkpoint (i = k - 1) is the reference's
            # torch index -1: the last row of loss_steps, still zero unless num_steps = 1.
            rises = sum(loss_steps[i - c] > loss_steps[i - c - 1] for c in range(k))
            halve = (rises <= k * rho) | (~halved_last_check
                                          & (loss_best_last_check >= loss_best))
            halved_last_check = halve
            loss_best_last_check = loss_best.copy()
            if halve.any():
                step[halve] /= 2.0
                x_adv = where(halve, x_best, x_adv)
                grad = where(halve, grad_best, grad)
            k = max(k - k_decrease, k_min)
            since_check = 0
    return x_best, loss_best, x_best_adv, fooled


def apgd(model, x, y, *, eps, num_steps=100, loss="ce", restarts=1, rho=0.75, clip_min=0.0,
         clip_max=1.0, seed=0):
    """Auto-PGD, Croce & Hein 2020, Linf, untargeted (AutoAttack's ``APGDAttack``).

    The defaults are AutoAttack's standard version of APGD-CE: 100 steps, 1 run,
    ``rho = 0.75``. See the module docstring for what matches the reference exactly and
    where this differs.

    Args:
      model: logits callable.
      x: inputs ``[N, ...]`` in ``[clip_min, clip_max]``.
      y: true integer labels ``[N]``.
      eps: Linf budget.
      num_steps: steps (gradient evaluations after the start's) per run.
      loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (Difference of Logits Ratio; needs at
        least 3 classes).
      restarts: runs, each on the whole batch from a new start (seed ``seed * 1000 + r``).
        Per sample the first run that fooled the model is kept (a sample none fooled gets
        the highest-loss point of all runs). AutoAttack restarts only on the points
        still robust; given a model that treats samples independently (for an ODE-Net,
        per-sample solver steps) the result per sample is the same but for the random
        draws, and the batch shape stays fixed (an ODE-Net's compiled solver step is
        traced per shape).
      rho: the oscillation threshold (the reference's ``thr_decr``): the step is halved
        at a checkpoint where the loss rose in at most ``rho`` of the steps since the
        last one.
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.
      seed: seed of the random starts.

    Returns:
      ``x_adv`` (float32 tensor of ``x``'s shape): per sample, where a run saw the model
      misclassify an iterate, that run's last such iterate; otherwise the highest-loss
      point of all runs. (AutoAttack returns ``x`` itself for a sample it did not fool;
      the highest-loss point changes no robust accuracy and is more useful for transfer.)
    """
    check_eps(eps, clip_min=clip_min, clip_max=clip_max)
    check_positive_int(num_steps, "num_steps")
    check_positive_int(restarts, "restarts")
    if loss not in LOSSES:
        raise TfnodeError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if not (isinstance(rho, (int, float, np.integer, np.floating)) and 0.0 < rho < 1.0):
        raise TfnodeError(f"rho must lie in (0, 1), got {rho!r}")
    x, y = tf.cast(x, tf.float32), tf.cast(y, tf.int64)
    fn = logits_fn(model, per_shape=True)
    per_sample = (-1,) + (1,) * (len(x.shape) - 1)
    adv, found, point, point_loss = None, None, None, None
    for r in range(restarts):
        x_best, loss_best, x_best_adv, fooled = _single_run(
            fn, _GRADIENTS[loss], x, y, eps=eps, num_steps=num_steps, rho=float(rho),
            clip_min=clip_min, clip_max=clip_max, seed=seed * 1000 + r)
        if r == 0:
            adv, found, point, point_loss = x_best_adv, fooled, x_best, loss_best
            continue
        new = fooled & ~found  # keep each sample's first success
        adv = tf.where(np.reshape(new, per_sample), x_best_adv, adv)
        found = found | fooled
        higher = loss_best > point_loss
        point = tf.where(np.reshape(higher, per_sample), x_best, point)
        point_loss = np.where(higher, loss_best, point_loss)
    return tf.where(np.reshape(found, per_sample), adv, point)


def apgd_ce(model, x, y, *, eps, **kwargs):
    """APGD on the cross-entropy loss (AutoAttack's ``apgd-ce``); options as `apgd`."""
    return apgd(model, x, y, eps=eps, loss="ce", **kwargs)


def apgd_dlr(model, x, y, *, eps, **kwargs):
    """APGD on the untargeted DLR loss (AutoAttack's ``apgd-dlr``); options as `apgd`.

    Needs at least 3 classes (`TfnodeError` otherwise).
    """
    return apgd(model, x, y, eps=eps, loss="dlr", **kwargs)


def _apgd_spec(name, fn, loss_name):
    return registry.AttackSpec(
        name=name, fn=fn, kind="white-box",
        # AutoAttack's standard version: 100 steps, one run, rho 0.75.
        defaults={"num_steps": 100, "restarts": 1, "rho": 0.75},
        rules={"num_steps": registry.COUNT, "restarts": registry.COUNT,
               "rho": registry.FRACTION},
        transferable=True, in_audit=True,
        # One gradient at the start of each run, then one per step.
        iterations=lambda o: (o["num_steps"] + 1) * o["restarts"],
        summary=f"APGD on the {loss_name}: step 2 eps halved at checkpoints, momentum "
                "0.75, the best point kept (AutoAttack's reference semantics)",
        reference="Croce & Hein 2020")


registry.register(_apgd_spec("apgd_ce", apgd_ce, "cross-entropy"))
registry.register(_apgd_spec("apgd_dlr", apgd_dlr, "DLR loss (>= 3 classes)"))
