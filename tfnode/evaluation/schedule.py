"""One attack job of one model's evaluation, under either schedule: its cells, one per eps.

Two schedules (`tfnode.evaluation.config.SCHEDULES`; the report records which ran and its
conventions):

* ``fast`` (the default) attacks only what is still robust, AutoAttack's answer to the
  cost of a target. A gradient attack keeps each sample's first adversarial and stops
  attacking it (``early_exit``); an attack's eps run in increasing order, each only on
  the examples it left robust at the eps below (a perturbation within the smaller ball is
  within the larger one: it is carried forward as the evidence); an attack whose queries
  dominate (``survivors_only``: Square, Boundary) runs only on the examples every attack
  before it left robust, and its cells then answer "is there any adversarial within eps".
  No example is attacked that could not change a number.
* ``exhaustive``: every attack on every example at every eps, the last iterate of a
  gradient attack kept (what tfnode did before, for comparison: `benchmarks/eval_sweep`).

The gradient attacks' random draws are keyed by the example's index in the split
(``ids``) and the seed, so given a model that treats samples independently (per-sample
ODE steps) their result for an example depends on neither its batch nor the schedule's
dropping and re-batching nor the shard it is in; sharded runs (``num_shards``) merge to
the unsharded report (`tfnode.evaluation.shards`). Square's and Boundary's random search and
transfer's attack on its source draw per batch. With a batch-shared solver step (no
per-sample steps) every number depends on the batch, and the fast schedule's batches
are other batches than the exhaustive one's.
"""

import dataclasses
import time

import numpy as np

from tfnode import attacks
from tfnode.evaluation import batches, cells as cells_lib, outcomes


@dataclasses.dataclass
class Target:
    """The fixed inputs of one model's evaluation: the model under attack and its examples.

    Attributes:
      model: the evaluated model.
      x, y, ids: the images, labels and indices in the split.
      correct: the clean-correct examples.
      batch_size: fixed batch size of every model call.
      seed: the run's seed.
      fast: the fast schedule (else the exhaustive one).
      log: where progress lines go.
      verbose: show progress bars.
      label: the model's label in the report.
      arrays: ``{(job name, eps key or "summary"): per-example arrays}`` of every cell,
        for merging shards (`tfnode.evaluation.shards`).
      progress: the finished cells on disk (`tfnode.evaluation.progress.Progress`), or None ...
      model_index: ... and this model's place in the run.
    """
    model: object
    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    correct: np.ndarray
    batch_size: int
    seed: int
    fast: bool
    log: object
    verbose: int
    label: str = ""
    arrays: dict = dataclasses.field(default_factory=dict)
    progress: object = None
    model_index: int = 0

    def restore(self, job, name):
        """``(record, arrays)`` of a finished unit of ``job`` saved by a killed run."""
        if self.progress is None:
            return None
        return self.progress.load(self.model_index, job.name, name)

    def keep(self, job, name, record, arrays):
        """Saves a finished unit of ``job`` for a killed run to continue after."""
        if self.progress is not None:
            self.progress.save(self.model_index, job.name, name, record, arrays)

    def predict(self, model, x_adv, *, xla=True, pad_to_batch=False):
        """``model``'s classes of ``x_adv`` in batches of ``batch_size``."""
        return attacks.predict(model, x_adv, batch_size=self.batch_size, xla=xla,
                               pad_to_batch=pad_to_batch)


def early_exit(target, job):
    """Whether ``job`` exits early: only in the fast schedule, and only on the evaluated
    model itself: a surrogate's or a source model's first adversarial is where IT is
    first fooled, not the model."""
    return target.fast and job.crafted_on is target.model


def _prior(done):
    """``prior(eps_key)``: the examples every budget attack in ``done`` left robust at
    that eps (None where none ran at it), and the names of those attacks."""
    names = outcomes.budget_attacks({"attacks": done})

    def robust(key):
        masks = [outcomes.decode(done[n]["cells"][key]["robust"]) for n in names
                 if key in done[n]["cells"]]
        return np.logical_and.reduce(masks) if masks else None
    return robust, names


def run_job(target, job, done):
    """Runs ``job`` (a `tfnode.evaluation.plan.Job`) on ``target`` (a `Target`).

    Args:
      target: the model's `Target`; each cell's per-example arrays go to ``target.arrays``.
      job: the attack job; its ``meta`` gets the schedule's marks.
      done: ``{name: result}`` of the attacks already run on this model (for
        ``survivors_only``).

    Returns:
      ``{"meta", "cells", "throughput"}`` (and ``"summary"`` for a distance-minimizing
      attack).
    """
    prior, names = _prior(done) if target.fast and job.spec.survivors_only else (None, [])
    if prior is not None and names:
        job.meta["survivors_of"] = names
    if target.fast:  # robust accuracy cannot rise with eps: nothing for that check to see
        job.meta["eps_on_survivors"] = True
        job.meta["early_exit"] = bool(job.spec.early_exit and early_exit(target, job))
    start = time.time()
    if job.spec.minimizes_distance:
        out = _distance_job(target, job, prior)
    else:
        out = {"meta": job.meta, "cells": _budget_cells(target, job, prior)}
    attacked = sum(c["attacked"] for c in out["cells"].values()) if not \
        job.spec.minimizes_distance else out["summary"]["attacked"]
    out["throughput"] = cells_lib.throughput(
        time.time() - start, len(target.y) * len(out["cells"]), attacked)
    target.log(f"tfnode: {target.label}: {job.name}: {out['throughput']['seconds']:.1f} s, "
              f"{out['throughput']['examples_x_eps_per_second'] or 0:.1f} examples x eps "
              f"per second ({attacked} attacked)")
    return out


@dataclasses.dataclass
class _Carry:
    """What an attack's next eps continues from."""
    robust_below: np.ndarray  # the examples still robust
    x: np.ndarray  # this attack's adversarials so far (x itself elsewhere)
    own: np.ndarray  # examples this attack's own adversarial fooled so far


def _budget_cells(target, job, prior):
    """An attack within each eps (in increasing order; see the module docstring)."""
    cells = {}
    carry = _Carry(target.correct.copy(), target.x.copy(), np.zeros(len(target.y), bool))
    for e in sorted(job.eps):
        start = time.time()
        key = outcomes.eps_key(e)
        saved = target.restore(job, f"eps-{key}")
        if saved is not None:  # a killed run finished this cell: continue after it
            cells[key] = _restored_cell(target, job, key, saved, carry)
        else:
            cells[key] = _budget_cell(target, job, e, prior, carry, start)
    return cells


def _restored_cell(target, job, key, saved, carry):
    """A cell a killed run finished, and what the next eps continues from."""
    cell, arrays = saved
    target.arrays[(job.name, key)] = arrays["example"]
    carry.own = arrays["example"]["own"]
    if target.fast:
        rows = arrays.get("carry", {})
        if "rows" in rows:
            carry.x[rows["rows"]] = rows["x"]
        carry.robust_below = arrays["robust"]["robust"]
    return cell


def _budget_cell(target, job, e, prior, carry, start):
    """The cell of eps ``e``: the examples the schedule attacks there, crafted,
    confirmed and counted; ``carry`` moves on to the next eps."""
    n = len(target.y)
    key = outcomes.eps_key(e)
    todo = np.ones(n, bool)
    if target.fast:
        todo = carry.robust_below.copy()
        if prior is not None and prior(key) is not None:
            todo &= prior(key)
    idx = np.flatnonzero(todo)
    x_adv, robust = carry.x.copy(), np.zeros(n, bool)
    crafted, rerun = batches.craft_confirmed(target, job, e, idx, x_adv, robust,
                                             early_exit=early_exit(target, job))
    fooled_here = todo & target.correct & ~robust
    carried = carry.own.copy() if target.fast else np.zeros(n, bool)
    carry.own = (carry.own | fooled_here) if target.fast else fooled_here
    if target.fast:
        carry.x[fooled_here] = x_adv[fooled_here]
        carry.robust_below = robust
    per_example = _per_example(target, job, x_adv, todo, carry.own, crafted, idx)
    target.arrays[(job.name, key)] = per_example
    cell = {**cells_lib.cell(e, target.correct, robust, per_example),
            "carried": int(carried.sum()), "exit_not_confirmed": int(len(rerun)),
            "seconds": time.time() - start}
    # What the next eps continues from: the adversarials found here (only they
    # changed) and the examples still robust.
    rows = np.flatnonzero(fooled_here) if target.fast else np.zeros(0, np.int64)
    target.keep(job, f"eps-{key}", cell, {
        "example": per_example, "robust": {"robust": robust},
        "carry": {"rows": rows, "x": x_adv[rows]}})
    return cell


def _per_example(target, job, x_adv, todo, own, crafted, idx):
    """A budget cell's per-example arrays (`tfnode.evaluation.cells.cell`)."""
    n = len(target.y)
    per_example = {"own": own, "attacked": todo, "l2": None, "linf": None}
    per_example["l2"], per_example["linf"] = attacks.distances(x_adv, target.x)
    if crafted["queries"] is not None:
        per_example["queries"] = _spread(crafted["queries"], idx, n)
    if crafted["gradients"] is not None:
        per_example["gradients"] = _spread(crafted["gradients"], idx, n)
    if job.crafted_on is not target.model:  # how the crafting model itself fared
        per_example["source_correct"] = target.predict(job.crafted_on, x_adv) == target.y
    return per_example


def _spread(values, idx, n):
    out = np.zeros(n, np.asarray(values).dtype)
    out[idx] = values
    return out


def _distance_job(target, job, prior):
    """One unbounded run; an eps cell counts the adversarials found within eps (Linf).

    The fast schedule runs it only on the examples every attack before it left robust at
    the smallest eps (at a larger eps fewer are left), and a cell is then robust after
    those attacks and this one; the summary (median L2) is over the examples it ran on,
    and says so.

    The attack's adversarials are confirmed on the whole evaluation batches through the
    same computation its oracle used (`tfnode.attacks.predict` with the attack's ``xla``
    and ``pad`` options: `tfnode.attacks.confirm_kwargs`): at the decision boundary an
    adaptive solver turns a rounding difference into other steps, so another
    compilation of the model could throw real adversarials away.
    With batch-shared solver steps a decision can still change with the batch; those
    are counted in ``num_found_not_confirmed_in_evaluation_batches``.
    """
    n = len(target.y)
    keys = [outcomes.eps_key(e) for e in job.eps]
    smallest = min(job.eps)
    candidates = np.ones(n, bool)
    survivors = prior(outcomes.eps_key(smallest)) if prior is not None else None
    if target.fast:
        candidates = target.correct & (survivors if survivors is not None else True)
    idx = np.flatnonzero(candidates)
    start = time.time()
    x_adv = target.x.copy()
    queries, is_adv, confirmed = np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool)
    if len(idx):
        crafted = batches.craft(target, job, None, idx, early_exit=False)
        x_adv[idx] = crafted["x_adv"]
        queries[idx], is_adv[idx] = crafted["queries"], crafted["is_adv"]
        confirmed[idx] = target.predict(
            target.model, crafted["x_adv"], **attacks.confirm_kwargs(job.options)
        ) != target.y[idx]
    found = target.correct & is_adv & confirmed
    l2, linf = attacks.distances(x_adv, target.x)
    seconds = time.time() - start
    cells = {}
    for e, key in zip(job.eps, keys):
        within = found & (linf <= e + 1e-6)
        base = target.correct
        if survivors is not None and target.fast:
            base = prior(key) if prior(key) is not None else target.correct
        per_example = {"own": within, "attacked": candidates, "l2": l2, "linf": linf,
                       "queries": queries}
        target.arrays[(job.name, key)] = per_example
        cells[key] = {**cells_lib.cell(e, target.correct, base & ~within, per_example),
                      "seconds": seconds}
    summary_arrays = {"found": found, "candidates": candidates, "l2": l2, "linf": linf,
                      "queries": queries, "not_confirmed": target.correct & is_adv & ~confirmed}
    target.arrays[(job.name, "summary")] = summary_arrays
    over = ("the clean-correct examples" if not target.fast else
            "the clean-correct examples" + (f" that {', '.join(job.meta['survivors_of'])} "
                                            f"left robust at eps {smallest:g}"
                                            if survivors is not None else ""))
    return {"meta": job.meta, "cells": cells,
            "summary": {**cells_lib.summary(summary_arrays, target.correct), "over": over,
                        "seconds": seconds}}
