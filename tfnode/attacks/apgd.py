"""Auto-PGD (APGD), Croce & Hein, ICML 2020, Linf, on the CE or DLR loss (untargeted)
and on the targeted DLR loss (APGD-T, `apgd_t`).

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

* The gradient is computed on the samples still attacked only, in calls of the batch
  size or its halvings (a few traced shapes). Without ``early_exit`` every run
  attacks every sample (the reference restarts only on the points still classified
  correctly, which ``early_exit`` does); with it a sample also leaves a run at its
  first misclassified iterate (the reference runs to the end and keeps the last).
  Each sample's run depends only on that sample (per-sample step sizes, checkpoints
  and bookkeeping; the gradient of the summed loss is the per-sample gradient; its
  start keyed by its id), so given a model that treats samples independently (for an
  ODE-Net: per-sample solver steps) dropping samples changes no sample's run.
* A sample that no run fooled gets the highest-loss point found (over all runs: the
  reference's ``best_loss`` mode) instead of ``x`` itself. This changes no robust
  accuracy and is a better transfer candidate than the clean input.
* The start is drawn per sample from numpy's generator keyed by ``(seed, id)``
  (uniform in ``[-1, 1]``, as ``2 * rand - 1``), restart ``r`` from seed
  ``seed * 1000 + r`` as in tfnode's `pgd`.
* Any clip range ``[clip_min, clip_max]`` (the reference clamps to ``[0, 1]``), through
  the shared `project`: the same point as the reference's max/min/clamp up to rounding.
* Linf only, one gradient per step (no EOT), no zero-gradient warning; ``y`` is
  required (the reference falls back to the model's predictions).
"""

import functools

import numpy as np
import tensorflow as tf

from tfnode.attacks import registry
from tfnode.attacks.apgd_losses import GRADIENTS, LOSSES
from tfnode.attacks._utils import (AttackResult, call_active, check_eps, check_positive_int,
                                   logits_fn, per_sample_uniform, project, sample_ids)
from tfnode.errors import TfnodeError

def apgd_start(x, *, eps, seed, ids=None, clip_min=0.0, clip_max=1.0):
    """AutoAttack's Linf start: ``x + eps * t / max|t|``, ``t`` uniform in ``[-1, 1]``.

    Per sample, the largest coordinate of the perturbation is exactly ``eps`` (before the
    clip), unlike `random_start`'s uniform point of the ball. Seeded per sample: row k
    from the key ``(seed, ids[k])`` (`tfnode.attacks._utils.per_sample_rngs`), so a
    sample's start does not depend on its batch.

    Args:
      x: inputs ``[N, ...]`` in ``[clip_min, clip_max]``.
      eps: Linf budget.
      seed: an integer >= 0.
      ids: per-sample keys (default ``0..N-1``).
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.

    Returns:
      The start (float32 tensor of ``x``'s shape), within ``eps`` and the clip range.
    """
    x = np.asarray(x, np.float32)
    # Stream 1: not the uniform draw of `random_start` (stream 0), so that APGD and PGD
    # in one evaluation start from unrelated points.
    t = per_sample_uniform(x.shape[1:], seed=seed, ids=sample_ids(ids, len(x)), stream=1)
    t = t / (np.max(np.abs(t), axis=tuple(range(1, x.ndim)), keepdims=True) + 1e-12)
    return project(x + eps * t, x, eps=eps, clip_min=clip_min, clip_max=clip_max)


class _Checkpoints:
    """The reference's checkpoints (``counter3``, ``k``, ``reduced_last_check``,
    ``loss_best_last_check`` and ``check_oscillation`` in ``attack_single_run``): the first
    after 22% of the steps, each next one 3% sooner, down to 6%. At one, a sample halves
    its step if the loss rose in at most ``rho * k`` of the ``k`` steps since the last, or
    if it did not halve at the last one and its best loss did not improve since.
    """

    def __init__(self, num_steps, rho, loss_best):
        self.k, self.since_check, self.rho = max(int(0.22 * num_steps), 1), 0, rho
        self.k_min = max(int(0.06 * num_steps), 1)
        self.k_decrease = max(int(0.03 * num_steps), 1)
        # As if halved at a check before the first (the reference starts
        # reduced_last_check at ones): there, only the oscillation test can halve.
        self.halved_last_check = np.ones(len(loss_best), bool)
        self.loss_best_last_check = loss_best.copy()

    def after_step(self, i, loss_steps, loss_best):
        """None between checkpoints; at one (after step ``i``), the samples that halve."""
        self.since_check += 1
        if self.since_check != self.k:
            return None
        k = self.k
        # Python's index -1 at the first checkpoint (i = k - 1) is the reference's torch
        # index -1: the last row of loss_steps, still zero unless num_steps = 1.
        rises = sum(loss_steps[i - c] > loss_steps[i - c - 1] for c in range(k))
        halve = (rises <= k * self.rho) | (~self.halved_last_check
                                           & (self.loss_best_last_check >= loss_best))
        self.halved_last_check, self.loss_best_last_check = halve, loss_best.copy()
        self.k, self.since_check = max(k - self.k_decrease, self.k_min), 0
        return halve


def _single_run(fn, gradient, x, y, target, *, eps, num_steps, rho, clip_min, clip_max, seed,
                ids, todo, early_exit, gradients):
    """One APGD run on the samples ``todo``: ``attack_single_run`` of the reference.

    Every sample's bookkeeping is its own (step size, checkpoints, best point), so the
    gradient is computed on the samples still attacked only (`call_active`); with
    ``early_exit`` a sample leaves at its first misclassified iterate.

    Returns:
      ``(x_best, loss_best, x_best_adv, fooled)``: per sample the highest-loss point and
      its loss, the last iterate the model misclassified (the first with
      ``early_exit``; the start where none was) and whether there was one.
    """
    n = len(x)
    per_sample = (-1,) + (1,) * (x.ndim - 1)
    active = todo.copy()

    def proj(z, rows):
        return project(z, x[rows], eps=eps, clip_min=clip_min, clip_max=clip_max).numpy()

    def evaluate(points):
        """Loss, misclassified and gradient at the active rows (zeros elsewhere)."""
        idx = np.flatnonzero(active)
        loss, grad, wrong = np.zeros(n, np.float32), np.zeros_like(x), np.zeros(n, bool)
        if len(idx):
            l, logits, g = call_active(functools.partial(gradient, fn), idx, n, points, y,
                                       target)
            loss[idx], grad[idx] = l, g
            wrong[idx] = np.argmax(logits, axis=-1) != y[idx]
            gradients[idx] += 1
        return loss, wrong, grad

    x_adv = apgd_start(x, eps=eps, seed=seed, ids=ids, clip_min=clip_min,
                       clip_max=clip_max).numpy()
    loss, fooled, grad = evaluate(x_adv)
    x_best, x_best_adv, grad_best, loss_best = x_adv.copy(), x_adv.copy(), grad, loss.copy()
    if early_exit:
        active &= ~fooled
    step = np.full((n,) + per_sample[1:], 2.0 * eps, np.float32)
    x_prev = x_adv
    loss_steps = np.zeros((num_steps, n), np.float32)
    checkpoints = _Checkpoints(num_steps, rho, loss_best)
    for i in range(num_steps):
        if not active.any():
            break
        rows = np.flatnonzero(active)
        # After a restart from x_best the momentum is x_best - x_prev: x_prev is not
        # reset, as in the reference. The first step has no previous step: a = 1.
        momentum = x_adv - x_prev
        x_prev = x_adv.copy()
        a = 0.75 if i > 0 else 1.0
        z = proj(x_adv[rows] + step[rows] * np.sign(grad[rows]), rows)
        x_adv = x_adv.copy()
        x_adv[rows] = proj(x_adv[rows] + (z - x_adv[rows]) * a + momentum[rows] * (1 - a),
                           rows)

        loss, wrong, grad = evaluate(x_adv)
        wrong &= active
        fooled |= wrong
        x_best_adv = np.where(np.reshape(wrong, per_sample), x_adv, x_best_adv)
        if early_exit:
            active &= ~wrong
        loss_steps[i] = loss
        better = loss > loss_best
        x_best = np.where(np.reshape(better, per_sample), x_adv, x_best)
        grad_best = np.where(np.reshape(better, per_sample), grad, grad_best)
        loss_best = np.where(better, loss, loss_best)

        # The reference's `if counter3 == k:` block: at a checkpoint the samples that
        # halve their step restart from their best point and its gradient.
        halve = checkpoints.after_step(i, loss_steps, loss_best)
        if halve is not None and halve.any():
            step[halve] /= 2.0
            x_adv = np.where(np.reshape(halve, per_sample), x_best, x_adv)
            grad = np.where(np.reshape(halve, per_sample), grad_best, grad)
    return x_best, loss_best, x_best_adv, fooled


def apgd(model, x, y, *, eps, num_steps=100, loss="ce", restarts=1, rho=0.75, clip_min=0.0,
         clip_max=1.0, seed=0, ids=None, early_exit=False, return_result=False):
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
      restarts: runs, each from a new start (seed ``seed * 1000 + r``): on every sample,
        or with ``early_exit`` only on the samples no earlier run fooled (AutoAttack's
        outer loop). Per sample the first run that fooled the model is kept (a sample
        none fooled gets the highest-loss point of all runs).
      rho: the oscillation threshold (the reference's ``thr_decr``): the step is halved
        at a checkpoint where the loss rose in at most ``rho`` of the steps since the
        last one.
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.
      seed: seed of the random starts.
      ids: per-sample keys of the random starts (default ``0..N-1``; `apgd_start`).
      early_exit: per sample, stop at the first iterate the model misclassifies and
        return it (the reference keeps attacking to the end of the run and returns the
        last misclassified iterate); later restarts run only on the samples not fooled.
      return_result: return an `AttackResult` with ``is_adv`` (fooled at an iterate the
        attack checked), ``details["gradients"]`` and ``details["exited"]``.

    Returns:
      ``x_adv`` (float32 tensor of ``x``'s shape) or an `AttackResult`: per sample,
      where a run saw the model misclassify an iterate, that run's last such iterate
      (its first with ``early_exit``); otherwise the highest-loss
      point of all runs. (AutoAttack returns ``x`` itself for a sample it did not fool;
      the highest-loss point changes no robust accuracy and is more useful for transfer.)
    """
    _check(eps, num_steps, restarts, rho, clip_min, clip_max)
    if loss not in LOSSES[:2]:
        raise TfnodeError(f"loss must be one of {list(LOSSES[:2])}, got {loss!r} (the "
                          "targeted DLR loss is apgd_t's)")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    runs = [(seed * 1000 + r, loss, None) for r in range(restarts)]
    return _runs(logits_fn(model, per_shape=True), x, y, runs, eps=eps, num_steps=num_steps,
                 rho=float(rho), clip_min=clip_min, clip_max=clip_max,
                 ids=sample_ids(ids, len(x)), early_exit=early_exit,
                 return_result=return_result)


def _check(eps, num_steps, restarts, rho, clip_min, clip_max):
    check_eps(eps, clip_min=clip_min, clip_max=clip_max)
    check_positive_int(num_steps, "num_steps")
    check_positive_int(restarts, "restarts")
    if not (isinstance(rho, (int, float, np.integer, np.floating)) and 0.0 < rho < 1.0):
        raise TfnodeError(f"rho must lie in (0, 1), got {rho!r}")


def _runs(fn, x, y, runs, *, eps, num_steps, rho, clip_min, clip_max, ids, early_exit,
          return_result):
    """APGD runs one after the other (restarts, or APGD-T's target classes), merged.

    ``runs``: ``(seed, loss, target)`` per run, ``target`` a label per sample or None.
    Without ``early_exit`` every run attacks every sample; with it a run attacks only
    the samples no earlier run fooled (the reference's outer loops). Per sample the first
    run that fooled the model is kept; a sample none fooled gets the highest-loss point
    of all runs (losses of different targets compare as the reference's do not: the
    point only matters for transfer).
    """
    per_sample = (-1,) + (1,) * (x.ndim - 1)
    n = len(x)
    gradients = np.zeros(n, np.int64)
    adv, found, point, point_loss = None, np.zeros(n, bool), None, None
    for r, (seed, loss, target) in enumerate(runs):
        todo = ~found if early_exit else np.ones(n, bool)
        if not todo.any():
            break
        x_best, loss_best, x_best_adv, fooled = _single_run(
            fn, GRADIENTS[loss], x, y, np.zeros(n, np.int64) if target is None else target,
            eps=eps, num_steps=num_steps, rho=rho, clip_min=clip_min, clip_max=clip_max,
            seed=seed, ids=ids, todo=todo, early_exit=early_exit, gradients=gradients)
        fooled &= todo
        if r == 0:
            adv, found, point, point_loss = x_best_adv, fooled, x_best, loss_best
            continue
        new = fooled & ~found  # keep each sample's first success
        adv = np.where(np.reshape(new, per_sample), x_best_adv, adv)
        found = found | fooled
        higher = (loss_best > point_loss) & todo
        point = np.where(np.reshape(higher, per_sample), x_best, point)
        point_loss = np.where(higher, loss_best, point_loss)
    best = np.where(np.reshape(found, per_sample), adv, point)
    if not return_result:
        return tf.constant(best)
    return AttackResult(x_adv=best, is_adv=found,
                        details={"gradients": gradients,
                                 "exited": found if early_exit else np.zeros(n, bool)})


def apgd_ce(model, x, y, *, eps, **kwargs):
    """APGD on the cross-entropy loss (AutoAttack's ``apgd-ce``); options as `apgd`."""
    return apgd(model, x, y, eps=eps, loss="ce", **kwargs)


def apgd_dlr(model, x, y, *, eps, **kwargs):
    """APGD on the untargeted DLR loss (AutoAttack's ``apgd-dlr``); options as `apgd`.

    Needs at least 3 classes (`TfnodeError` otherwise).
    """
    return apgd(model, x, y, eps=eps, loss="dlr", **kwargs)


def _apgd_spec(name, fn, loss_name, targets=False):
    extra = {"num_targets": 9} if targets else {}  # AutoAttack's standard apgd-t
    return registry.AttackSpec(
        name=name, fn=fn, kind="white-box",
        # AutoAttack's standard version: 100 steps, one run, rho 0.75.
        defaults={"num_steps": 100, "restarts": 1, "rho": 0.75, **extra},
        rules={"num_steps": registry.COUNT, "restarts": registry.COUNT,
               "rho": registry.FRACTION, **{k: registry.COUNT for k in extra}},
        transferable=True, in_audit=True, early_exit=True,
        # One gradient at the start of each run, then one per step; a run per target.
        iterations=lambda o: (o["num_steps"] + 1) * o["restarts"] * o.get("num_targets", 1),
        summary=f"APGD on the {loss_name}: step 2 eps halved at checkpoints, momentum "
                "0.75, the best point kept (AutoAttack's reference semantics)",
        reference="Croce & Hein 2020")


registry.register(_apgd_spec("apgd_ce", apgd_ce, "cross-entropy"))
registry.register(_apgd_spec("apgd_dlr", apgd_dlr, "DLR loss (>= 3 classes)"))
