"""The time-conditioned convolutional ODE function of Chen et al. 2018.

Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations",
NeurIPS 2018 (torchdiffeq ``examples/odenet_mnist.py``): each convolution sees the
time ``t`` as one extra constant input channel.
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


# ``lipschitz`` options: none, or Keras' spectral normalization of the ODE function's
# convolutions (Miyato et al. 2018): the Lipschitz constraint Chu et al. 2020 leave as
# future work (after Cisse et al. 2017's Parseval networks).
LIPSCHITZ = (None, "spectral")


def check_lipschitz(lipschitz, norm):
    """One-line `ConfigError` s (``model_options.lipschitz``) for an unknown value, or
    spectral normalization with a norm layer (which rescales by the inverse std and so
    undoes any bound on the convolutions)."""
    if lipschitz not in LIPSCHITZ:
        raise ConfigError("model_options.lipschitz", f"must be one of {list(LIPSCHITZ)}, "
                          f"got {lipschitz!r}")
    if lipschitz and norm != "none":
        raise ConfigError("model_options.lipschitz", f"{lipschitz!r} bounds the "
                          "convolutions' norms, which GroupNorm's division by the standard "
                          "deviation undoes; use it with norm 'none'")


def spectral_update(wrapper):
    """What Keras' ``SpectralNormalization.call`` does in training before calling its
    layer: one power iteration, the kernel divided by its estimated spectral norm (of the
    kernel reshaped to ``[k*k*C_in, C_out]``, Keras' reading: not the convolution's
    operator norm, which it only approximates), both assigned."""
    new_u, new_kernel = ops.cond(ops.all(ops.equal(wrapper.kernel.value, 0)),
                                 lambda: (wrapper.vector_u.value, wrapper.kernel.value),
                                 wrapper.normalized_weights)
    wrapper.vector_u.assign(new_u)
    wrapper.kernel.assign(new_kernel)


def _conv2d(lipschitz, *args, **kwargs):
    conv = keras.layers.Conv2D(*args, **kwargs)
    return keras.layers.SpectralNormalization(conv, name=f"{conv.name}_sn") if lipschitz \
        else conv


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
      lipschitz: None, or ``"spectral"``: the kernel spectrally normalized in training
        (Keras' ``SpectralNormalization`` wraps the convolution; `spectral_update`).
      **kwargs: standard layer arguments (``name``, ``dtype``, ...).
    """

    TINY_CONFIGS = (TinyConfig(lambda cls: cls(6, strides=2), (6, 6, 3), (3, 3, 6),
                               time_input=True),
                    TinyConfig(lambda cls: cls(6, lipschitz="spectral"), (6, 6, 3), (6, 6, 6),
                               time_input=True, label="spectral"))

    def __init__(self, filters, kernel_size=3, *, strides=1, padding="same", use_bias=True,
                 lipschitz=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = padding
        self.use_bias = bool(use_bias)
        check_lipschitz(lipschitz, "none")
        self.lipschitz = lipschitz
        self.conv = _conv2d(lipschitz, self.filters, self.kernel_size, strides=self.strides,
                            padding=self.padding, use_bias=self.use_bias, name="conv")

    @property
    def convolution(self):
        """The Keras ``Conv2D`` (inside the spectral wrapper, if any)."""
        return self.conv.layer if self.lipschitz else self.conv

    def build(self, t_shape=None, y_shape=None):
        y_shape = _y_shape(t_shape, y_shape)
        self.conv.build(tuple(y_shape[:-1]) + (y_shape[-1] + 1,))

    def call(self, t, y, training=None):
        if self.lipschitz and training:
            spectral_update(self.conv)
        # The convolution is linear in its input, so conv(concat([t * ones, y])) equals
        # conv(y, K_y) + t * conv(ones, K_t) + b exactly (up to float summation order),
        # where K_t is the kernel's time slice. conv(ones, K_t) is a fixed [H', W', F] map
        # (not a constant: zero padding makes the border differ), computed from one
        # single-channel image. This skips the concatenation, its gradient and 1/(C+1) of
        # the convolution's work at every function evaluation; the kernel keeps Chen et
        # al.'s [k, k, C+1, F] layout (time first), so weights are unchanged.
        t = ops.cast(t, y.dtype)
        if len(t.shape) == 1:  # one time per sample (an ODEBlock with per_sample_steps)
            t = ops.reshape(t, (-1,) + (1,) * (len(y.shape) - 1))
        kernel = self.conv.kernel
        conv = dict(strides=self.strides, padding=self.padding)
        out = ops.conv(y, kernel[:, :, 1:, :], **conv)
        time_map = ops.conv(ops.ones_like(y[:1, ..., :1]), kernel[:, :, :1, :], **conv)
        out = out + t * time_map
        return out + self.convolution.bias if self.use_bias else out

    def compute_output_shape(self, t_shape=None, y_shape=None):
        y_shape = _y_shape(t_shape, y_shape)
        return self.conv.compute_output_shape(tuple(y_shape[:-1]) + (y_shape[-1] + 1,))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, use_bias=self.use_bias, lipschitz=self.lipschitz)
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
      norm: ``"group"`` (Chen et al.'s GroupNorm) or ``"none"``: no norm, and the
        convolutions without time get a bias (none follows them to supply one), for
        interval bounds (`NORMS`). ``zero_init`` needs a norm.
      lipschitz: None, or ``"spectral"``: both convolutions spectrally normalized in
        training by Keras' ``SpectralNormalization`` (needs ``norm="none"``;
        `check_lipschitz`).
      **kwargs: standard layer arguments.
    """

    TINY_CONFIGS = (
        TinyConfig(lambda cls: cls(4), (5, 5, 4), time_input=True, label="time"),
        TinyConfig(lambda cls: cls(4, time_dependent=False), (5, 5, 4), time_input=True,
                   label="no_time"),
        TinyConfig(lambda cls: cls(4, norm="none"), (5, 5, 4), time_input=True,
                   label="time_no_norm"),
        TinyConfig(lambda cls: cls(4, time_dependent=False, norm="none"), (5, 5, 4),
                   time_input=True, label="no_time_no_norm"),
        TinyConfig(lambda cls: cls(4, norm="none", lipschitz="spectral"), (5, 5, 4),
                   time_input=True, label="time_spectral"),
        TinyConfig(lambda cls: cls(4, time_dependent=False, norm="none", lipschitz="spectral"),
                   (5, 5, 4), time_input=True, label="no_time_spectral"),
    )

    def __init__(self, filters=64, *, time_dependent=True, zero_init=False, norm="group",
                 lipschitz=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.time_dependent = bool(time_dependent)
        self.zero_init = bool(zero_init)
        self.norm = norm
        self.lipschitz = lipschitz
        check_norm(norm)
        check_lipschitz(lipschitz, norm)
        if self.zero_init and norm == "none":
            raise ConfigError("model_options.zero_init", "scales the last norm to 0, and "
                              "norm 'none' has none; use norm 'group' with it")
        self.norm1 = norm_layer(norm, self.filters, "norm1")
        self.norm2 = norm_layer(norm, self.filters, "norm2")
        self.norm3 = None
        if self.time_dependent:
            self.conv1 = ConcatConv2D(self.filters, 3, lipschitz=lipschitz, name="conv1")
            self.conv2 = ConcatConv2D(self.filters, 3, lipschitz=lipschitz, name="conv2")
            self.norm3 = norm_layer(norm, self.filters, "norm3",
                                    gamma_initializer="zeros" if self.zero_init else "ones")
        else:
            # Chen et al.'s ResBlock convolutions have no bias (a norm follows them).
            bias = norm == "none"
            self.conv1 = _conv2d(lipschitz, self.filters, 3, padding="same", use_bias=bias,
                                 name="conv1")
            self.conv2 = _conv2d(
                lipschitz, self.filters, 3, padding="same", use_bias=bias, name="conv2",
                kernel_initializer="zeros" if self.zero_init else "glorot_uniform")

    def build(self, t_shape=None, y_shape=None):
        y_shape = _y_shape(t_shape, y_shape)
        for norm in (self.norm1, self.norm2, self.norm3):
            if norm is not None:
                norm.build(y_shape)
        if self.time_dependent:
            self.conv1.build(y_shape=y_shape)
            self.conv2.build(y_shape=y_shape)
        else:
            self.conv1.build(y_shape)
            self.conv2.build(y_shape)

    @staticmethod
    def _normed(norm, h):
        return h if norm is None else norm(h)

    def call(self, t, y):
        h = ops.relu(self._normed(self.norm1, y))
        h = self.conv1(t=t, y=h) if self.time_dependent else self.conv1(h)
        h = ops.relu(self._normed(self.norm2, h))
        if self.time_dependent:
            return self._normed(self.norm3, self.conv2(t=t, y=h))
        return self.conv2(h)

    def compute_output_shape(self, t_shape=None, y_shape=None):
        return _y_shape(t_shape, y_shape)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, time_dependent=self.time_dependent,
                      zero_init=self.zero_init, norm=self.norm, lipschitz=self.lipschitz)
        return config
