"""The regularizer registry: penalties added to any training loss (issue 29).

A regularizer is a function of the model and the clean batch (`RegularizerSpec.fn`) that
returns the batch's logits and a scalar penalty. It combines with any defense: without
one, the loss is the cross-entropy of those logits plus the penalty (one forward pass);
with one, the defense's loss plus the penalty on the clean batch (an extra forward pass:
the regularized trajectories are the training images', as in Finlay et al. 2020).
`tfnode.training.defenses.DefendedModel` adds it; a new regularizer is its module, its
`register` call and its test.
"""

import dataclasses
import types
from typing import Any, Callable, Mapping

from tfnode.registry import Registry, resolve_options


@dataclasses.dataclass(frozen=True)
class RegularizerSpec:
    """One registered regularizer.

    Attributes:
      name: the name ``--regularizer`` takes.
      fn: ``fn(model, x, *, seed, **options) -> (logits, penalty)``: the model's logits
        on ``x`` (in training mode) where the penalty needs that forward pass, else None
        (the training step then runs it only if no defense does), and the scalar
        penalty, differentiable in the model's weights; ``seed`` is a
        `keras.random.SeedGenerator`.
      defaults: every option with its published default.
      rules: a `tfnode.registry.Rule` per option.
      summary: one line for docs and ``--help``.
      reference: the paper (and code) the regularizer follows.
      model_check: ``model_check(net)`` raises a one-line `ConfigError` for a model the
        regularizer cannot walk, before any folder is written.
      measure: ``measure(net) -> {name: float}``, or None: what the penalty bounds,
        measured on the trained weights and recorded in ``metrics.json`` (a soft penalty
        need not reach its bound, and a user tuning its weight needs to see how far off
        it is).
    """
    name: str
    fn: Callable
    defaults: Mapping[str, Any]
    rules: Mapping[str, Any]
    summary: str
    reference: str
    model_check: Callable
    measure: Callable | None = None

    def __post_init__(self):
        object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "rules", types.MappingProxyType(dict(self.rules)))

    def options(self, overrides=None):
        """Defaults, then ``overrides``; checked (one-line errors)."""
        return resolve_options("regularizer", self.name, defaults=self.defaults,
                               rules=self.rules, overrides=overrides)


_REGISTRY = Registry("regularizer")
# register(spec) adds a `RegularizerSpec` (each name once); get(name) is its spec, or a one-line
# `TfnodeError` for an unknown name; available() lists the names in registration order.
register, get, available = _REGISTRY.register, _REGISTRY.lookup, _REGISTRY.names


def record(name, options, net):
    """What ``metrics.json`` records of a run's regularizer: ``regularizer``,
    ``regularizer_options`` and ``regularizer_measured``, what the penalty bounds on
    ``net``'s trained weights (`RegularizerSpec.measure`; None without one)."""
    measure = get(name).measure if name else None
    return {"regularizer": name, "regularizer_options": options,
            "regularizer_measured": measure(net) if measure else None}
