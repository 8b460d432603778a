"""FAB-T, the targeted Fast Adaptive Boundary attack, Linf (Croce & Hein, "Minimally
distorted adversarial examples with a fast adaptive boundary attack", ICML 2020), as
AutoAttack's standard version runs it (``fab-t``: 9 target classes, 100 iterations, one
run each; fra31/auto-attack, ``fab_base.py`` and ``fab_projections.py``, MIT licence).

FAB minimizes the distance to the decision boundary instead of a loss within a budget:
at each iterate it linearizes the difference of the target's and the true class's
logits, projects both the iterate and the clean input onto that hyperplane within the
box [clip_min, clip_max] (the exact Linf projection, `projection_linf`), steps to a
convex combination of the two projections (weight ``alpha`` <= ``alpha_max`` on the
clean input's, extrapolated by ``eta``), and, once the iterate is misclassified, keeps it
if it is the closest so far and pulls it back towards the input by ``beta``. The eps of
a cell enters only through the verdict (an adversarial counts if its Linf distance is at
most eps) and the random start of restarts after the first (half of eps, as the
reference's), so the attack runs once per eps like the other budgeted attacks.

As in the reference, only the correctly classified samples are attacked and a run's
target is the class with the k-th largest clean logit (k = 2 .. num_targets + 1); the
loop runs on numpy arrays with the logits and gradient compiled, like `tfnode.attacks.apgd`.
"""

import math

import numpy as np
import tensorflow as tf

from tfnode.attacks import registry
from tfnode.attacks._utils import (AttackResult, call_active, check_eps, check_positive_int,
                                   logits_fn, sample_ids)
from tfnode.attacks.apgd import apgd_start
from tfnode.attacks.apgd_t import ranked_classes


def projection_linf(t, w, b):
    """Per row, the smallest-Linf ``d`` with ``w . (t + d) = b`` and ``t + d`` in [0, 1]
    (where the box allows; otherwise the box point that comes closest).

    A port of the reference's ``projection_linf`` (sort the coordinates by how far each
    can move towards the plane, then a bisection for the active set) to numpy, rows
    independent. ``t``, ``w``: ``[N, D]``; ``b``: ``[N]``.
    """
    t = np.asarray(t, np.float64)
    w = np.array(w, np.float64)
    b = np.array(b, np.float64)
    n, dims = w.shape
    sign = np.where(np.sum(w * t, axis=1) - b >= 0, 1.0, -1.0)
    w *= sign[:, None]
    b *= sign
    a = (w < 0).astype(np.float64)
    d = (a - t) * (w != 0)
    p = a - t * (2 * a - 1)
    indp = np.argsort(p, axis=1, kind="stable")
    b = b - np.sum(w * t, axis=1)
    b0 = np.sum(w * d, axis=1)
    indp2 = indp[:, ::-1]
    ws = np.take_along_axis(w, indp2, 1)
    bs2 = -ws * np.take_along_axis(d, indp2, 1)
    s = np.cumsum(np.abs(ws), axis=1)
    sb = np.cumsum(bs2, axis=1) + b0[:, None]
    b2 = sb[:, -1] - s[:, -1] * np.take_along_axis(p, indp[:, :1], 1)[:, 0]
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & ~c_l
    lb = np.zeros(int(c2.sum()))
    ub = np.full_like(lb, dims - 1)
    indp_, sb_, s_, p_, b_ = indp[c2], sb[c2], s[c2], p[c2], b[c2]
    rows = np.arange(len(lb))
    for _ in range(math.ceil(math.log2(dims))):
        middle = np.floor((lb + ub) / 2)
        k = middle.astype(np.int64)
        current = indp_[rows, dims - 1 - k]
        c = b_ - (sb_[rows, k] - s_[rows, k] * p_[rows, current]) > 0
        lb = np.where(c, middle, lb)
        ub = np.where(c, ub, middle)
    lb = lb.astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if c_l.any():
            lmbd = np.maximum((b[c_l] - sb[c_l, -1]) / (-s[c_l, -1]), 0)[:, None]
            d[c_l] = (2 * a[c_l] - 1) * lmbd
        lmbd = np.maximum((b[c2] - sb[c2][rows, lb]) / (-s[c2][rows, lb]), 0)[:, None]
    d[c2] = np.minimum(lmbd, d[c2]) * a[c2] + np.maximum(-lmbd, d[c2]) * (1 - a[c2])
    return d * (w != 0)


@tf.function(autograph=False)
def _difference_and_gradient(fn, x, y, target):
    """``z_target - z_y`` per sample and its input gradient, with the logits."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(fn(x), tf.float32)
        diff = (tf.gather(logits, target, batch_dims=1) - tf.gather(logits, y, batch_dims=1))
        total = tf.reduce_sum(diff)
    return diff, tape.gradient(total, x), logits


def _single_run(fn, x, y, target, todo, *, eps, num_steps, alpha_max, eta, beta, start,
                clip_min, clip_max, early_exit):
    """One FAB-T run on the rows ``todo``: per sample the closest adversarial found and
    its Linf distance (``inf`` where none was found)."""
    n = len(x)
    shape = x.shape[1:]

    def flat(v):
        return np.reshape(v, (len(v), -1))

    best = x.copy()
    dist = np.full(n, np.inf)
    x1 = start.copy()
    active = todo.copy()
    scale = clip_max - clip_min
    for _ in range(num_steps):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        diff, grad, _ = call_active(
            lambda *a: _difference_and_gradient(fn, *a), idx, len(x),
            x1, y, target)
        # The plane z_t - z_y = 0, linearized at x1, in the box's [0, 1] coordinates
        # (the reference's box is [0, 1]).
        g = flat(grad).astype(np.float64) * scale
        u1 = (flat(x1[idx]) - clip_min) / scale
        u0 = (flat(x[idx]) - clip_min) / scale
        plane = -diff.astype(np.float64) + np.sum(g * u1, axis=1)
        d3 = projection_linf(np.concatenate([u1, u0]), np.concatenate([g, g]),
                             np.concatenate([plane, plane]))
        d1, d2 = d3[:len(idx)], d3[len(idx):]
        a0 = np.maximum(np.max(np.abs(d3), axis=1), 1e-8)
        a1, a2 = a0[:len(idx)], a0[len(idx):]
        alpha = np.minimum(np.maximum(a1 / (a1 + a2), 0.0), alpha_max)[:, None]
        u = np.clip((u1 + eta * d1) * (1 - alpha) + (u0 + eta * d2) * alpha, 0.0, 1.0)
        x1[idx] = np.reshape(clip_min + u * scale, (len(idx),) + shape).astype(np.float32)
        logits, = call_active(lambda v: (fn(v),), idx, len(x), x1)
        fooled = np.argmax(logits, axis=-1) != y[idx]
        hit = idx[fooled]
        if len(hit):
            t = np.max(np.abs(flat(x1[hit]) - flat(x[hit])), axis=1)
            closer = t < dist[hit]
            best[hit[closer]] = x1[hit[closer]]
            dist[hit[closer]] = t[closer]
            x1[hit] = (x[hit] + (x1[hit] - x[hit]) * beta).astype(np.float32)
            if early_exit:
                active[hit[dist[hit] <= eps]] = False
    return best, dist


def fab_t(model, x, y, *, eps, num_steps=100, num_targets=9, restarts=1, alpha_max=0.1,
          eta=1.05, beta=0.9, clip_min=0.0, clip_max=1.0, seed=0, ids=None,
          early_exit=False, return_result=False):
    """FAB-T (module docstring): per sample, an adversarial within ``eps`` if any run
    found one, else ``x``.

    Args:
      model: logits callable.
      x: inputs ``[N, ...]`` in ``[clip_min, clip_max]``.
      y: true integer labels ``[N]``.
      eps: Linf budget (the verdict's; restarts after the first start within eps / 2).
      num_steps: iterations per run (AutoAttack: 100).
      num_targets: target classes, the most likely wrong ones in turn (AutoAttack: 9).
      restarts: runs per target (AutoAttack's fab-t: 1; the first from ``x`` itself).
      alpha_max: the largest weight of the clean input's projection (0.1).
      eta: overshoot of the projections (1.05).
      beta: pull-back towards ``x`` after an adversarial iterate (0.9).
      clip_min, clip_max: the input range.
      seed, ids: keys of the random starts (`tfnode.attacks.apgd.apgd_start`).
      early_exit: stop a sample at its first adversarial within ``eps``, and later runs
        attack only the samples no earlier run broke (the reference's outer loop
        always does the latter). The verdict per sample is the same either way.
      return_result: return an `AttackResult` (``is_adv``; ``details["distance"]``,
        the Linf distance of the closest adversarial found, ``inf`` if none).

    Returns:
      ``x_adv`` (float32 tensor of ``x``'s shape) or an `AttackResult`.
    """
    check_eps(eps, clip_min=clip_min, clip_max=clip_max)
    check_positive_int(num_steps, "num_steps")
    check_positive_int(num_targets, "num_targets")
    check_positive_int(restarts, "restarts")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    ids = sample_ids(ids, len(x))
    fn = logits_fn(model, per_shape=True)
    clean, ranked = ranked_classes(fn, x, num_targets)
    correct = np.argmax(clean, axis=-1) == y
    adv, dist = x.copy(), np.full(len(x), np.inf)
    run = 0
    for k in range(2, num_targets + 2):
        for r in range(restarts):
            todo = correct & ((dist > eps) if early_exit else np.ones(len(x), bool))
            if not todo.any():
                break
            start = x if r == 0 else np.asarray(apgd_start(
                x, eps=0.5 * eps, seed=seed * 1000 + run, ids=ids, clip_min=clip_min,
                clip_max=clip_max))
            best, d = _single_run(fn, x, y, ranked[:, -k], todo, eps=eps,
                                  num_steps=num_steps, alpha_max=alpha_max, eta=eta,
                                  beta=beta, start=start, clip_min=clip_min,
                                  clip_max=clip_max, early_exit=early_exit)
            closer = todo & (d < dist)
            adv[closer], dist[closer] = best[closer], d[closer]
            run += 1
    broken = dist <= eps
    x_adv = np.where(np.reshape(broken, (-1,) + (1,) * (x.ndim - 1)), adv, x)
    if not return_result:
        return tf.constant(x_adv)
    return AttackResult(x_adv=x_adv, is_adv=broken, details={"distance": dist})


registry.register(registry.AttackSpec(
    name="fab_t", fn=fab_t, kind="white-box",
    defaults={"num_steps": 100, "num_targets": 9, "restarts": 1, "alpha_max": 0.1,
              "eta": 1.05, "beta": 0.9},
    rules={"num_steps": registry.COUNT, "num_targets": registry.COUNT,
           "restarts": registry.COUNT, "alpha_max": registry.UNIT,
           "eta": registry.NONNEGATIVE, "beta": registry.UNIT},
    early_exit=True, in_audit=True,
    # One gradient (and one forward) per iteration, a run per target and restart.
    iterations=lambda o: o["num_steps"] * o["restarts"] * o["num_targets"],
    summary="FAB-T: the closest adversarial towards each of the num_targets most likely "
            "wrong classes by projections onto the linearized boundary (AutoAttack's fab-t)",
    reference="Croce & Hein 2020 (FAB)"))
