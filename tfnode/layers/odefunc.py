"""The time-conditioned convolutional ODE function of Chen et al. 2018.

Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations",
NeurIPS 2018 (torchdiffeq ``examples/odenet_mnist.py``): each convolution sees the
time ``t`` as one extra constant input channel.
"""

import keras
from keras import ops

from tfnode.errors import ConfigError
# xla_enabled is imported from here by the ODE block and the trajectories.
from tfnode.layers.group_norm import check_norm, norm_layer, xla_enabled  # noqa: F401
from tfnode.layers.tiny import TinyConfig

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
