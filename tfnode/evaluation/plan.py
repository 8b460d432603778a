"""Which attack jobs run on which model: the attacks asked for, on the evaluated model or
(``needs_source``) on the source model, and with ``audit`` the audit's attacks and
variants (`tfnode.evaluation.audit.plan`), some on a solver surrogate of the model."""

import dataclasses

import numpy as np

from tfnode import attacks, models
from tfnode.evaluation import audit as audit_lib
from tfnode.evaluation.config import EvalConfig


@dataclasses.dataclass
class Job:
    """One attack of one model's evaluation: what runs, on which model, and its report meta.

    Attributes:
      name: the attack's or audit variant's name (its key in the report).
      spec: its `tfnode.attacks.AttackSpec`.
      options: its resolved options (`tfnode.evaluation.config.resolve_options`).
      crafted_on: the model its adversarials are crafted on (the evaluated model, a
        solver surrogate of it, or the source model).
      meta: the report's ``meta`` of the attack (`meta`).
      eps: the budgets it runs at.
    """
    name: str
    spec: attacks.AttackSpec
    options: dict
    crafted_on: object
    meta: dict
    eps: list


@dataclasses.dataclass
class Run:
    """What every model of one evaluation shares.

    Attributes:
      config: the `EvalConfig`.
      options: ``{attack or variant: options}`` (`resolve_options`).
      x, y, ids: this run's (shard's) images on [0, 1], labels, and indices in the split.
      eps: the budgets, as floats.
      source: the source model, or None.
      log: where progress lines go.
      verbose: show progress bars.
      progress: the finished cells on disk (`tfnode.evaluation.progress.Progress`), or None.
    """
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


def jobs(run, model, info):
    """The jobs of one model, and ``{audit attack: why it was skipped}``.

    Args:
      run: the `Run`.
      model: the evaluated model.
      info: its info (`tfnode.exports.read.load_model`), which the audit's plan reads.
    """
    named = [n for n in run.config.attacks if n in audit_lib.NAMES]
    names = [n for n in run.config.attacks if n not in audit_lib.NAMES]
    variants, skipped = [], {}
    if run.config.audit:
        variants, registered, skipped = audit_lib.plan(info, has_source=run.source is not None)
        names += [n for n in registered if n not in names]
    elif named:  # audit attacks named in attacks: those alone, where they apply
        applicable, _, why_not = audit_lib.plan(info, has_source=run.source is not None)
        variants = [v for v in applicable if v.name in named]
        skipped = {n: why for n, why in why_not.items() if n in named}
        names += [audit_lib.variant(n).attack for n in named
                  if audit_lib.variant(n).attack not in names]
    out = []
    for name in names:
        spec = attacks.get(name)
        role = "source" if spec.needs_source else "model"
        out.append(Job(name, spec, run.options[name],
                       run.source if spec.needs_source else model,
                       meta(name, spec, run.options[name], crafted_on=role), run.eps))
    for v in variants:
        spec = attacks.get(v.attack)
        crafted_on = model
        if v.solver_options is not None:
            crafted_on = models.with_solver_options(model, **v.solver_options)
        job_meta = meta(v.attack, spec, run.options[v.name],
                        crafted_on="surrogate" if v.solver_options is not None else "model",
                        role=v.role, compares_with=v.compares_with, why=v.why,
                        surrogate_solver_options=v.solver_options)
        out.append(Job(v.name, spec, run.options[v.name], crafted_on, job_meta,
                       [audit_lib.UNBOUNDED_EPS] if v.role == "sanity" else run.eps))
    return out, skipped


def meta(attack, spec, options, *, crafted_on, **extra):
    """An attack's ``meta`` in the report: what the checks read (`tfnode.evaluation.checks`)."""
    return {"attack": attack, "kind": spec.kind, "crafted_on": crafted_on, "options": options,
            "iterations": spec.iterations(options) if spec.iterations else None,
            **{k: v for k, v in extra.items() if v is not None}}
