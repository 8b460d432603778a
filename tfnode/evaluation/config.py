"""What an evaluation depends on (`EvalConfig`), its checks before any work
(`resolve_options`), and the conventions the report states (`SCHEDULES`, `conventions`).

Conventions (RobustBench / AutoAttack): an example is robust under an attack if the model
classifies it correctly both clean and attacked; robust accuracy is over ALL evaluated
examples; the attack success rate is over the clean-correct ones. The two schedules are
described in `tfnode.evaluation.schedule`.
"""

import dataclasses
from typing import Mapping

from tfnode import attacks, registry
from tfnode.errors import ConfigError, TfnodeError
from tfnode.evaluation import audit as audit_lib, outcomes


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Everything an evaluation depends on; recorded verbatim in ``report.json``.

    Attributes:
      model_path: the model to evaluate (`tfnode.exports.read.load_model`).
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
      audit: add the gradient-masking audit (`tfnode.evaluation.audit`) and its verdict.
      per_sample_steps: evaluate ODE models with per-sample steps where they apply
        (`tfnode.exports.read.with_per_sample_steps`), so no result depends on the batch.
      solver_options: solve the model's (and the compared model's) ODE blocks with
        these options instead of their trained ones (same weights;
        `tfnode.exports.read.resolved`): a fixed-step ODE-Net at a finer step, say.
      tolerance_grid: rtol = atol values of the attack-time x inference-time grid.
      trajectories: measure the paper's bound (`tfnode.evaluation.trajectories`).
      schedule: ``"fast"`` or ``"exhaustive"`` (see `tfnode.evaluation.schedule`).
      num_shards: split the examples into this many contiguous shards ...
      shard_index: ... and evaluate this one (0-based); `tfnode.evaluation.shards.merge` joins the
        shards' reports.
      certify: add per eps the certified robust accuracy by interval bound propagation
        (`tfnode.evaluation.certify`; fixed-step models only), bracketing the truth
        between it and the attacks' worst case.
      merge_shards: shard 0 then waits for the other shards' reports in ``output_dir``
        (a folder every shard's job shares) and merges them
        (`tfnode.evaluation.shards.wait_and_merge`); ``tools.evaluate`` sets it when the
        shard comes from ``TF_CONFIG``.
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
    solver_options: Mapping = dataclasses.field(default_factory=dict)
    tolerance_grid: tuple = ()
    trajectories: bool = False
    schedule: str = "fast"
    num_shards: int = 1
    shard_index: int = 0
    merge_shards: bool = False
    certify: bool = False


SCHEDULES = {
    "fast": "fast: gradient attacks keep each example's first adversarial and stop "
            "(early exit); eps in increasing order, each attack only on the examples it "
            "left robust at the eps below, its adversarials carried forward; "
            "{survivors} only on the examples every attack before it left robust (their "
            "cells: robust after those attacks and this one)",
    "exhaustive": "exhaustive: every attack on every example at every eps; a gradient "
                  "attack's last iterate (per restart) is kept",
}


def conventions(schedule):
    """The report's sentence on how cells were computed under ``schedule``."""
    names = " and ".join(attacks.available(survivors_only=True)) or "no attack"
    return SCHEDULES[schedule].format(survivors=names)


def _each(rule, expected, least=0):
    """A rule for a tuple of at least ``least`` values, each passing ``rule``."""
    return registry.Rule(lambda v: isinstance(v, (tuple, list)) and len(v) >= least
                         and all(rule.ok(x) for x in v), expected)


# The fields' own rules (`tfnode.registry.check`); the checks across fields follow them.
RULES = {
    "eps": _each(registry.PROBABILITY, "one or more budgets in [0, 1] (the pixel range of "
                 "the inputs)", least=1),
    "eps_scale": registry.POSITIVE,
    "num_examples": registry.COUNT,
    "batch_size": registry.COUNT,
    "num_shards": registry.COUNT,
    "shard_index": registry.NONNEGATIVE_COUNT,
    "schedule": registry.one_of(*SCHEDULES),
    "tolerance_grid": _each(registry.POSITIVE, "a list of tolerances > 0"),
    "seed": registry.NONNEGATIVE_COUNT,
    "audit": registry.BOOL,
    "per_sample_steps": registry.BOOL,
    "trajectories": registry.BOOL,
    "certify": registry.BOOL,
}


def resolve_options(config):
    """``{name: options}`` of every attack the run may need, checked before any work.

    Raises:
      ConfigError: a field its rule (`RULES`) rejects, or fields that do not go together.
      TfnodeError: one line naming the bad attack, option or value.
    """
    registry.check(config, RULES)
    _check_sizes(config)
    _check_budgets(config)
    unknown = [n for n in config.attacks
               if n not in attacks.available() and n not in audit_lib.NAMES]
    if unknown:
        raise TfnodeError(f"unknown attack {unknown[0]!r}; expected one of "
                          f"{attacks.available() + list(audit_lib.NAMES)}")
    # An audit attack named in attacks runs without the rest of the audit (with the
    # attack it is a variant of, which it is read against).
    named_variants = [audit_lib.variant(n) for n in config.attacks if n in audit_lib.NAMES]
    names = [n for n in config.attacks if n not in audit_lib.NAMES]
    names += [v.attack for v in named_variants]
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
        if name in audit_lib.NAMES:
            continue
        if attacks.get(name).needs_source and not config.source_model_path:
            raise ConfigError("source_model_path", f"is unset, and attack {name!r} needs a "
                              "source model (the model the adversarials are crafted on)")
    for v in audit_lib.VARIANTS:
        if config.audit or v.name in given or v in named_variants:
            resolved[v.name] = attacks.get(v.attack).options(
                {**given.get(v.attack, {}), **v.overrides, **given.get(v.name, {})},
                dataset=config.dataset, label=v.name)
    return resolved


def _check_sizes(config):
    """The shard (the fields' own rules passed)."""
    if config.shard_index >= config.num_shards:
        raise ConfigError("shard_index", f"must be an integer in [0, {config.num_shards - 1}] "
                          f"(num_shards {config.num_shards}), got {config.shard_index!r}")
    if config.num_shards > 1 and (config.tolerance_grid or config.trajectories):
        raise ConfigError("num_shards", f"of {config.num_shards} shards does not combine "
                          "with {tolerance_grid} or {trajectories} (their summaries do not "
                          "merge); run them unsharded")


def _check_budgets(config):
    """Some attacks, and each attack and eps given once (the fields' own rules passed)."""
    if not config.attacks:
        raise ConfigError("attacks", f"is empty; expected some of {attacks.available()}")
    keys = [outcomes.eps_key(e) for e in config.eps]
    twice = sorted({k for k in keys if keys.count(k) > 1}, key=float)
    if twice:
        # Cells are keyed by eps (to 6 significant digits): a repeated budget would
        # silently overwrite its twin.
        raise ConfigError("eps", f"{', '.join(twice)} given twice; give each budget once")
    for name in config.attacks:
        if list(config.attacks).count(name) > 1:
            raise ConfigError("attacks", f"{name!r} given twice; give each once")
