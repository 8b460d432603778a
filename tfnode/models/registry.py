"""The string registry of model builders (one registry for all model families).

Each entry is a `ModelSpec`: the builder, the tiny options the shared model test
(``tests/test_models.py``) builds it with, and the old names it still answers to.
"""

import dataclasses
import inspect
from typing import Any, Callable

from tfnode import data
from tfnode.errors import TfnodeError
from tfnode.registry import Registry

_MODELS = Registry("model")
_ALIASES = {}  # an old name -> the registered name it now is


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
      name: the registered name.
      builder: ``builder(*, input_shape, num_classes, **options)`` -> a Keras model.
      test_options: model options that make it tiny (a few seconds to build, train one
        step and save on CPU, on MNIST's 28x28x1 input): what the shared model test
        builds it with.
      aliases: earlier names of the model, still accepted wherever a model name is
        (old flagfiles, recorded runs); `available` does not list them.
    """
    name: str
    builder: Callable[..., Any]
    test_options: dict
    aliases: tuple = ()


def register(name, *, test_options, aliases=()):
    """Decorator: registers ``builder(*, input_shape, num_classes, **options)`` as ``name``.

    Args:
      name: the model's name.
      test_options: its tiny options for the shared model test (see `ModelSpec`), e.g.
        ``dict(width=8, num_blocks=1)``; ``{}`` if the defaults are tiny already.
      aliases: earlier names that still resolve to this model.

    Raises:
      ValueError: the name or an alias is taken.
    """

    def wrap(builder):
        spec = ModelSpec(name, builder, dict(test_options), tuple(aliases))
        unknown = sorted(set(spec.test_options) - set(_options(builder)))
        if unknown:
            raise ValueError(f"model {name!r}: test_options {unknown} are not its options")
        taken = [a for a in (name,) + spec.aliases if a in _MODELS or a in _ALIASES]
        if taken:
            raise ValueError(f"model name {taken[0]!r} is registered twice")
        _MODELS.add(name, spec)
        _ALIASES.update({alias: name for alias in spec.aliases})
        return builder

    return wrap


def available():
    """Names of the registered models, sorted (without the aliases)."""
    return sorted(_MODELS)


def spec(name):
    """The `ModelSpec` of model ``name`` (a registered name or an alias).

    Raises:
      TfnodeError: unknown model.
    """
    return _MODELS.lookup(_ALIASES.get(name, name), available())


def _options(builder):
    params = inspect.signature(builder).parameters
    return {k: p.default for k, p in params.items()
            if p.kind == p.KEYWORD_ONLY and k not in ("input_shape", "num_classes")}


def model_options(name):
    """The keyword options (with defaults) that model ``name`` accepts."""
    return _options(spec(name).builder)


def get_model(name, *, dataset, **options):
    """Builds model ``name`` for ``dataset``: a Keras model from [0, 1] images to logits.

    Args:
      name: a registered model name (see `available`) or an alias of one.
      dataset: a dataset name from `tfnode.data.DATASETS` (fixes input shape and classes).
      **options: model options (see `model_options`), e.g. ``rtol`` or ``step_size``.

    Raises:
      TfnodeError: unknown model or dataset, or an option the model does not take.
    """
    builder = spec(name).builder
    ds = data.info(dataset)
    accepted = model_options(name)
    for key in options:
        if key not in accepted:
            raise TfnodeError(f"model {name!r} has no option {key!r}; it takes {sorted(accepted)}")
    for key in ("width", "num_blocks", "depth", "base_width"):
        if key in options and not (isinstance(options[key], int) and options[key] >= 0
                                   and (options[key] > 0 or key == "num_blocks")):
            raise TfnodeError(f"model {name!r}: {key} must be a positive integer, "
                              f"got {options[key]!r}")
    if "step_size" in options and options["step_size"] is not None and not options[
            "step_size"] > 0:
        raise TfnodeError(f"model {name!r}: step_size must be > 0, got {options['step_size']!r}")
    return builder(input_shape=ds.shape, num_classes=ds.num_classes, **options)
