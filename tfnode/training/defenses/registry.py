"""The defense registry: adversarial training as per-batch loss functions.

A defense is a loss function (`DefenseSpec.fn`): given the model and a batch it returns
the training loss and the logits the training metrics are computed on. Its adversarials
are crafted inside it and enter the loss through ``tf.stop_gradient`` (the defenses
train on them as constant inputs, as Madry et al. 2018 and Zhang et al. 2019 do), so any
training loop takes the gradient of the loss under its own ``tf.GradientTape`` and
applies it: `tfnode.training.defenses.DefendedModel` inside Keras' ``fit`` (so
checkpoints, resume, callbacks and metrics are those of standard training), or a custom
loop. A new defense is its module, its `register` call and its test.
"""

import dataclasses
import types
from typing import Any, Callable, Mapping

import tensorflow as tf

from tfnode.registry import NONNEGATIVE_COUNT, Registry, resolve_options

# Every defense with an ``eps`` also takes ``eps_warmup``: the radius grows linearly from
# 0 to ``eps`` over that many optimizer steps (0: the full radius from the first step).
# From scratch at MNIST's eps 0.3, PGD-AT can sit at chance for thousands of steps (Madry
# et al. train for 100k); a linear eps ramp is Gowal et al. 2018's (IBP) remedy, and a
# short budget needs it. `warm_up` applies it for every defense (`DefenseSpec.loss`), so
# no loss function knows of it.
EPS_WARMUP = "eps_warmup"


def warm_up(options, step):
    """The options a loss function sees at optimizer step ``step``: ``eps_warmup`` taken
    out and ``eps`` scaled by ``min(1, (step + 1) / eps_warmup)``.

    Args:
      options: a defense's options (`DefenseSpec.options`).
      step: the optimizer's iteration count before this step (``optimizer.iterations``:
        it is checkpointed, so a resumed run continues the ramp).

    Returns:
      A new dict; without a warm-up ``eps`` is left as given (a Python number).
    """
    options = dict(options)
    warmup = options.pop(EPS_WARMUP, 0)
    if warmup:
        options["eps"] = options["eps"] * ramp(warmup, step)
    return options


def ramp(warmup, step):
    """``min(1, (step + 1) / warmup)``: how far the ``eps_warmup`` ramp is (1 without one)."""
    if not warmup:
        return tf.constant(1.0)
    return tf.minimum(1.0, tf.cast(step + 1, tf.float32) / float(warmup))


@dataclasses.dataclass(frozen=True)
class DefenseSpec:
    """One registered defense.

    Attributes:
      name: the name ``--defense`` takes.
      fn: ``fn(model, x, y, *, seed, **options) -> (loss, logits)``, the defense's loss
        on one batch, called under the training loop's gradient tape (traced inside
        ``fit``'s train function, or a custom loop's); ``seed`` is a
        `keras.random.SeedGenerator`. Its adversarials carry no gradient. It gets the
        options without ``eps_warmup`` (`loss` ramps ``eps`` first).
      defaults: every option with its published default (MNIST's where they differ);
        ``eps_warmup`` (0) is added to every defense with an ``eps``.
      rules: a `tfnode.registry.Rule` per option.
      summary: one line for docs and ``--help``.
      reference: the paper the defense is from.
      dataset_defaults: ``{dataset: {option: value}}`` where the published setting for
        that dataset differs.
      metrics_on: what the training metrics (``accuracy``) are computed on.
      guard: a check at each epoch's end that may stop training, or None:
        ``guard(net, options, *, batch, weights_pattern, previous, log)`` -> a Keras
        callback (``batch``: a held-out ``(x, y)`` batch of the validation split;
        ``weights_pattern``: the epoch checkpoints; ``previous``: the ``guard_metric``
        of the last epoch of a resumed run, or None); after a stop its ``stopped_after``
        is the 1-based epoch whose weights it kept.
      guard_option: the option that turns the guard on (> 0), and off (0).
      guard_metric: the epoch log the guard writes.
      takes_ramp: ``fn`` also gets ``ramp``, the ``eps_warmup`` ramp's fraction (`ramp`),
        for schedules that follow it (IBP's kappa).
      model_check: ``model_check(net)`` raises a one-line `ConfigError` for a model the
        defense cannot train, before any folder is written (IBP: a model that interval
        bounds cannot pass), or None.
      initialize: ``initialize(net, options, *, seed)`` re-draws the freshly built
        model's weights as the defense needs them (IBP's initialization), or None; a
        resumed run then restores its own weights over them.
    """
    name: str
    fn: Callable
    defaults: Mapping[str, Any]
    rules: Mapping[str, Any]
    summary: str
    reference: str
    dataset_defaults: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=dict)
    metrics_on: str = "the adversarial examples"
    guard: Callable | None = None
    guard_option: str | None = None
    guard_metric: str | None = None
    takes_ramp: bool = False
    model_check: Callable | None = None
    initialize: Callable | None = None

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

    def guarded(self, options):
        """Whether ``options`` turn the defense's epoch-end guard on."""
        return self.guard is not None and bool(options.get(self.guard_option))

    def prepare(self, net, options, *, seed):
        """Readies a freshly built model: refuses one the defense cannot train
        (`model_check`), then draws the weights it starts from (`initialize`)."""
        if self.model_check:
            self.model_check(net)
        if self.initialize:
            self.initialize(net, options, seed=seed)

    def loss(self, model, x, y, step, *, seed, **options):
        """The defense's loss on one batch, for any training loop to differentiate.

        Call it under a ``tf.GradientTape`` and apply the tape's gradient of ``loss``
        with respect to ``model.trainable_weights``; that is the whole training step.

        Args:
          model: the Keras model being trained.
          x: the batch's inputs, in [0, 1].
          y: its integer labels.
          step: the optimizer's iteration count (``optimizer.iterations``), for the
            ``eps_warmup`` ramp (`warm_up`).
          seed: a `keras.random.SeedGenerator` for the random starts.
          **options: the defense's options (`options`), ``eps_warmup`` included.

        Returns:
          ``(loss, logits)``: the scalar to differentiate (and log), and the logits the
          training metrics are computed on (`metrics_on`).
        """
        extra = {"ramp": ramp(options.get(EPS_WARMUP, 0), step)} if self.takes_ramp else {}
        return self.fn(model, x, y, seed=seed, **warm_up(options, step), **extra)


_REGISTRY = Registry("defense")
# register(spec) adds a `DefenseSpec` (each name once); get(name) is its spec, or a one-line
# `TfnodeError` for an unknown name; available() lists the names in registration order.
register, get, available = _REGISTRY.register, _REGISTRY.lookup, _REGISTRY.names
