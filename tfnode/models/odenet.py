"""ODE-Net (Chen et al. 2018, ``odenet_mnist.py``) as used by Chu et al. 2020."""

import keras

from tfnode import layers
from tfnode.models.registry import register


def _normed(x, norm, width, name):
    layer = layers.norm_layer(norm, width, name)
    return x if layer is None else layer(x)


def stem(x, width, norm="group"):
    """Chen et al.'s downsampling: 3x3 conv, then two 4x4 stride-2 convs (28 -> 7, 32 -> 8),
    each of the first two followed by GroupNorm (``norm="group"``) and ReLU."""
    x = keras.layers.Conv2D(width, 3, padding="same", name="stem_conv1")(x)
    x = keras.layers.ReLU(name="stem_relu1")(_normed(x, norm, width, "stem_norm1"))
    x = keras.layers.Conv2D(width, 4, strides=2, padding="same", name="stem_conv2")(x)
    x = keras.layers.ReLU(name="stem_relu2")(_normed(x, norm, width, "stem_norm2"))
    return keras.layers.Conv2D(width, 4, strides=2, padding="same", name="stem_conv3")(x)


def head(x, width, num_classes, norm="group"):
    """GroupNorm (``norm="group"``), ReLU, global average pool, linear layer to logits."""
    x = keras.layers.ReLU(name="head_relu")(_normed(x, norm, width, "head_norm"))
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    return keras.layers.Dense(num_classes, name="logits")(x)


# The shared model test's node: a fixed-step solver (tests/test_layers.py and
# tests/test_solvers.py cover the adaptive ones, which compile their step with XLA).
@register("node", test_options=dict(width=4, solver="rk4", step_size=0.5))
def odenet(*, input_shape, num_classes, width=64, solver="dopri5", rtol=1e-3, atol=1e-3,
           t1=1.0, first_step_size=None, max_num_steps=1000, step_size=None,
           gradient="backprop", per_sample_steps=False, zero_init=False, norm="group",
           lipschitz=None):
    """Stem, one `ODEBlock` of an `ODEFunc` on ``width`` channels, head.

    Args:
      input_shape: ``(H, W, C)`` of the [0, 1] input images.
      num_classes: number of logits.
      width: channels of the ODE state.
      solver, rtol, atol, t1, first_step_size, max_num_steps, step_size: `ODEBlock` options.
      gradient: `ODEBlock`'s gradient option. The model defaults to ``"backprop"``
        (tfnode's adaptive loop, exact gradient of the computed logits): it trains faster
        than TFP's adjoint on CPU (timings: benchmarks/README.md), and attacks get the
        true gradient of what the model computes.
        Pass ``"adjoint"`` (or None) with dopri5 for TFP's DormandPrince.
      per_sample_steps: `ODEBlock`'s option: each sample's logits independent of its batch.
      zero_init: `ODEFunc`'s option: ``f = 0`` at initialization (the block starts as
        the identity).
      norm: ``"group"`` (GroupNorm in the stem, the ODE function and the head, Chen et
        al.'s) or ``"none"`` (no norm anywhere: for interval bounds, `layers.NORMS`).
      lipschitz: None, or ``"spectral"``: the ODE function's convolutions spectrally
        normalized in training by Keras' ``SpectralNormalization`` (the Lipschitz
        constraint Chu et al. 2020 leave as future work); needs ``norm="none"``.

    Returns:
      An uncompiled ``keras.Model`` named ``node``.
    """
    inputs = keras.Input(input_shape, name="images")
    x = stem(inputs, width, norm)
    func = layers.ODEFunc(width, zero_init=zero_init, norm=norm, lipschitz=lipschitz,
                          name="odefunc")
    x = layers.ODEBlock(func, solver=solver, rtol=rtol, atol=atol, t1=t1,
                        first_step_size=first_step_size, max_num_steps=max_num_steps,
                        step_size=step_size, gradient=gradient,
                        per_sample_steps=per_sample_steps, name="ode_block")(x)
    return keras.Model(inputs, head(x, width, num_classes, norm), name="node")
