"""A trained model's ODE blocks with other solver options (same weights)."""

import keras

from tfnode import ode
from tfnode.errors import TfnodeError
from tfnode.layers import ODEBlock, sublayers

# ODEBlock options that change how a block is solved, not what it learned.
# (Those of a solve but t1, which changes what the block computes.)
SOLVER_OPTIONS = tuple(name for name in ode.OPTIONS if name != "t1")


def with_solver_options(model, **options):
    """A copy of ``model`` whose `ODEBlock` s solve with ``options``; weights are shared.

    Used to evaluate (or attack) a trained ODE-Net at another tolerance, with another
    solver, or with per-sample steps (Carrara et al. 2019 decouple the attack-time and
    inference-time tolerances). Layers other than ODE blocks are the same objects; each
    ODE block (any subclass of `ODEBlock`) is rebuilt as its own class from its config
    with ``options`` and gets the old block's weights.

    Args:
      model: a functional or sequential Keras model.
      **options: `ODEBlock` options from `SOLVER_OPTIONS`.

    Returns:
      The new model (the input model if ``options`` is empty).
    """
    unknown = sorted(set(options) - set(SOLVER_OPTIONS))
    if unknown:
        raise TfnodeError(f"not solver options: {unknown}; expected some of "
                          f"{list(SOLVER_OPTIONS)}")
    if not options:
        return model
    replaced = {}

    def clone(layer):
        if isinstance(layer, ODEBlock):
            # The layer's own class: a subclass keeps its behaviour (and its config).
            config = {**layer.get_config(), **options}
            new = type(layer).from_config(config)
            replaced[id(new)] = layer
            return new
        return layer

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in sublayers(copy):
        if id(layer) in replaced:
            layer.set_weights(replaced[id(layer)].get_weights())
    return copy
