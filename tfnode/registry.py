"""`Registry`: the one name -> entry table behind every extension point (solvers,
models, attacks, defenses; torchdiffeq's ``SOLVERS``), and the option rules that the
attack and defense registries check their options with."""

import dataclasses
from typing import Any, Callable

import numpy as np

from tfnode.errors import ConfigError, TfnodeError


class Registry(dict):
    """A dict of ``name -> entry`` in registration order, each name registered once.

    Args:
      kind: what an entry is ("solver", "model", "attack"), for the error messages.
    """

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def add(self, name, entry):
        """Registers ``entry`` as ``name`` and returns it; a name can be taken once."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = entry
        return entry

    def register(self, spec):
        """Registers a spec under its own ``name`` (`add`); returns it."""
        return self.add(spec.name, spec)

    def names(self):
        """Registered names, in registration order."""
        return list(self)

    def lookup(self, name, expected=None):
        """The entry called ``name``; a one-line `TfnodeError` listing ``expected`` (by
        default every registered name) if there is none."""
        if name not in self:
            raise TfnodeError(f"unknown {self.kind} {name!r}; expected one of "
                              f"{list(self) if expected is None else expected}")
        return self[name]


@dataclasses.dataclass(frozen=True)
class Rule:
    """An option's constraint: ``ok(value)``, and what was ``expected`` for the error."""
    ok: Callable[[Any], bool]
    expected: str


def _number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _integer(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


COUNT = Rule(lambda v: _integer(v) and v >= 1, "an integer >= 1")
NONNEGATIVE_COUNT = Rule(lambda v: _integer(v) and v >= 0, "an integer >= 0")
UNIT = Rule(lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]")
FRACTION = Rule(lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)")
PROBABILITY = Rule(lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]")
NONNEGATIVE = Rule(lambda v: _number(v) and v >= 0, "a number >= 0")
POSITIVE = Rule(lambda v: _number(v) and v > 0, "a number > 0")
ABOVE_ONE = Rule(lambda v: _number(v) and v > 1, "a number > 1")
BOOL = Rule(lambda v: isinstance(v, (bool, np.bool_)), "true or false")


def one_of(*values):
    """A rule accepting exactly ``values``."""
    return Rule(lambda v: v in values, f"one of {list(values)}")


def optional(rule):
    """``rule``, or None (the field's "not given")."""
    return Rule(lambda v: v is None or rule.ok(v), f"{rule.expected} (or unset)")


def check(config, rules):
    """Checks the fields of a config (a dataclass) against their `Rule`: the one check of
    every tfnode config.

    Raises:
      ConfigError: the first field (in ``rules``' order) its rule rejects, naming it.
    """
    for field, rule in rules.items():
        value = getattr(config, field)
        if not rule.ok(value):
            raise ConfigError(field, f"must be {rule.expected}, got {value!r}")


def resolve_options(kind, name, *, defaults, rules, overrides=None, dataset_defaults=None,
                    dataset=None, label=None, check=None):
    """An entry's options: ``defaults``, then ``dataset``'s, then ``overrides``; checked.

    Args:
      kind: what the entry is ("attack", "defense"), for the messages.
      name: the entry's name.
      defaults: every option with its default.
      rules: a `Rule` per option.
      overrides: ``{option: value}`` given by the user.
      dataset_defaults: ``{dataset: {option: value}}``.
      dataset: the dataset, for ``dataset_defaults``.
      label: the name errors use for these options (default ``name``).
      check: ``check(options) -> message or None`` for rules across options.

    Raises:
      TfnodeError: an unknown option or a value its rule rejects, in one line that
        names the option as ``<label>.<option>``.
    """
    label = label or name
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise TfnodeError(f"{kind} option {label}.{unknown[0]}: {name} has no option "
                          f"{unknown[0]!r}; it takes {sorted(defaults)}")
    opts = {**defaults, **(dataset_defaults or {}).get(dataset, {}), **overrides}
    for key, rule in rules.items():
        if not rule.ok(opts[key]):
            raise TfnodeError(f"{kind} option {label}.{key} must be {rule.expected}, "
                              f"got {opts[key]!r}")
    problem = check(opts) if check else None
    if problem:
        raise TfnodeError(f"{kind} options of {label}: {problem}")
    return opts
