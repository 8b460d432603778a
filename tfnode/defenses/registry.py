"""The defense registry: adversarial-training modes that `tfnode.training` plugs into fit.

A defense is a train-step function (`DefenseSpec.step`): given the model and a batch it
returns the training loss, the logits the training metrics are computed on, and the
gradients of the model's trainable weights. `tfnode.defenses.DefendedModel` runs it
inside Keras' own ``fit`` (its ``train_step``), so checkpoints, resume, callbacks and
metrics are the same as for standard training. A new defense is its module, its
`register` call and its test.
"""

import dataclasses
import types
from typing import Any, Callable, Mapping

from tfnode.registry import NONNEGATIVE_COUNT, Registry, resolve_options

# Every defense with an ``eps`` also takes ``eps_warmup``: the radius grows linearly from
# 0 to ``eps`` over that many optimizer steps (0: the full radius from the first step).
# From scratch at MNIST's eps 0.3, PGD-AT can sit at chance for thousands of steps (Madry
# et al. train for 100k); a linear eps ramp is Gowal et al. 2018's (IBP) remedy, and a
# short budget needs it. `DefendedModel` applies it, so no step function knows of it.
EPS_WARMUP = "eps_warmup"


@dataclasses.dataclass(frozen=True)
class DefenseSpec:
    """One registered defense.

    Attributes:
      name: the name ``--defense`` takes.
      step: ``step(model, x, y, *, seed, **options) -> (loss, logits, gradients)``, traced
        inside ``fit``'s train function; ``seed`` is a `keras.random.SeedGenerator`,
        ``gradients`` align with ``model.trainable_weights``. It gets the options
        without ``eps_warmup`` (`DefendedModel` ramps ``eps`` itself).
      defaults: every option with its published default (MNIST's where they differ);
        ``eps_warmup`` (0) is added to every defense with an ``eps``.
      rules: a `tfnode.registry.Rule` per option.
      summary: one line for docs and ``--help``.
      reference: the paper the defense is from.
      dataset_defaults: ``{dataset: {option: value}}`` where the published setting for
        that dataset differs.
      metrics_on: what the training metrics (``accuracy``) are computed on.
    """
    name: str
    step: Callable
    defaults: Mapping[str, Any]
    rules: Mapping[str, Any]
    summary: str
    reference: str
    dataset_defaults: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=dict)
    metrics_on: str = "the adversarial examples"

    def __post_init__(self):
        defaults, rules = dict(self.defaults), dict(self.rules)
        if "eps" in defaults:
            defaults.setdefault(EPS_WARMUP, 0)
            rules.setdefault(EPS_WARMUP, NONNEGATIVE_COUNT)
        object.__setattr__(self, "defaults", types.MappingProxyType(defaults))
        object.__setattr__(self, "rules", types.MappingProxyType(rules))

    def options(self, overrides=None, *, dataset=None):
        """Defaults, then ``dataset``'s, then ``overrides``; checked (one-line errors)."""
        return resolve_options("defense", self.name, defaults=self.defaults, rules=self.rules,
                               overrides=overrides, dataset_defaults=self.dataset_defaults,
                               dataset=dataset)


_REGISTRY = Registry("defense")


def register(spec):
    """Adds ``spec`` to the registry (each name once); returns it."""
    return _REGISTRY.add(spec.name, spec)


def get(name):
    """The `DefenseSpec` of ``name``; a one-line `TfnodeError` for an unknown name."""
    return _REGISTRY.lookup(name)


def available():
    """Registered names, in registration order."""
    return list(_REGISTRY)
