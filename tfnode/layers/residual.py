"""`ResidualBlock`: ``y + h * f(0, y)``, one explicit Euler step of size ``h``."""

import keras
from keras import ops

from tfnode.layers.ode_block import build_time_function, deserialize_sublayer


@keras.saving.register_keras_serializable(package="tfnode")
class ResidualBlock(keras.layers.Layer):
    """A residual update ``y + h * f(0, y)`` with its own weights.

    With ``h = 1`` this is a ResNet block (He et al. 2016); Chu et al. 2020 (Sec. 3) view
    it as one Euler step of ``dy/dt = f(y)`` and study smaller ``h``. ``residual_fn`` has
    the ODE-function signature ``call(t, y)`` so that ResNets and ODE-Nets can share the
    exact same function layer (`tfnode.layers.ODEFunc`).

    Args:
      residual_fn: a Keras layer with ``call(t, y)`` returning a tensor of ``y``'s shape.
      step_size: the step ``h`` that scales the residual branch.
      **kwargs: standard layer arguments.
    """

    def __init__(self, residual_fn, *, step_size=1.0, **kwargs):
        super().__init__(**kwargs)
        self.residual_fn = residual_fn
        self.step_size = float(step_size)

    def build(self, input_shape):
        build_time_function(self.residual_fn, input_shape)

    def call(self, inputs):
        return inputs + self.step_size * self.residual_fn(t=0.0, y=inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(residual_fn=keras.saving.serialize_keras_object(self.residual_fn),
                      step_size=self.step_size)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_sublayer(config, "residual_fn"))


@keras.saving.register_keras_serializable(package="tfnode")
class ShortcutA(keras.layers.Layer):
    """He et al. 2016's parameter-free "option A" shortcut for CIFAR ResNets.

    Subsamples by ``strides`` and zero-pads the channels up to ``filters``, so ResNet-56
    has its published 0.85M parameters.

    Args:
      filters: output channels (>= input channels).
      strides: spatial subsampling factor.
      **kwargs: standard layer arguments.
    """

    def __init__(self, filters, *, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def call(self, inputs):
        x = inputs[:, ::self.strides, ::self.strides, :]
        extra = self.filters - x.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        sub = lambda d: None if d is None else -(-d // self.strides)  # noqa: E731
        return (n, sub(h), sub(w), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, strides=self.strides)
        return config
