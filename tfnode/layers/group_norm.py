"""Group normalization (Wu & He 2018) as Chen et al. 2018's ODE-Net uses it, the ``norm``
options of tfnode's models, and the switch that turns tfnode's XLA-compiled parts off.
"""

import contextlib
import math
import threading

import keras
import tensorflow as tf
from keras import ops

from tfnode.errors import ConfigError
from tfnode.layers.tiny import TinyConfig

# ``norm`` options: Chen et al.'s GroupNorm, or none. Interval bounds through GroupNorm
# are nearly vacuous (its variance has no useful lower bound over an input box), so
# certified training and IBP certificates need ``"none"`` (issue 29).
NORMS = ("group", "none")


def check_norm(norm):
    """Raises a one-line `ConfigError` (``model_options.norm``) for an unknown norm."""
    if norm not in NORMS:
        raise ConfigError("model_options.norm", f"must be one of {list(NORMS)}, got {norm!r}")


def norm_layer(norm, channels, name, gamma_initializer="ones"):
    """``group_norm(channels)`` for ``norm="group"``, None for ``"none"``."""
    check_norm(norm)
    return group_norm(channels, name=name, gamma_initializer=gamma_initializer) \
        if norm == "group" else None

_XLA = threading.local()


def xla_enabled():
    """False inside `no_xla`: whether tfnode's layers trace their XLA-compiled parts."""
    return not getattr(_XLA, "off", False)


@contextlib.contextmanager
def no_xla():
    """Within it, tfnode's layers trace without their XLA-compiled parts.

    Those are GroupNorm's normalization and the adaptive solver's step of an `ODEBlock`
    that backpropagates through its solver (``gradient="backprop"``).

    For graphs that must run without XLA's CPU JIT, such as a SavedModel for TF Serving,
    whose XLA:CPU JIT is off by default (``--xla_cpu_compilation_enabled``). The math is
    the same either way (tested); only the speed differs.
    """
    previous = getattr(_XLA, "off", False)
    _XLA.off = True
    try:
        yield
    finally:
        _XLA.off = previous


def group_mean(per_channel, groups):
    # [N, C] per-channel means -> [N, 1, 1, C], each channel holding its group's mean.
    n, c = ops.shape(per_channel)[0], per_channel.shape[-1]
    grouped = ops.mean(ops.reshape(per_channel, (n, groups, c // groups)), axis=-1,
                       keepdims=True)
    grouped = ops.broadcast_to(grouped, (n, groups, c // groups))
    return ops.reshape(grouped, (n, 1, 1, c))


def group_normalize(x, gamma, beta, *, groups, epsilon):
    """Group normalization of NHWC ``x``, then per-channel ``gamma`` and ``beta``."""
    mean = group_mean(ops.mean(x, axis=(1, 2)), groups)
    centered = x - mean
    var = group_mean(ops.mean(ops.square(centered), axis=(1, 2)), groups)
    return centered * (ops.rsqrt(var + epsilon) * gamma) + beta


# XLA fuses the normalization's dozen elementwise and reduction passes (and those of its
# gradient, which XLA compiles too) into a few loops: faster per function evaluation
# inside the adaptive loop and on the stem's 28x28 maps (see benchmarks/README.md). One
# function for all layers: it compiles once per (shape, groups, epsilon).
_group_normalize_xla = tf.function(group_normalize, jit_compile=True)


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
    reduction is slower (see benchmarks/README.md), and an ODE function calls its norms
    at every evaluation.
    The variance is centered (two passes), not ``E[x^2] - E[x]^2``, to stay accurate in
    float32 when a channel's mean is large relative to its spread. The math runs as one
    XLA-compiled function (see `group_normalize`), except inside `no_xla`.

    Args:
      groups: number of channel groups; must divide the channel count.
      epsilon: added to the variance.
      gamma_initializer: initializer of the per-channel scale.
      **kwargs: standard layer arguments.
    """

    TINY_CONFIGS = (TinyConfig(lambda cls: cls(2), (4, 4, 6)),)

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

    def call(self, inputs):
        normalize = _group_normalize_xla if xla_enabled() else group_normalize
        # Read here, as tensors: tf.function takes a Keras variable for a numpy array, and
        # given the backing variable under a tf.distribute strategy (a MirroredVariable)
        # it reads a component the replica's tape does not watch, so gamma and beta got no
        # gradient at all (found when training under MirroredStrategy).
        return normalize(inputs, tf.convert_to_tensor(self.gamma),
                         tf.convert_to_tensor(self.beta), groups=self.groups,
                         epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups, epsilon=self.epsilon,
                      gamma_initializer=keras.initializers.serialize(self.gamma_initializer))
        return config
