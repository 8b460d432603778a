"""The one attack registry: what evaluation, audit, flags and tests know about an attack.

Each attack module registers its attacks with `register` (torchdiffeq's ``SOLVERS``
table, spread over the modules that define them). An `AttackSpec` says how to call the
attack and what it is: its kind (white-box, score-based, decision-based, transfer), its
defaults (per dataset where the published settings differ), one `Rule` per option, and
capabilities that the evaluation reads instead of testing which function it holds:
seeded, transferable, counts queries, minimizes a distance instead of working within a
budget, part of ``--audit``. `AttackSpec.run` calls any attack the same way and always
returns an `AttackResult`, so a new attack is its module (with its entry) and its test.
"""

import dataclasses
import types
from typing import Any, Callable, Mapping

import numpy as np

from tfnode.attacks._utils import AttackResult
from tfnode.errors import TfnodeError
from tfnode.registry import (ABOVE_ONE, BOOL, COUNT, FRACTION, NONNEGATIVE,  # noqa: F401
                             PROBABILITY, UNIT, Registry, Rule, one_of, resolve_options)

KINDS = ("white-box", "score-based", "decision-based", "transfer")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    Attributes:
      name: the name the apps use (``--attacks``).
      fn: ``fn(model, x, y, *, eps, **options)``; returns ``x_adv`` or an `AttackResult`.
      kind: one of `KINDS`.
      defaults: every option with its default (the published setting).
      rules: a `Rule` per option; an option without one is not validated.
      summary: one line for docs and ``--help``.
      reference: the paper the attack is from.
      dataset_defaults: ``{dataset: {option: value}}`` where the published setting for
        that dataset differs from ``defaults``.
      check: ``check(options) -> message or None`` for rules across options.
      seeded: takes ``seed`` (random starts, transforms or proposals).
      transferable: its adversarials can be crafted on another model (``transfer``).
      takes_batch_size: queries shrinking subsets in batches of ``batch_size``.
      minimizes_distance: runs once, unbounded, and minimizes the distance to ``x``;
        an eps cell counts a sample as broken if the adversarial found is within eps
        (the Boundary Attack). Otherwise the attack runs within each eps.
      in_audit: ``--audit`` runs it on every model (next to the audit's own variants).
      needs_source: crafted on ``--source_model_path``, evaluated on the model.
      iterations: ``iterations(options)``: gradient evaluations per example (white-box
        attacks); 1 marks a single-step attack for the checks.
      early_exit: ``fn`` takes ``ids`` (per-sample random keys), ``early_exit`` (stop
        at each sample's first adversarial) and ``return_result``; its result per
        sample does not depend on the rest of the batch (given a model that treats
        samples independently), so an evaluation may drop and re-batch samples.
      survivors_only: in the evaluation's fast schedule the attack runs only on the
        examples every attack before it left robust (AutoAttack's cascade): its queries
        dominate, and its cells then answer "is there any adversarial within eps".
    """
    name: str
    fn: Callable
    kind: str
    defaults: Mapping[str, Any]
    rules: Mapping[str, Rule]
    summary: str
    reference: str
    dataset_defaults: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=dict)
    check: Callable[[dict], str | None] | None = None
    seeded: bool = True
    transferable: bool = False
    takes_batch_size: bool = False
    minimizes_distance: bool = False
    in_audit: bool = False
    needs_source: bool = False
    iterations: Callable[[dict], int] | None = None
    early_exit: bool = False
    survivors_only: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"attack {self.name!r}: kind {self.kind!r} not in {KINDS}")
        unknown = set(self.rules) - set(self.defaults)
        if unknown:
            raise ValueError(f"attack {self.name!r}: rules for unknown options {unknown}")
        if (self.kind == "white-box" or self.transferable) and self.iterations is None:
            # The checks compare iterative with single-step attacks by this count.
            raise ValueError(f"attack {self.name!r}: a white-box attack needs iterations")
        # Frozen views: a caller cannot change the registered defaults by accident.
        object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))

    def options(self, overrides=None, *, dataset=None, label=None):
        """The attack's options: defaults, then ``dataset``'s, then ``overrides``; checked.

        Args:
          overrides: ``{option: value}`` given by the user.
          dataset: dataset name, for `dataset_defaults`.
          label: the name errors use for these options (default: the attack's name;
            the audit passes the name of its variant).

        Raises:
          TfnodeError: an unknown option or a value its rule rejects, in one line that
            names the option as ``<label>.<option>``.
        """
        label = label or self.name
        overrides = dict(overrides or {})
        if self.needs_source:
            return _transfer_options(self, overrides, dataset, label)
        return resolve_options("attack", self.name, defaults=self.defaults, rules=self.rules,
                               overrides=overrides, dataset_defaults=self.dataset_defaults,
                               dataset=dataset, label=label, check=self.check)

    def run(self, model, x, y, *, eps, seed=0, batch_size=None, ids=None, early_exit=False,
            **options):
        """Runs the attack on ``model`` (any logits callable); returns an `AttackResult`.

        ``seed``, ``batch_size``, ``ids`` and ``early_exit`` are passed only to attacks
        that take them, so the caller treats every attack alike. ``eps`` is ignored by
        attacks that minimize a distance (they are unbounded).
        """
        kwargs = dict(options)
        if self.early_exit:
            kwargs.update(ids=ids, early_exit=early_exit, return_result=True)
        if self.seeded:
            kwargs["seed"] = seed
        if self.takes_batch_size:
            kwargs["batch_size"] = batch_size
        if not self.minimizes_distance:
            kwargs["eps"] = eps
        out = self.fn(model, x, y, **kwargs)
        if isinstance(out, AttackResult):
            return out
        return AttackResult(x_adv=np.asarray(out, np.float32))


def _transfer_options(spec, overrides, dataset, label):
    """``transfer``'s options: ``attack`` plus that attack's own options (checked by it)."""
    base = overrides.pop("attack", spec.defaults["attack"])
    if base not in _REGISTRY or not _REGISTRY[base].transferable:
        raise TfnodeError(f"attack option {label}.attack must be one of "
                          f"{available(transferable=True)}, got {base!r}")
    return {"attack": base, **_REGISTRY[base].options(overrides, dataset=dataset, label=label)}


_REGISTRY = Registry("attack")


register = _REGISTRY.register  # adds an `AttackSpec` (each name once); returns it


def get(name):
    """The `AttackSpec` of ``name``; a one-line `TfnodeError` for an unknown name."""
    return _REGISTRY.lookup(name)


def available(**capabilities):
    """Registered names, in registration order, with the given capabilities (e.g.
    ``kind="white-box"``, ``transferable=True``)."""
    return [name for name, spec in _REGISTRY.items()
            if all(getattr(spec, k) == v for k, v in capabilities.items())]
