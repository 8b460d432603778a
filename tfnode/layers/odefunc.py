"""The time-conditioned convolutional ODE function of Chen et al. 2018.

Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations",
NeurIPS 2018 (torchdiffeq ``examples/odenet_mnist.py``): each convolution sees the
time ``t`` as one extra constant input channel.
"""

import math

import keras
from keras import ops


def group_norm(channels, name=None, gamma_initializer="ones"):
    """GroupNorm with ``min(32, channels)`` groups, as in Chen et al.'s ``norm``.

    For widths that 32 does not divide (Chen et al. only use 64), the largest group
    count that divides ``channels`` and ``32``.
    """
    return GroupNorm(groups=math.gcd(32, channels), epsilon=1e-5, name=name,
                     gamma_initializer=gamma_initializer)


@keras.saving.register_keras_serializable(package="tfnode")
class GroupNorm(keras.layers.Layer):
    """Group normalization (Wu & He 2018) over NHWC inputs, with per-channel scale and offset.

    Computes the same function as ``keras.layers.GroupNormalization`` (tested), but from
    per-channel spatial means that are then pooled over each group, instead of reshaping
    the activations to ``[N, H, W, G, C/G]`` and reducing over three axes: on CPU that
    reduction is 3x slower, and an ODE function calls its norms at every evaluation.
    The variance is centered (two passes), not ``E[x^2] - E[x]^2``, to stay accurate in
    float32 when a channel's mean is large relative to its spread.

    Args:
      groups: number of channel groups; must divide the channel count.
      epsilon: added to the variance.
      gamma_initializer: initializer of the per-channel scale.
      **kwargs: standard layer arguments.
    """

    def __init__(self, groups=32, *, epsilon=1e-5, gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.epsilon = float(epsilon)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(f"GroupNorm: {channels} channels do not split into "
                             f"{self.groups} groups")
        self.gamma = self.add_weight(shape=(channels,), initializer=self.gamma_initializer,
                                     name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def _group_mean(self, per_channel):
        # [N, C] per-channel means -> [N, 1, 1, C], each channel holding its group's mean.
        n, c = ops.shape(per_channel)[0], per_channel.shape[-1]
        grouped = ops.mean(ops.reshape(per_channel, (n, self.groups, c // self.groups)),
                           axis=-1, keepdims=True)
        grouped = ops.broadcast_to(grouped, (n, self.groups, c // self.groups))
        return ops.reshape(grouped, (n, 1, 1, c))

    def call(self, inputs):
        mean = self._group_mean(ops.mean(inputs, axis=(1, 2)))
        centered = inputs - mean
        var = self._group_mean(ops.mean(ops.square(centered), axis=(1, 2)))
        return centered * (ops.rsqrt(var + self.epsilon) * self.gamma) + self.beta

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups, epsilon=self.epsilon,
                      gamma_initializer=keras.initializers.serialize(self.gamma_initializer))
        return config


def _y_shape(t_shape, y_shape):
    """The shape of ``y`` from build()'s arguments.

    Keras passes shapes by call() argument name when ``t`` is a tensor; when ``t`` is a
    Python float, or when a saved model is rebuilt from its build config, the one shape
    given is ``y``'s, positionally.
    """
    return tuple(t_shape if y_shape is None else y_shape)


@keras.saving.register_keras_serializable(package="tfnode")
class ConcatConv2D(keras.layers.Layer):
    """A 2-D convolution whose input is ``concat([t * ones, y], channels)``.

    ``t`` is a scalar, or a vector of one time per sample.

    Args:
      filters: output channels.
      kernel_size: square kernel size.
      strides: stride.
      padding: ``"same"`` or ``"valid"``.
      use_bias: add a bias.
      **kwargs: standard layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(self, filters, kernel_size=3, *, strides=1, padding="same", use_bias=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = padding
        self.use_bias = bool(use_bias)
        self.conv = keras.layers.Conv2D(self.filters, self.kernel_size, strides=self.strides,
                                        padding=self.padding, use_bias=self.use_bias,
                                        name="conv")

    def build(self, t_shape=None, y_shape=None):
        y_shape = _y_shape(t_shape, y_shape)
        self.conv.build(tuple(y_shape[:-1]) + (y_shape[-1] + 1,))

    def call(self, t, y):
        t = ops.cast(t, y.dtype)
        if len(t.shape) == 1:  # one time per sample (an ODEBlock with per_sample_steps)
            t = ops.reshape(t, (-1,) + (1,) * (len(y.shape) - 1))
        tt = ops.ones_like(y[..., :1]) * t
        return self.conv(ops.concatenate([tt, y], axis=-1))

    def compute_output_shape(self, t_shape=None, y_shape=None):
        y_shape = _y_shape(t_shape, y_shape)
        return self.conv.compute_output_shape(tuple(y_shape[:-1]) + (y_shape[-1] + 1,))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, use_bias=self.use_bias)
        return config


@keras.saving.register_keras_serializable(package="tfnode")
class ODEFunc(keras.layers.Layer):
    """``f(t, y) = GN(conv2(t, relu(GN(conv1(t, relu(GN(y)))))))``, Chen et al. 2018.

    With ``time_dependent=False`` the convolutions do not see ``t`` and there is no final
    norm: the residual branch ``f(y)`` of Chen et al.'s ResNet baseline of the same width.

    Args:
      filters: channels of ``y`` (kept by ``f``).
      time_dependent: concatenate ``t`` to each convolution's input.
      zero_init: start the scale of the last norm (of the last conv without a time
        channel) at 0, so that ``f = 0`` at initialization: the block starts as the
        identity, like the zero-initialized last norm of a residual branch (Goyal et
        al. 2017). Only the initialization differs from Chen et al.'s function.
      **kwargs: standard layer arguments.
    """

    def __init__(self, filters=64, *, time_dependent=True, zero_init=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.time_dependent = bool(time_dependent)
        self.zero_init = bool(zero_init)
        self.norm1 = group_norm(self.filters, name="norm1")
        self.norm2 = group_norm(self.filters, name="norm2")
        if self.time_dependent:
            self.conv1 = ConcatConv2D(self.filters, 3, name="conv1")
            self.conv2 = ConcatConv2D(self.filters, 3, name="conv2")
            self.norm3 = group_norm(self.filters, name="norm3",
                                    gamma_initializer="zeros" if self.zero_init else "ones")
        else:
            # Chen et al.'s ResBlock convolutions have no bias (a norm follows them).
            self.conv1 = keras.layers.Conv2D(self.filters, 3, padding="same", use_bias=False,
                                             name="conv1")
            self.conv2 = keras.layers.Conv2D(
                self.filters, 3, padding="same", use_bias=False, name="conv2",
                kernel_initializer="zeros" if self.zero_init else "glorot_uniform")

    def build(self, t_shape=None, y_shape=None):
        y_shape = _y_shape(t_shape, y_shape)
        self.norm1.build(y_shape)
        self.norm2.build(y_shape)
        if self.time_dependent:
            self.conv1.build(y_shape=y_shape)
            self.conv2.build(y_shape=y_shape)
            self.norm3.build(y_shape)
        else:
            self.conv1.build(y_shape)
            self.conv2.build(y_shape)

    def call(self, t, y):
        h = ops.relu(self.norm1(y))
        h = self.conv1(t=t, y=h) if self.time_dependent else self.conv1(h)
        h = ops.relu(self.norm2(h))
        if self.time_dependent:
            return self.norm3(self.conv2(t=t, y=h))
        return self.conv2(h)

    def compute_output_shape(self, t_shape=None, y_shape=None):
        return _y_shape(t_shape, y_shape)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, time_dependent=self.time_dependent,
                      zero_init=self.zero_init)
        return config
