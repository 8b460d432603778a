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
"""

import dataclasses
import os
import time
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from tfnode import attacks, audit as audit_lib, checks, data, files, loading, outcomes, render
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
      seed: seed of random starts, transforms and proposals (batch k uses seed + k).
      audit: add the gradient-masking audit (`tfnode.audit`) and its verdict.
      per_sample_steps: evaluate ODE models with per-sample steps where they apply
        (`tfnode.loading.with_per_sample_steps`), so no result depends on the batch.
      tolerance_grid: rtol = atol values of the attack-time x inference-time grid.
      trajectories: measure the paper's bound (`tfnode.trajectories`).
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


def resolve_options(config):
    """``{name: options}`` of every attack the run may need, checked before any work.

    Raises:
      TfnodeError: one line naming the bad attack, option or value.
    """
    for name, value in (("num_examples", config.num_examples),
                        ("batch_size", config.batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise TfnodeError(f"{name} must be an integer >= 1, got {value!r}")
    if not config.attacks:
        raise TfnodeError(f"no attacks given; expected some of {attacks.available()}")
    if not config.eps:
        raise TfnodeError("no eps given; give at least one budget")
    for e in config.eps:
        if not 0.0 <= e <= 1.0:
            raise TfnodeError(f"eps {e:g} is outside [0, 1], the pixel range of the inputs")
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
    correct: np.ndarray
    batch_size: int
    seed: int
    log: object
    verbose: int
    label: str = ""

    def batches(self):
        return [(i, min(i + self.batch_size, len(self.y)))
                for i in range(0, len(self.y), self.batch_size)]

    def predict(self, model, x_adv, *, xla=True):
        return attacks.predict(model, x_adv, batch_size=self.batch_size, xla=xla)


@dataclasses.dataclass
class _Run:
    """What every model of one evaluation shares."""
    config: EvalConfig
    options: dict
    x: np.ndarray
    y: np.ndarray
    eps: list
    source: object
    log: object
    verbose: int


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
    files.check_writable(output_dir, flag="--output_dir")

    images, labels = data.load_arrays(config.dataset, config.split, data_dir=config.data_dir)
    n = min(config.num_examples, len(labels))
    run = _Run(config, options, images[:n].astype(np.float32) / 255.0,
               labels[:n].astype(np.int64), [float(e) for e in config.eps], source, log,
               verbose)
    log(f"tfnode: evaluating {len(loaded)} model(s) on the first {n} {config.dataset} "
        f"{config.split} images, batch {config.batch_size}, attacks "
        f"{', '.join(config.attacks)}, eps {', '.join(f'{e:g}' for e in run.eps)}")
    report = {"config": dataclasses.asdict(config), "dataset": config.dataset,
              "split": config.split, "num_examples": n, "batch_size": config.batch_size,
              "eps": run.eps, "eps_scale": config.eps_scale, "seed": config.seed,
              "attack_options": options, "audit": config.audit, "models": {},
              "source_model": source_info, "record": record or {},
              "versions": files.versions()}
    for model, info in loaded:
        label = loading.model_label(info)
        while label in report["models"]:
            label += "'"
        report["models"][label] = _evaluate_model(run, model, info, label)
    report["warnings"] = [w for label, res in report["models"].items()
                          for w in checks.warnings(label, res["checks"])]
    report["wall_seconds"] = time.time() - start
    report["paths"] = render.write_report(report, output_dir)
    for w in report["warnings"]:
        log(f"tfnode: WARNING {w}")
    log(f"tfnode: report {report['paths']['md']}")
    return report


def _evaluate_model(run, model, info, label):
    """One model's result: clean accuracy, probes, every job's cells, checks, verdict."""
    config, x, y = run.config, run.x, run.y
    t0 = time.time()
    correct = attacks.predict(model, x, batch_size=config.batch_size) == y
    sweep = _Sweep(model, x, y, correct, config.batch_size, config.seed, run.log, run.verbose,
                   label)
    out = {"info": info, "clean_accuracy": float(correct.mean()),
           "clean_correct": outcomes.encode(correct), "clean_seconds": time.time() - t0,
           "probes": loading.probe(model, x, y, config.batch_size), "attacks": {}}
    run.log(f"tfnode: {label}: clean accuracy {out['clean_accuracy']:.4f} ({len(y)} images)")
    jobs, skipped = _jobs(run, model, info)
    if config.audit:
        out["audit_skipped"] = skipped
    for job in jobs:
        out["attacks"][job.name] = _run_job(sweep, job)
    eps_keys = [outcomes.eps_key(e) for e in run.eps]
    out["worst_case"] = outcomes.worst_case(out, eps_keys)
    out["checks"] = checks.run_all(out, eps_keys=eps_keys, batch_size=config.batch_size)
    if config.audit:
        out["verdict"] = audit_lib.verdict(out, out["checks"], eps_keys)
    out.update(_measurements(run, sweep, info))
    return out


def _measurements(run, sweep, info):
    """The tolerance grid and the trajectories, where asked for; both are defined with
    PGD (Carrara et al. 2019; the paper's bound), at the run's PGD settings."""
    config, out = run.config, {}
    pgd_options = run.options.get("pgd") or attacks.get("pgd").options(dataset=config.dataset)

    def craft(on, e, title):
        return _craft(sweep, _Job(title, attacks.get("pgd"), pgd_options, on, {}, [e]), e)[0]

    if config.tolerance_grid:
        out["tolerance_grid"] = audit_lib.tolerance_grid(
            sweep.model, info, run.x, run.y, run.eps, config.tolerance_grid, craft=craft,
            predict=sweep.predict, pgd_options=pgd_options)
    if config.trajectories:
        from tfnode import trajectories

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
            from tfnode import models

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


def _craft(sweep, job, eps):
    """Runs ``job`` at ``eps`` batch by batch (batch k seeded ``seed + k``).

    Returns:
      ``(x_adv, queries or None, is_adv or None)`` over all examples.
    """
    sweep.log(f"tfnode: {sweep.label}: {job.name}" + ("" if eps is None else f" eps {eps:g}"))
    bar = keras.utils.Progbar(len(sweep.batches()), verbose=1 if sweep.verbose else 0,
                              unit_name="batch")
    parts = []
    for k, (i, j) in enumerate(sweep.batches()):
        parts.append(job.spec.run(job.crafted_on, sweep.x[i:j], sweep.y[i:j], eps=eps,
                                  seed=sweep.seed + k, batch_size=sweep.batch_size,
                                  **job.options))
        bar.update(k + 1)

    def joined(field):
        values = [getattr(p, field) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    return joined("x_adv"), joined("queries"), joined("is_adv")


def _run_job(sweep, job):
    """``{"meta", "cells"}`` (and ``"summary"`` for a distance-minimizing attack)."""
    if job.spec.minimizes_distance:
        return _distance_job(sweep, job)
    cells = {}
    for e in job.eps:
        start = time.time()
        x_adv, queries, _ = _craft(sweep, job, e)
        cell = _cell(sweep, sweep.correct & (sweep.predict(sweep.model, x_adv) == sweep.y),
                     x_adv, eps=e, queries=queries)
        if job.crafted_on is not sweep.model:  # how the crafting model itself fared
            cell["source_accuracy"] = float(np.mean(
                sweep.predict(job.crafted_on, x_adv) == sweep.y))
        cells[outcomes.eps_key(e)] = {**cell, "seconds": time.time() - start}
    return {"meta": job.meta, "cells": cells}


def _cell(sweep, robust, x_adv, *, eps, queries=None):
    """A cell's numbers from its per-example ``robust`` mask and adversarials."""
    fooled = sweep.correct & ~robust
    l2, linf = attacks.distances(x_adv, sweep.x)
    num_correct = int(sweep.correct.sum())
    cell = {"eps": eps, "robust": outcomes.encode(robust),
            "robust_accuracy": float(robust.mean()),
            "attack_success_rate": float(fooled.sum() / num_correct) if num_correct else None,
            "num_clean_correct": num_correct, "num_fooled": int(fooled.sum()),
            "max_linf_all": float(linf.max(initial=0.0)),
            **outcomes.norm_stats(l2[fooled], linf[fooled])}
    if queries is not None:
        cell.update(queries_mean=float(queries.mean()), queries_max=int(queries.max()))
    return cell


def _distance_job(sweep, job):
    """One unbounded run; an eps cell counts the adversarials found within eps (Linf).

    The attack's adversarials are confirmed on the whole evaluation batches through the
    same computation its oracle used (`tfnode.attacks.predict` with ``xla=False``): at
    the decision boundary an adaptive solver turns a rounding difference into other
    steps, so another compilation of the model could throw real adversarials away.
    With batch-shared solver steps a decision can still change with the batch; those
    are counted in ``num_found_not_confirmed_in_evaluation_batches``.
    """
    start = time.time()
    x_adv, queries, is_adv = _craft(sweep, job, None)
    confirmed = sweep.predict(sweep.model, x_adv, xla=False) != sweep.y
    found = sweep.correct & is_adv & confirmed
    l2, linf = attacks.distances(x_adv, sweep.x)
    seconds = time.time() - start
    cells = {}
    for e in job.eps:
        robust = sweep.correct & ~(found & (linf <= e + 1e-6))
        cells[outcomes.eps_key(e)] = {**_cell(sweep, robust, x_adv, eps=e, queries=queries),
                                      "seconds": seconds}
    summary = {"num_clean_correct": int(sweep.correct.sum()),
               "num_adversarial_found": int(found.sum()),
               "num_found_not_confirmed_in_evaluation_batches": int(np.sum(
                   sweep.correct & is_adv & ~confirmed)),
               "queries_mean": float(queries.mean()), "queries_max": int(queries.max()),
               **outcomes.norm_stats(l2[found], linf[found]), "seconds": seconds}
    return {"meta": job.meta, "cells": cells, "summary": summary}
