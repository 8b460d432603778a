"""Crafting adversarials for a set of examples in batches of the run's batch size: the
seeds, the padding of a short batch, and the confirmation of an early exit.

``target`` below is the `tfnode.evaluation.schedule.Target` of one model (its ``x``, ``y``,
``ids``, ``correct``, ``batch_size``, ``seed``, ``log``, ``verbose``, ``label`` and
``predict``); ``job`` a `tfnode.evaluation.plan.Job`.
"""

import dataclasses

import keras
import numpy as np

from tfnode.attacks._utils import bucket, padded


def craft(target, job, eps, idx, *, early_exit):
    """Runs ``job`` at ``eps`` on the examples ``idx``, in batches of ``batch_size``.

    Attacks with per-sample keys (``early_exit`` in the registry) get the examples' ids
    and the run's seed, so their draws do not depend on the batches; the others are
    seeded ``seed + k`` for their k-th batch of this call. An attack that calls the model
    on its whole input (all but those that batch their own queries) gets a short batch
    padded to a `tfnode.attacks._utils.bucket` size by repeating an example (its copies'
    results are dropped): a graph is traced, and an ODE block's step compiled, per input
    shape, and the subsets of the fast schedule come in every size.

    Returns:
      ``{"x_adv", "queries", "is_adv", "gradients", "exited"}`` over ``idx`` (None where
      the attack does not report it).
    """
    target.log(f"tfnode: {target.label}: {job.name}" + ("" if eps is None else f" eps {eps:g}")
              + (f", {len(idx)} of {len(target.y)} examples" if len(idx) < len(target.y)
                 else ""))
    chunks = [idx[i:i + target.batch_size] for i in range(0, len(idx), target.batch_size)]
    bar = keras.utils.Progbar(len(chunks), verbose=1 if target.verbose else 0,
                              unit_name="batch")
    parts = []
    for k, rows in enumerate(chunks):
        keyed = job.spec.early_exit
        take = rows if job.spec.takes_batch_size else padded(
            rows, bucket(len(rows), target.batch_size))
        part = job.spec.run(job.crafted_on, target.x[take], target.y[take], eps=eps,
                            seed=target.seed if keyed else target.seed + k,
                            batch_size=target.batch_size, ids=target.ids[take],
                            early_exit=early_exit, **job.options)
        parts.append(part if job.spec.takes_batch_size else cut(part, len(rows)))
        bar.update(k + 1)

    def joined(values):
        return None if any(v is None for v in values) else np.concatenate(values)

    return {"x_adv": joined([p.x_adv for p in parts]),
            "queries": joined([p.queries for p in parts]),
            "is_adv": joined([p.is_adv for p in parts]),
            "gradients": joined([p.details.get("gradients") for p in parts]),
            "exited": joined([p.details.get("exited") for p in parts])}


def cut(result, n):
    """The first ``n`` rows of an `AttackResult`'s per-sample fields."""
    def first(v):
        return None if v is None else np.asarray(v)[:n]
    return dataclasses.replace(result, x_adv=first(result.x_adv), is_adv=first(result.is_adv),
                               queries=first(result.queries),
                               details={k: first(v) if np.ndim(v) else v
                                        for k, v in result.details.items()})


def craft_confirmed(target, job, eps, idx, x_adv, robust, *, early_exit):
    """Crafts ``job`` at ``eps`` on ``idx`` into ``x_adv`` and ``robust`` (full-length
    arrays, written at ``idx``: robust = clean-correct and still classified right).

    An early exit's first adversarial lies just past the decision boundary, seen through
    the gradient's graph; the evaluation's compiled forward pass may round it back. The
    examples it left robust get the whole attack (the exhaustive schedule's run, the same
    draws), so early exit never makes one robust; their gradients are added up.

    Returns:
      ``(crafted, rerun)``: `craft`'s result over ``idx`` (``queries`` and ``gradients``
      None when ``idx`` is empty), and the examples attacked again.
    """
    crafted = {"queries": None, "gradients": None}
    rerun = np.zeros(0, np.int64)

    def attack(rows, exit_early):
        out = craft(target, job, eps, rows, early_exit=exit_early)
        x_adv[rows] = out["x_adv"]
        robust[rows] = target.correct[rows] & (
            target.predict(target.model, out["x_adv"]) == target.y[rows])
        return out

    if len(idx):
        crafted = attack(idx, early_exit)
        if crafted["exited"] is not None:
            rerun = idx[crafted["exited"] & robust[idx]]
    if len(rerun):
        again = attack(rerun, False)
        if crafted["gradients"] is not None:
            crafted["gradients"][np.searchsorted(idx, rerun)] += again["gradients"]
    return crafted, rerun
