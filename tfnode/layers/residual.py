"""Skip connections as one step of a numerical scheme with step size ``h``.

Chu, Wei & Zhao 2020 (Sec. 3.3, after Lu et al. 2018, "Beyond Finite Layer Neural
Networks") read the skip connections of well-known architectures as schemes for
``dy/dt = f(y)``:

* `ResidualBlock` (ResNet): ``y + h f(y)``, explicit Euler.
* `PolyBlock` (PolyNet's poly-2 module): ``y + h F(y) + h^2 F(F(y))``, the second-order
  expansion of backward Euler's ``(I - h F)^{-1} y``.
* `HeunBlock`: ``y + h/2 (f(y) + f(y + h f(y)))``, Heun's method (explicit RK2).
* `FractalRK2Block`: the two-stage Runge-Kutta scheme Lu et al. map FractalNet's
  expansion rule (Larsson et al. 2017) to, ``y + h/2 f1(y) + h/2 f2(y + h f1(y))``: the
  mean join of the identity and a deep column of two Euler steps with their own
  functions; with ``f1 = f2`` it is Heun's method. It is not FractalNet's block:
  FractalNet's shallow column is a convolution, so its join keeps no identity path.
* `RevBlock` (RevNet's additive coupling, Gomez et al. 2017): the channels split into
  ``(X, Y)``, ``X' = X + h f1(Y)``, ``Y' = Y + h f2(X')``, a semi-implicit Euler step.

Every function has the ODE-function signature ``call(t, y)`` (`tfnode.layers.ODEFunc`),
so the families share their function layer with the ODE-Net and the ResNet.
"""

import keras
from keras import ops

from tfnode.layers.ode_block import build_time_function
from tfnode.layers.odefunc import ODEFunc
from tfnode.layers.tiny import TinyConfig


def _function(channels=4):
    return ODEFunc(channels, time_dependent=False)


# The shared layer test's instance of a block of one function, and of two.
_ONE_FUNCTION = (TinyConfig(lambda cls: cls(_function(), step_size=0.1), (5, 5, 4)),)
_TWO_FUNCTIONS = (TinyConfig(lambda cls: cls(_function(), _function(), step_size=0.1),
                             (5, 5, 4)),)


class SchemeBlock(keras.layers.Layer):
    """One step ``y + h * increment(y)`` of a scheme; subclasses define `increment`.

    Shared: the function sub-layers (named in `FUNCTIONS`), the step size, and the Keras
    contract (build, config round trip). `increment` is the scheme's update direction,
    what `tfnode.evaluation.trajectories` measures a block's Lipschitz ratio on (for a ResNet block
    its residual function), computed without dividing by ``h``.
    """

    FUNCTIONS = ("residual_fn",)

    def __init__(self, *, step_size=1.0, **functions_and_kwargs):
        functions = {k: functions_and_kwargs.pop(k) for k in self.FUNCTIONS}
        super().__init__(**functions_and_kwargs)
        for key, fn in functions.items():
            setattr(self, key, fn)
        self.step_size = float(step_size)

    def function_input_shape(self, input_shape, key):
        """The shape ``key``'s function sees (the whole state unless a block splits it)."""
        return input_shape

    def build(self, input_shape):
        for key in self.FUNCTIONS:
            build_time_function(getattr(self, key), self.function_input_shape(input_shape, key))

    def increment(self, y):
        """``Phi(y)`` with ``block(y) = y + h Phi(y)``."""
        raise NotImplementedError

    def call(self, inputs):
        return inputs + self.step_size * self.increment(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({key: keras.saving.serialize_keras_object(getattr(self, key))
                       for key in self.FUNCTIONS}, step_size=self.step_size)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.FUNCTIONS:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfnode")
class ResidualBlock(SchemeBlock):
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

    TINY_CONFIGS = _ONE_FUNCTION

    def __init__(self, residual_fn, *, step_size=1.0, **kwargs):
        super().__init__(residual_fn=residual_fn, step_size=step_size, **kwargs)

    def increment(self, y):
        return self.residual_fn(t=0.0, y=y)


@keras.saving.register_keras_serializable(package="tfnode")
class PolyBlock(SchemeBlock):
    """PolyNet's poly-2 module with step ``h``: ``y + h F(y) + h^2 F(F(y))``.

    Zhang et al. 2017's ``I + F + F^2`` with one shared ``F``; Lu et al. 2018 read it as
    ``(I - h F)^{-1}`` (backward Euler) expanded to second order in ``h``.

    Args:
      residual_fn: the function ``F``, a layer with ``call(t, y)``.
      step_size: ``h``.
      **kwargs: standard layer arguments.
    """

    TINY_CONFIGS = _ONE_FUNCTION

    def __init__(self, residual_fn, *, step_size=1.0, **kwargs):
        super().__init__(residual_fn=residual_fn, step_size=step_size, **kwargs)

    def increment(self, y):
        first = self.residual_fn(t=0.0, y=y)
        return first + self.step_size * self.residual_fn(t=0.0, y=first)


@keras.saving.register_keras_serializable(package="tfnode")
class HeunBlock(SchemeBlock):
    """One step of Heun's method: ``y + h/2 (f(0, y) + f(h, y + h f(0, y)))``.

    Args:
      residual_fn: ``f``, a layer with ``call(t, y)``.
      step_size: ``h``.
      **kwargs: standard layer arguments.
    """

    TINY_CONFIGS = _ONE_FUNCTION

    def __init__(self, residual_fn, *, step_size=1.0, **kwargs):
        super().__init__(residual_fn=residual_fn, step_size=step_size, **kwargs)

    def increment(self, y):
        k1 = self.residual_fn(t=0.0, y=y)
        return 0.5 * (k1 + self.residual_fn(t=self.step_size, y=y + self.step_size * k1))


@keras.saving.register_keras_serializable(package="tfnode")
class FractalRK2Block(SchemeBlock):
    """The two-stage Runge-Kutta reading of FractalNet's expansion rule:
    ``y + h/2 f1(y) + h/2 f2(y + h f1(y))``.

    An elementwise mean join (as FractalNet's, Larsson et al. 2017) of the identity
    ``y`` and the deep column ``z + h f2(z)``, ``z = y + h f1(y)``, two Euler steps with
    their own functions: the scheme Lu et al. 2018 map the expansion rule to; with
    ``f1 = f2`` this block is `HeunBlock`. FractalNet's own shallow column is a
    convolution, not the identity, so its join has no identity path: this block is the
    scheme, named for what it is, not FractalNet.

    Args:
      first_fn: ``f1``, a layer with ``call(t, y)``.
      second_fn: ``f2``, a layer with ``call(t, y)``.
      step_size: ``h``.
      **kwargs: standard layer arguments.
    """

    FUNCTIONS = ("first_fn", "second_fn")
    TINY_CONFIGS = _TWO_FUNCTIONS

    def __init__(self, first_fn, second_fn, *, step_size=1.0, **kwargs):
        super().__init__(first_fn=first_fn, second_fn=second_fn, step_size=step_size,
                         **kwargs)

    def increment(self, y):
        k1 = self.first_fn(t=0.0, y=y)
        return 0.5 * (k1 + self.second_fn(t=self.step_size, y=y + self.step_size * k1))


@keras.saving.register_keras_serializable(package="tfnode")
class RevBlock(SchemeBlock):
    """RevNet's additive coupling with step ``h``: ``X' = X + h f1(Y)``,
    ``Y' = Y + h f2(X')`` on the two halves of the channels.

    Gomez et al. 2017; Lu et al. 2018 read it as a semi-implicit Euler step of
    ``dX/dt = f1(Y), dY/dt = f2(X)``. It is invertible whatever ``f1``, ``f2``:
    ``Y = Y' - h f2(X')``, ``X = X' - h f1(Y)``.

    Args:
      first_fn: ``f1``, a layer with ``call(t, y)`` on half the channels.
      second_fn: ``f2``, likewise.
      step_size: ``h``.
      **kwargs: standard layer arguments.
    """

    FUNCTIONS = ("first_fn", "second_fn")
    TINY_CONFIGS = (TinyConfig(lambda cls: cls(_function(2), _function(2), step_size=0.1),
                               (5, 5, 4)),)

    def __init__(self, first_fn, second_fn, *, step_size=1.0, **kwargs):
        super().__init__(first_fn=first_fn, second_fn=second_fn, step_size=step_size,
                         **kwargs)

    def function_input_shape(self, input_shape, key):
        channels = input_shape[-1]
        if channels is None or channels % 2:
            raise ValueError(f"{self.name}: RevBlock splits the channels in two; it needs "
                             f"an even number of them, got {channels}")
        return tuple(input_shape[:-1]) + (channels // 2,)

    def increment(self, y):
        first, second = ops.split(y, 2, axis=-1)
        dx = self.first_fn(t=0.0, y=second)
        # The second half sees the updated first half: the coupling's semi-implicit step.
        dy = self.second_fn(t=0.0, y=first + self.step_size * dx)
        return ops.concatenate([dx, dy], axis=-1)


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

    TINY_CONFIGS = (TinyConfig(lambda cls: cls(8, strides=2), (6, 6, 4), (3, 3, 8)),)

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
