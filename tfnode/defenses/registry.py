"""The defense registry: adversarial-training modes that `tfnode.train` plugs into fit.

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

from tfnode.registry import Registry, resolve_options


@dataclasses.dataclass(frozen=True)
class DefenseSpec:
    """One registered defense.

    Attributes:
      name: the name ``--defense`` takes.
      step: ``step(model, x, y, *, seed, **options) -> (loss, logits, gradients)``, traced
        inside ``fit``'s train function; ``seed`` is a `keras.random.SeedGenerator`,
        ``gradients`` align with ``model.trainable_weights``.
      defaults: every option with its published default (MNIST's where they differ).
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
        object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))

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
