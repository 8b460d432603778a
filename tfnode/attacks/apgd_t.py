"""APGD-T, AutoAttack's targeted APGD (Croce & Hein 2020): `tfnode.attacks.apgd`'s loop on
the targeted DLR loss, once per target class."""

import numpy as np
import tensorflow as tf

from tfnode.attacks import registry
from tfnode.attacks._utils import check_positive_int, logits_fn, sample_ids
from tfnode.attacks.apgd import _apgd_spec, _check, _runs
from tfnode.errors import TfnodeError


def ranked_classes(fn, x, num_targets):
    """``(clean logits, classes ranked by them ascending)``: the target of run k is the
    class ranked ``-k``, as the reference's ``output.sort(dim=1)[1][:, -k]`` (FAB-T's too).

    Raises:
      TfnodeError: ``num_targets`` is not below the number of classes.
    """
    clean = np.asarray(fn(tf.constant(x)))
    if num_targets >= clean.shape[-1]:
        raise TfnodeError(f"num_targets must be below the number of classes "
                          f"({clean.shape[-1]}), got {num_targets}")
    return clean, np.argsort(clean, axis=-1, kind="stable")  # ascending, as torch's sort


def apgd_t(model, x, y, *, eps, num_steps=100, num_targets=9, restarts=1, rho=0.75,
           clip_min=0.0, clip_max=1.0, seed=0, ids=None, early_exit=False,
           return_result=False):
    """APGD-T: APGD on the targeted DLR loss, once per target class (AutoAttack's
    ``apgd-t``, ``APGDAttack_targeted``; its standard version: 9 targets, 100 steps, one
    run each).

    The target of run k (k = 2 .. ``num_targets`` + 1) is, per sample, the class with the
    k-th largest logit at the clean input (for a correctly classified sample: the most
    likely wrong classes, in order), as the reference takes
    ``output.sort(dim=1)[1][:, -target_class]``; the loss is
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``. Each run is `apgd`'s loop
    (the same start, steps and checkpoints; seed ``seed * 1000 + run``); the runs are
    merged as `apgd`'s restarts are (``early_exit``: a run attacks only the samples no
    earlier run fooled, the reference's behaviour). Needs at least 4 classes and
    ``num_targets`` below the number of classes.

    Args:
      model, x, y, eps, num_steps, rho, clip_min, clip_max, seed, ids, early_exit,
      return_result: as `apgd`.
      num_targets: target classes, each attacked in turn.
      restarts: runs per target class.

    Returns:
      As `apgd`.
    """
    _check(eps, num_steps, restarts, rho, clip_min, clip_max)
    check_positive_int(num_targets, "num_targets")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    fn = logits_fn(model, per_shape=True)
    _, ranked = ranked_classes(fn, x, num_targets)
    runs = []
    for k in range(2, num_targets + 2):
        for _ in range(restarts):
            runs.append((seed * 1000 + len(runs), "dlr_targeted", ranked[:, -k]))
    return _runs(fn, x, y, runs, eps=eps, num_steps=num_steps, rho=float(rho),
                 clip_min=clip_min, clip_max=clip_max, ids=sample_ids(ids, len(x)),
                 early_exit=early_exit, return_result=return_result)


registry.register(_apgd_spec("apgd_t", apgd_t, "targeted DLR loss, once per each of the "
                             "num_targets most likely wrong classes (>= 4 classes)",
                             targets=True))
