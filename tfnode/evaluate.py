"""Adversarial evaluation: the sweep over (model, attack, eps) cells, and its report.

`evaluate` loads one model (and optionally a second one to compare with, and a source
model for transfer), takes the first ``num_examples`` images of a split in a fixed order,
runs every attack (from `tfnode.attacks.registry`; with ``audit`` also the audit's, from
`tfnode.audit.plan`) at every eps in batches of ``batch_size``, and fills
``report["models"][label]["attacks"][name]["cells"][eps_key]``. Each cell keeps which
examples stayed robust (`tfnode.outcomes`), so the per-example worst case over attacks
is computed from the cells and can be recomputed from ``report.json`` alone.

Conventions (RobustBench / AutoAttack): an example is robust under an attack if the model
classifies it correctly both clean and attacked; robust accuracy is over ALL evaluated
examples; the attack success rate is over the clean-correct ones.

Two schedules (`SCHEDULES`; the report records which ran and its conventions):

* ``fast`` (the default) attacks only what is still robust, AutoAttack's answer to the
  cost of a sweep. A gradient attack keeps each sample's first adversarial and stops
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
import os
import time
from typing import Mapping

import keras
import numpy as np

from tfnode import attacks, audit as audit_lib, checks, data, files, loading, models, outcomes, \
    progress, render, trajectories
from tfnode.evaluation import arrays as arrays_lib, cells as cells_lib
from tfnode.attacks._utils import bucket, padded
from tfnode.errors import TfnodeError


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Everything an evaluation depends on; recorded verbatim in ``report.json``.

    Attributes:
      model_path: the model to evaluate (`tfnode.loading.load_model`).
      dataset: dataset name.
      split: dataset split.
      attacks: registered attack names (`tfnode.attacks.available()`).
      eps: Linf budgets on the [0, 1] pixel scale (already divided by ``eps_scale``).
      eps_scale: what the user's budgets were divided by (e.g. 255), for display.
      num_examples: the first this many examples of the split are evaluated.
      batch_size: fixed batch size of every model call.
      data_dir: see `tfnode.data.load`.
      compare_model_path: a second model evaluated the same way.
      source_model_path: model on which ``transfer`` crafts its adversarials.
      output_dir: report folder (default ``reports/<model>_<dataset>``).
      attack_options: ``{attack or audit variant: {option: value}}`` over the defaults.
      seed: seed of random starts, transforms and proposals (keyed per example by its
        index where the attack allows, else ``seed + k`` for batch k of a call).
      audit: add the gradient-masking audit (`tfnode.audit`) and its verdict.
      per_sample_steps: evaluate ODE models with per-sample steps where they apply
        (`tfnode.loading.with_per_sample_steps`), so no result depends on the batch.
      tolerance_grid: rtol = atol values of the attack-time x inference-time grid.
      trajectories: measure the paper's bound (`tfnode.trajectories`).
      schedule: ``"fast"`` or ``"exhaustive"`` (see the module docstring).
      num_shards: split the examples into this many contiguous shards ...
      shard_index: ... and evaluate this one (0-based); `tfnode.evaluation.shards.merge` joins the
        shards' reports.
    """
    model_path: str
    dataset: str = "mnist"
    split: str = "test"
    attacks: tuple = ("fgsm", "pgd")
    eps: tuple = (0.1, 0.2, 0.3)
    eps_scale: float = 1.0
    num_examples: int = 1000
    batch_size: int = 100
    data_dir: str | None = None
    compare_model_path: str | None = None
    source_model_path: str | None = None
    output_dir: str | None = None
    attack_options: Mapping = dataclasses.field(default_factory=dict)
    seed: int = 0
    audit: bool = False
    per_sample_steps: bool = True
    tolerance_grid: tuple = ()
    trajectories: bool = False
    schedule: str = "fast"
    num_shards: int = 1
    shard_index: int = 0


SCHEDULES = {
    "fast": "fast: gradient attacks keep each example's first adversarial and stop "
            "(early exit); eps in increasing order, each attack only on the examples it "
            "left robust at the eps below, its adversarials carried forward; "
            "{survivors} only on the examples every attack before it left robust (their "
            "cells: robust after those attacks and this one)",
    "exhaustive": "exhaustive: every attack on every example at every eps; a gradient "
                  "attack's last iterate (per restart) is kept",
}


def _is_count(value, least):
    return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            and value >= least)


def resolve_options(config):
    """``{name: options}`` of every attack the run may need, checked before any work.

    Raises:
      TfnodeError: one line naming the bad attack, option or value.
    """
    for name, value in (("num_examples", config.num_examples),
                        ("batch_size", config.batch_size), ("num_shards", config.num_shards)):
        if not _is_count(value, 1):
            raise TfnodeError(f"{name} must be an integer >= 1, got {value!r}")
    if config.schedule not in SCHEDULES:
        raise TfnodeError(f"schedule must be one of {list(SCHEDULES)}, got "
                          f"{config.schedule!r}")
    if not _is_count(config.shard_index, 0) or config.shard_index >= config.num_shards:
        raise TfnodeError(f"shard_index must be an integer in [0, {config.num_shards - 1}] "
                          f"(num_shards {config.num_shards}), got {config.shard_index!r}")
    if config.num_shards > 1 and (config.tolerance_grid or config.trajectories):
        raise TfnodeError("num_shards > 1 does not combine with tolerance_grid or "
                          "trajectories (their summaries do not merge); run them unsharded")
    if not config.attacks:
        raise TfnodeError(f"no attacks given; expected some of {attacks.available()}")
    if not config.eps:
        raise TfnodeError("no eps given; give at least one budget")
    for e in config.eps:
        if not 0.0 <= e <= 1.0:
            raise TfnodeError(f"eps {e:g} is outside [0, 1], the pixel range of the inputs")
    keys = [outcomes.eps_key(e) for e in config.eps]
    twice = sorted({k for k in keys if keys.count(k) > 1}, key=float)
    if twice:
        # Cells are keyed by eps (to 6 significant digits): a repeated budget would
        # silently overwrite its twin.
        raise TfnodeError(f"eps {', '.join(twice)} given twice; give each budget once")
    for name in config.attacks:
        if list(config.attacks).count(name) > 1:
            raise TfnodeError(f"attack {name!r} given twice in --attacks; give each once")
    if any(not t > 0 for t in config.tolerance_grid):
        raise TfnodeError(f"tolerance_grid takes tolerances > 0, got "
                          f"{list(config.tolerance_grid)}")
    if not isinstance(config.seed, (int, np.integer)) or config.seed < 0:
        raise TfnodeError(f"seed must be an integer >= 0, got {config.seed!r}")
    names = list(config.attacks)
    if config.audit:
        names += [v.compares_with for v in audit_lib.VARIANTS]
        names += attacks.available(in_audit=True)
    given = dict(config.attack_options)
    for name in given:
        if name not in attacks.available() and name not in audit_lib.NAMES:
            raise TfnodeError(f"attack options for unknown attack {name!r}; expected one of "
                              f"{attacks.available() + list(audit_lib.NAMES)}")
    # Options given for an attack that does not run are checked all the same: a typo
    # there is as likely a mistake as anywhere.
    names += [name for name in given if name in attacks.available()]
    resolved = {name: attacks.get(name).options(given.get(name), dataset=config.dataset)
                for name in dict.fromkeys(names)}
    for name in config.attacks:
        if attacks.get(name).needs_source and not config.source_model_path:
            raise TfnodeError(f"{name} needs a source model (--source_model_path: the model "
                              "the adversarials are crafted on)")
    for v in audit_lib.VARIANTS:
        if config.audit or v.name in given:
            resolved[v.name] = attacks.get(v.attack).options(
                {**given.get(v.attack, {}), **v.overrides, **given.get(v.name, {})},
                dataset=config.dataset, label=v.name)
    return resolved


@dataclasses.dataclass
class _Job:
    """One attack of one model's sweep: what runs, on which model, and its report meta."""
    name: str
    spec: attacks.AttackSpec
    options: dict
    crafted_on: object
    meta: dict
    eps: list


@dataclasses.dataclass
class _Sweep:
    """The fixed inputs of one model's sweep."""
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
    # Per-example arrays of every cell, for merging shards (`tfnode.evaluation.shards`).
    arrays: dict = dataclasses.field(default_factory=dict)
    # Finished cells on disk (`tfnode.progress`), and this model's place in the run.
    progress: object = None
    model_index: int = 0

    def restore(self, job, name):
        """``(record, arrays)`` of a finished unit of ``job`` saved by a killed run."""
        if self.progress is None:
            return None
        return self.progress.load(self.model_index, job.name, name)

    def keep(self, job, name, record, arrays):
        if self.progress is not None:
            self.progress.save(self.model_index, job.name, name, record, arrays)

    def predict(self, model, x_adv, *, xla=True, pad_to_batch=False):
        return attacks.predict(model, x_adv, batch_size=self.batch_size, xla=xla,
                               pad_to_batch=pad_to_batch)


@dataclasses.dataclass
class _Run:
    """What every model of one evaluation shares."""
    config: EvalConfig
    options: dict
    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    eps: list
    source: object
    log: object
    verbose: int
    progress: object = None


def evaluate(config, *, record=None, log=print, verbose=1):
    """Runs the attack sweep of ``config`` and writes the report; returns the report dict.

    Args:
      config: an `EvalConfig`.
      record: extra settings to store (e.g. the app's flags).
      log: where progress lines go.
      verbose: show progress bars.

    Returns:
      The report dict (also in ``report.json``), with ``"paths"`` of the files written.
    """
    start = time.time()
    options = resolve_options(config)
    ds_info = data.info(config.dataset)
    loaded = []
    for path, flag in ((config.model_path, "--model_path"),
                       (config.compare_model_path, "--compare_model_path")):
        if path:
            model, info = loading.load_model(path, flag=flag)
            loading.check_input_shape(info, ds_info.shape, ds_info.name, path)
            if config.per_sample_steps:
                model, info = loading.with_per_sample_steps(model, info)
            loaded.append((model, info))
    source = source_info = None
    if config.source_model_path and (config.audit or any(
            attacks.get(n).needs_source for n in config.attacks)):
        source, source_info = loading.load_model(config.source_model_path,
                                                 flag="--source_model_path")
        loading.check_input_shape(source_info, ds_info.shape, ds_info.name,
                                  config.source_model_path)
    output_dir = config.output_dir or os.path.join(
        "reports", f"{loading.model_label(loaded[0][1])}_{config.dataset}")
    if config.num_shards > 1:
        output_dir = os.path.join(output_dir, "shards",
                                  f"{config.shard_index}-of-{config.num_shards}")
    files.check_writable(output_dir, flag="--output_dir")
    keep = progress.Progress(output_dir, {
        "config": dataclasses.asdict(config), "tfnode": files.versions()["tfnode"],
        "models": [progress.model_fingerprint(p) for p in (
            config.model_path, config.compare_model_path, config.source_model_path) if p]},
        log=log)

    images, labels = data.load_arrays(config.dataset, config.split, data_dir=config.data_dir)
    total = min(config.num_examples, len(labels))
    lo, hi = cells_lib.shard_range(total, config.num_shards, config.shard_index)
    if hi <= lo:
        raise TfnodeError(f"shard_index {config.shard_index} of num_shards "
                          f"{config.num_shards} holds no example ({total} examples)")
    run = _Run(config, options, images[lo:hi].astype(np.float32) / 255.0,
               labels[lo:hi].astype(np.int64), np.arange(lo, hi, dtype=np.int64),
               [float(e) for e in config.eps], source, log, verbose, keep)
    n = hi - lo
    where = (f"the first {n}" if config.num_shards == 1 else
             f"shard {config.shard_index} of {config.num_shards} (examples {lo}..{hi - 1}) "
             f"of the first {total}")
    log(f"tfnode: evaluating {len(loaded)} model(s) on {where} {config.dataset} "
        f"{config.split} images, batch {config.batch_size}, {config.schedule} schedule, "
        f"attacks {', '.join(config.attacks)}, eps {', '.join(f'{e:g}' for e in run.eps)}")
    report = {"config": dataclasses.asdict(config), "dataset": config.dataset,
              "split": config.split, "num_examples": n, "batch_size": config.batch_size,
              "eps": run.eps, "eps_scale": config.eps_scale, "seed": config.seed,
              "schedule": config.schedule, "conventions": conventions(config.schedule),
              "attack_options": options, "audit": config.audit, "models": {},
              "source_model": source_info, "record": record or {},
              "versions": files.versions()}
    if config.num_shards > 1:
        report["shard"] = {"index": config.shard_index, "count": config.num_shards,
                           "start": lo, "stop": hi, "total": total}
    for index, (model, info) in enumerate(loaded):
        label = loading.model_label(info)
        while label in report["models"]:
            label += "'"
        report["models"][label] = _evaluate_model(run, model, info, label, index)
    report["warnings"] = [w for label, res in report["models"].items()
                          for w in checks.warnings(label, res["checks"])]
    report["wall_seconds"] = time.time() - start
    arrays = {label: res.pop("_arrays") for label, res in report["models"].items()}
    if config.num_shards > 1:
        arrays_lib.save(os.path.join(output_dir, arrays_lib.FILE), arrays)
    report["paths"] = render.write_report(report, output_dir)
    keep.clear()
    for w in report["warnings"]:
        log(f"tfnode: WARNING {w}")
    log(f"tfnode: report {report['paths']['md']}")
    return report


def conventions(schedule):
    """The report's sentence on how cells were computed under ``schedule``."""
    names = " and ".join(attacks.available(survivors_only=True)) or "no attack"
    return SCHEDULES[schedule].format(survivors=names)


def _evaluate_model(run, model, info, label, index=0):
    """One model's result: clean accuracy, probes, every job's cells, checks, verdict."""
    config, x, y = run.config, run.x, run.y
    t0 = time.time()
    correct = attacks.predict(model, x, batch_size=config.batch_size) == y
    sweep = _Sweep(model, x, y, run.ids, correct, config.batch_size, config.seed,
                   config.schedule == "fast", run.log, run.verbose, label,
                   progress=run.progress, model_index=index)
    out = {"info": info, "clean_accuracy": float(correct.mean()),
           "clean_correct": outcomes.encode(correct), "clean_seconds": time.time() - t0,
           "probes": loading.probe(model, x, y, config.batch_size), "attacks": {}}
    run.log(f"tfnode: {label}: clean accuracy {out['clean_accuracy']:.4f} ({len(y)} images)")
    jobs, skipped = _jobs(run, model, info)
    if config.audit:
        out["audit_skipped"] = skipped
    if sweep.fast:  # the attacks that run on survivors come after all the others
        jobs.sort(key=lambda job: job.spec.survivors_only)
    for job in jobs:
        saved = sweep.restore(job, "job")
        if saved is not None:  # finished by a killed run of the same evaluation
            out["attacks"][job.name], arrays = saved
            sweep.arrays.update({(job.name, key): fields for key, fields in arrays.items()})
            run.log(f"tfnode: {label}: {job.name}: finished before, read back")
            continue
        out["attacks"][job.name] = _run_job(sweep, job, out["attacks"])
        sweep.keep(job, "job", out["attacks"][job.name],
                   {key: fields for (name, key), fields in sweep.arrays.items()
                    if name == job.name})
    # report.json sorts its keys: the order the attacks ran in is kept here.
    out["attack_order"] = list(out["attacks"])
    cells_lib.finish(out, [outcomes.eps_key(e) for e in run.eps], audit=config.audit,
           batch_size=config.batch_size)
    out.update(_measurements(run, sweep, info))
    out["_arrays"] = sweep.arrays
    return out


def _measurements(run, sweep, info):
    """The tolerance grid and the trajectories, where asked for; both are defined with
    PGD (Carrara et al. 2019; the paper's bound), at the run's PGD settings."""
    config, out = run.config, {}
    pgd_options = run.options.get("pgd") or attacks.get("pgd").options(dataset=config.dataset)

    def craft(on, e, title):
        job = _Job(title, attacks.get("pgd"), pgd_options, on, {}, [e])
        # The grid and the trajectories are defined with PGD's end point: no early exit.
        return _craft(sweep, job, e, np.arange(len(sweep.y)), early_exit=False)["x_adv"]

    if config.tolerance_grid:
        out["tolerance_grid"] = audit_lib.tolerance_grid(
            sweep.model, info, run.x, run.y, run.eps, config.tolerance_grid, craft=craft,
            predict=sweep.predict, pgd_options=pgd_options)
    if config.trajectories:
        out["trajectories"] = trajectories.report_entry(
            sweep.model, info, run.x, run.eps, craft=craft, batch_size=config.batch_size,
            seed=config.seed)
    return out


def _jobs(run, model, info):
    """The jobs of one model, and ``{audit attack: why it was skipped}``."""
    names, variants, skipped = list(run.config.attacks), [], {}
    if run.config.audit:
        variants, registered, skipped = audit_lib.plan(info, has_source=run.source is not None)
        names += [n for n in registered if n not in names]
    jobs = []
    for name in names:
        spec = attacks.get(name)
        role = "source" if spec.needs_source else "model"
        jobs.append(_Job(name, spec, run.options[name],
                         run.source if spec.needs_source else model,
                         _meta(name, spec, run.options[name], crafted_on=role), run.eps))
    for v in variants:
        spec = attacks.get(v.attack)
        crafted_on = model
        if v.solver_options is not None:
            crafted_on = models.with_solver_options(model, **v.solver_options)
        meta = _meta(v.attack, spec, run.options[v.name],
                     crafted_on="surrogate" if v.solver_options is not None else "model",
                     role=v.role, compares_with=v.compares_with, why=v.why,
                     surrogate_solver_options=v.solver_options)
        jobs.append(_Job(v.name, spec, run.options[v.name], crafted_on, meta,
                         [audit_lib.UNBOUNDED_EPS] if v.role == "sanity" else run.eps))
    return jobs, skipped


def _meta(attack, spec, options, *, crafted_on, **extra):
    """An attack's ``meta`` in the report: what the checks read (`tfnode.checks`)."""
    return {"attack": attack, "kind": spec.kind, "crafted_on": crafted_on, "options": options,
            "iterations": spec.iterations(options) if spec.iterations else None,
            **{k: v for k, v in extra.items() if v is not None}}


def _craft(sweep, job, eps, idx, *, early_exit):
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
    sweep.log(f"tfnode: {sweep.label}: {job.name}" + ("" if eps is None else f" eps {eps:g}")
              + (f", {len(idx)} of {len(sweep.y)} examples" if len(idx) < len(sweep.y)
                 else ""))
    chunks = [idx[i:i + sweep.batch_size] for i in range(0, len(idx), sweep.batch_size)]
    bar = keras.utils.Progbar(len(chunks), verbose=1 if sweep.verbose else 0,
                              unit_name="batch")
    parts = []
    for k, rows in enumerate(chunks):
        keyed = job.spec.early_exit
        take = rows if job.spec.takes_batch_size else padded(
            rows, bucket(len(rows), sweep.batch_size))
        part = job.spec.run(job.crafted_on, sweep.x[take], sweep.y[take], eps=eps,
                            seed=sweep.seed if keyed else sweep.seed + k,
                            batch_size=sweep.batch_size, ids=sweep.ids[take],
                            early_exit=early_exit, **job.options)
        parts.append(part if job.spec.takes_batch_size else _cut(part, len(rows)))
        bar.update(k + 1)

    def joined(values):
        return None if any(v is None for v in values) else np.concatenate(values)

    return {"x_adv": joined([p.x_adv for p in parts]),
            "queries": joined([p.queries for p in parts]),
            "is_adv": joined([p.is_adv for p in parts]),
            "gradients": joined([p.details.get("gradients") for p in parts]),
            "exited": joined([p.details.get("exited") for p in parts])}


def _cut(result, n):
    """The first ``n`` rows of an `AttackResult`'s per-sample fields."""
    def first(v):
        return None if v is None else np.asarray(v)[:n]
    return dataclasses.replace(result, x_adv=first(result.x_adv), is_adv=first(result.is_adv),
                               queries=first(result.queries),
                               details={k: first(v) if np.ndim(v) else v
                                        for k, v in result.details.items()})


def _early_exit(sweep, job):
    """Early exit applies to attacks on the evaluated model itself: a surrogate's or a
    source model's first adversarial is where IT is first fooled, not the model."""
    return sweep.fast and job.crafted_on is sweep.model


def _prior(done):
    """``prior(eps_key)``: the examples every budget attack in ``done`` left robust at
    that eps (None where none ran at it), and the names of those attacks."""
    names = outcomes.budget_attacks({"attacks": done})

    def robust(key):
        masks = [outcomes.decode(done[n]["cells"][key]["robust"]) for n in names
                 if key in done[n]["cells"]]
        return np.logical_and.reduce(masks) if masks else None
    return robust, names


def _run_job(sweep, job, done):
    """``{"meta", "cells", "throughput"}`` (and ``"summary"`` for a distance-minimizing
    attack). ``done``: the attacks already run on this model (for ``survivors_only``)."""
    prior, names = _prior(done) if sweep.fast and job.spec.survivors_only else (None, [])
    if prior is not None and names:
        job.meta["survivors_of"] = names
    if sweep.fast:  # robust accuracy cannot rise with eps: nothing for that check to see
        job.meta["eps_on_survivors"] = True
        job.meta["early_exit"] = bool(job.spec.early_exit and _early_exit(sweep, job))
    start = time.time()
    if job.spec.minimizes_distance:
        out = _distance_job(sweep, job, prior)
    else:
        out = {"meta": job.meta, "cells": _budget_cells(sweep, job, prior)}
    attacked = sum(c["attacked"] for c in out["cells"].values()) if not \
        job.spec.minimizes_distance else out["summary"]["attacked"]
    out["throughput"] = cells_lib.throughput(time.time() - start, len(sweep.y) * len(out["cells"]),
                                   attacked)
    sweep.log(f"tfnode: {sweep.label}: {job.name}: {out['throughput']['seconds']:.1f} s, "
              f"{out['throughput']['examples_x_eps_per_second'] or 0:.1f} examples x eps "
              f"per second ({attacked} attacked)")
    return out


def _budget_cells(sweep, job, prior):
    """An attack within each eps (in increasing order; see `SCHEDULES`)."""
    n = len(sweep.y)
    cells = {}
    robust_below = sweep.correct.copy()
    x_carry = sweep.x.copy()  # this attack's adversarials so far (x itself elsewhere)
    own = np.zeros(n, bool)  # examples this attack's own adversarial fooled so far
    for e in sorted(job.eps):
        start = time.time()
        key = outcomes.eps_key(e)
        saved = sweep.restore(job, f"eps-{key}")
        if saved is not None:  # a killed run finished this cell: continue after it
            cells[key], arrays = saved
            sweep.arrays[(job.name, key)] = arrays["example"]
            own = arrays["example"]["own"]
            if sweep.fast:
                carry = arrays.get("carry", {})
                if "rows" in carry:
                    x_carry[carry["rows"]] = carry["x"]
                robust_below = arrays["robust"]["robust"]
            continue
        todo = np.ones(n, bool)
        if sweep.fast:
            todo = robust_below.copy()
            if prior is not None and prior(key) is not None:
                todo &= prior(key)
        idx = np.flatnonzero(todo)
        x_adv, robust = x_carry.copy(), np.zeros(n, bool)
        crafted = {"queries": None, "gradients": None}
        rerun = np.zeros(0, np.int64)

        def attack(rows, early_exit):
            out = _craft(sweep, job, e, rows, early_exit=early_exit)
            x_adv[rows] = out["x_adv"]
            robust[rows] = sweep.correct[rows] & (
                sweep.predict(sweep.model, out["x_adv"]) == sweep.y[rows])
            return out

        if len(idx):
            crafted = attack(idx, _early_exit(sweep, job))
            if crafted["exited"] is not None:
                # The attack's first adversarial lies just past the decision boundary, seen
                # through the gradient's graph; the evaluation's compiled forward pass may
                # round it back. Those examples get the whole attack (the exhaustive
                # schedule's run, the same draws), so early exit never makes one robust.
                rerun = idx[crafted["exited"] & robust[idx]]
        if len(rerun):
            again = attack(rerun, False)
            if crafted["gradients"] is not None:
                crafted["gradients"][np.searchsorted(idx, rerun)] += again["gradients"]
        fooled_here = todo & sweep.correct & ~robust
        carried = own.copy() if sweep.fast else np.zeros(n, bool)
        own = (own | fooled_here) if sweep.fast else fooled_here
        if sweep.fast:
            x_carry[fooled_here] = x_adv[fooled_here]
            robust_below = robust
        per_example = {"own": own, "attacked": todo, "l2": None, "linf": None}
        per_example["l2"], per_example["linf"] = attacks.distances(x_adv, sweep.x)
        if crafted["queries"] is not None:
            per_example["queries"] = _spread(crafted["queries"], idx, n)
        if crafted["gradients"] is not None:
            per_example["gradients"] = _spread(crafted["gradients"], idx, n)
        if job.crafted_on is not sweep.model:  # how the crafting model itself fared
            per_example["source_correct"] = sweep.predict(job.crafted_on, x_adv) == sweep.y
        sweep.arrays[(job.name, key)] = per_example
        cells[key] = {**cells_lib.cell(e, sweep.correct, robust, per_example),
                      "carried": int(carried.sum()), "exit_not_confirmed": int(len(rerun)),
                      "seconds": time.time() - start}
        # What the next eps continues from: the adversarials found here (only they
        # changed) and the examples still robust.
        rows = np.flatnonzero(fooled_here) if sweep.fast else np.zeros(0, np.int64)
        sweep.keep(job, f"eps-{key}", cells[key], {
            "example": per_example, "robust": {"robust": robust},
            "carry": {"rows": rows, "x": x_adv[rows]}})
    return cells


def _spread(values, idx, n):
    out = np.zeros(n, np.asarray(values).dtype)
    out[idx] = values
    return out


def _distance_job(sweep, job, prior):
    """One unbounded run; an eps cell counts the adversarials found within eps (Linf).

    The fast schedule runs it only on the examples every attack before it left robust at
    the smallest eps (at a larger eps fewer are left), and a cell is then robust after
    those attacks and this one; the summary (median L2) is over the examples it ran on,
    and says so.

    The attack's adversarials are confirmed on the whole evaluation batches through the
    same computation its oracle used (`tfnode.attacks.predict` with the attack's ``xla``
    option, padded to the batch size where it is on): at the decision boundary an
    adaptive solver turns a rounding difference into other steps, so another
    compilation of the model could throw real adversarials away.
    With batch-shared solver steps a decision can still change with the batch; those
    are counted in ``num_found_not_confirmed_in_evaluation_batches``.
    """
    n = len(sweep.y)
    keys = [outcomes.eps_key(e) for e in job.eps]
    smallest = min(job.eps)
    candidates = np.ones(n, bool)
    survivors = prior(outcomes.eps_key(smallest)) if prior is not None else None
    if sweep.fast:
        candidates = sweep.correct & (survivors if survivors is not None else True)
    idx = np.flatnonzero(candidates)
    start = time.time()
    x_adv = sweep.x.copy()
    queries, is_adv, confirmed = np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool)
    if len(idx):
        crafted = _craft(sweep, job, None, idx, early_exit=False)
        x_adv[idx] = crafted["x_adv"]
        queries[idx], is_adv[idx] = crafted["queries"], crafted["is_adv"]
        xla = bool(job.options.get("xla", False))
        confirmed[idx] = sweep.predict(sweep.model, crafted["x_adv"], xla=xla,
                                       pad_to_batch=xla) != sweep.y[idx]
    found = sweep.correct & is_adv & confirmed
    l2, linf = attacks.distances(x_adv, sweep.x)
    seconds = time.time() - start
    cells = {}
    for e, key in zip(job.eps, keys):
        within = found & (linf <= e + 1e-6)
        base = sweep.correct
        if survivors is not None and sweep.fast:
            base = prior(key) if prior(key) is not None else sweep.correct
        per_example = {"own": within, "attacked": candidates, "l2": l2, "linf": linf,
                       "queries": queries}
        sweep.arrays[(job.name, key)] = per_example
        cells[key] = {**cells_lib.cell(e, sweep.correct, base & ~within, per_example),
                      "seconds": seconds}
    summary_arrays = {"found": found, "candidates": candidates, "l2": l2, "linf": linf,
                      "queries": queries, "not_confirmed": sweep.correct & is_adv & ~confirmed}
    sweep.arrays[(job.name, "summary")] = summary_arrays
    over = ("the clean-correct examples" if not sweep.fast else
            "the clean-correct examples" + (f" that {', '.join(job.meta['survivors_of'])} "
                                            f"left robust at eps {smallest:g}"
                                            if survivors is not None else ""))
    return {"meta": job.meta, "cells": cells,
            "summary": {**cells_lib.summary(summary_arrays, sweep.correct), "over": over,
                        "seconds": seconds}}
