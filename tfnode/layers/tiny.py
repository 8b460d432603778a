"""`TinyConfig`: a small instance of a layer, for the shared layer test.

Every layer registered with ``keras.saving.register_keras_serializable(package="tfnode")``
states, as its class attribute ``TINY_CONFIGS``, one or more `TinyConfig` s;
``tests/test_layers.py`` runs the shared layer test (``tests/layer_test_util.py``:
build, call, output shape, config and ``.keras`` round trips, one training step) on each,
so a new layer is tested without editing a test.
"""

import dataclasses
from typing import Callable, Optional


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """A cheap instance of a layer and the input it takes.

    Attributes:
      make: ``make(cls)`` returns a fresh instance of ``cls`` (the layer class under
        test, so the config names no class of its own), with fresh sub-layers.
      input_shape: its input's shape without the batch dimension.
      output_shape: its output's shape without the batch dimension (None: the input's).
      time_input: the layer is an ODE function, called as ``layer(t=t, y=x)``.
      label: what tells this config from the layer's others in a test id.
    """
    make: Callable
    input_shape: tuple
    output_shape: Optional[tuple] = None
    time_input: bool = False
    label: str = ""
