"""The string registry of model builders (one registry for all model families)."""

import inspect

from tfnode import data
from tfnode.errors import TfnodeError
from tfnode.registry import Registry

_MODELS = Registry("model")


def register(name):
    """Decorator: registers ``builder(*, input_shape, num_classes, **options)`` as ``name``."""

    def wrap(builder):
        return _MODELS.add(name, builder)

    return wrap


def available():
    """Names of the registered models, sorted."""
    return sorted(_MODELS)


def _builder(name):
    return _MODELS.lookup(name, available())


def model_options(name):
    """The keyword options (with defaults) that model ``name`` accepts."""
    params = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in params.items()
            if p.kind == p.KEYWORD_ONLY and k not in ("input_shape", "num_classes")}


def get_model(name, *, dataset, **options):
    """Builds model ``name`` for ``dataset``: a Keras model from [0, 1] images to logits.

    Args:
      name: a registered model name (see `available`).
      dataset: a dataset name from `tfnode.data.DATASETS` (fixes input shape and classes).
      **options: model options (see `model_options`), e.g. ``rtol`` or ``step_size``.

    Raises:
      TfnodeError: unknown model or dataset, or an option the model does not take.
    """
    builder = _builder(name)
    ds = data.info(dataset)
    accepted = model_options(name)
    for key in options:
        if key not in accepted:
            raise TfnodeError(f"model {name!r} has no option {key!r}; it takes {sorted(accepted)}")
    for key in ("width", "num_blocks", "depth"):
        if key in options and not (isinstance(options[key], int) and options[key] >= 0
                                   and (options[key] > 0 or key == "num_blocks")):
            raise TfnodeError(f"model {name!r}: {key} must be a positive integer, "
                              f"got {options[key]!r}")
    if "step_size" in options and options["step_size"] is not None and not options[
            "step_size"] > 0:
        raise TfnodeError(f"model {name!r}: step_size must be > 0, got {options['step_size']!r}")
    return builder(input_shape=ds.shape, num_classes=ds.num_classes, **options)
