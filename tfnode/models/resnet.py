"""Residual networks with a step size ``h``: ``y + h * F(y)`` (Chu et al. 2020, Sec. 3).

* ``resnet``: Chen et al. 2018's MNIST ResNet baseline, the ODE-Net's stem and head with
  six residual blocks of the same width in place of the ODE block.
* ``resnet56``: He et al. 2016's CIFAR ResNet-56 (3 x 9 basic blocks, 16/32/64 channels,
  option-A shortcuts); Chu et al. train it with h = 1, 1e-1, ..., 1e-10.
* ``resnet50``: the CIFAR-sized bottleneck ResNet-50 (3x3 stem, no max-pool).
* ``preact_resnet18``: He et al. 2016b's pre-activation ResNet-18 as used for PGD-AT,
  TRADES and YOPO baselines (with the final BN-ReLU of Rice et al. 2020).

All take [0, 1] images (no input normalization) and output logits.
"""

import keras

from tfnode import layers
from tfnode.errors import TfnodeError
from tfnode.models import skip
from tfnode.models.registry import register

_BN = dict(momentum=0.9, epsilon=1e-5)  # PyTorch's BatchNorm defaults, as in the papers


def _conv(filters, kernel, strides=1, name=None):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same",
                               use_bias=False, kernel_initializer="he_normal", name=name)


def _bn(name):
    return keras.layers.BatchNormalization(name=name, **_BN)


def _add_scaled(shortcut, residual, step_size, name):
    """``shortcut + h * residual``; h = 1 adds no op so a standard ResNet stays standard."""
    if step_size != 1.0:
        residual = keras.layers.Rescaling(step_size, name=f"{name}_h")(residual)
    return keras.layers.Add(name=f"{name}_add")([shortcut, residual])


@register("resnet", test_options=dict(width=4, num_blocks=1))
def mnist_resnet(*, input_shape, num_classes, width=64, num_blocks=6, step_size=1.0,
                 norm="group", lipschitz=None):
    """Chen et al.'s ResNet: stem, ``num_blocks`` x ``y + h f(y)``, head.

    ``f`` is `tfnode.layers.ODEFunc` without time, i.e. Chen et al.'s ResBlock branch, so
    this model differs from ``node`` only in how the dynamics are discretized. ``norm``:
    as ``node``'s (``"none"``: no GroupNorm anywhere, for interval bounds);
    ``lipschitz``: as ``node``'s (the residual branches' convolutions).
    """
    return skip.scheme_net("resnet", skip.one_function(layers.ResidualBlock),
                           input_shape=input_shape, num_classes=num_classes, width=width,
                           num_blocks=num_blocks, step_size=step_size, norm=norm,
                           lipschitz=lipschitz)


def _basic_block(x, filters, strides, step_size, name):
    out = keras.layers.ReLU()(_bn(f"{name}_bn1")(_conv(filters, 3, strides, f"{name}_conv1")(x)))
    out = _bn(f"{name}_bn2")(_conv(filters, 3, 1, f"{name}_conv2")(out))
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.ShortcutA(filters, strides=strides, name=f"{name}_shortcut")(x)
    return keras.layers.ReLU(name=f"{name}_out")(_add_scaled(shortcut, out, step_size, name))


@register("resnet56", test_options=dict(depth=8))
def resnet56(*, input_shape, num_classes, depth=56, step_size=1.0):
    """He et al. 2016's CIFAR ResNet (depth = 6n + 2; 56 by default) with step size h."""
    if (depth - 2) % 6 or depth < 8:
        raise TfnodeError(f"resnet56: depth must be 6n + 2 >= 8, got {depth}")
    n = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="images")
    x = keras.layers.ReLU()(_bn("stem_bn")(_conv(16, 3, 1, "stem_conv")(inputs)))
    for stage, filters in enumerate((16, 32, 64)):
        for i in range(n):
            strides = 2 if stage > 0 and i == 0 else 1
            x = _basic_block(x, filters, strides, step_size, f"stage{stage + 1}_block{i + 1}")
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x),
                       name=f"resnet{depth}")


def _bottleneck(x, planes, strides, step_size, name):
    filters = 4 * planes
    out = keras.layers.ReLU()(_bn(f"{name}_bn1")(_conv(planes, 1, 1, f"{name}_conv1")(x)))
    out = keras.layers.ReLU()(_bn(f"{name}_bn2")(_conv(planes, 3, strides, f"{name}_conv2")(out)))
    out = _bn(f"{name}_bn3")(_conv(filters, 1, 1, f"{name}_conv3")(out))
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _bn(f"{name}_sc_bn")(_conv(filters, 1, strides, f"{name}_sc_conv")(x))
    return keras.layers.ReLU(name=f"{name}_out")(_add_scaled(shortcut, out, step_size, name))


@register("resnet50", test_options=dict(base_width=2))
def resnet50(*, input_shape, num_classes, step_size=1.0, base_width=64):
    """Bottleneck ResNet-50 sized for 32x32 inputs ([3, 4, 6, 3] blocks, 3x3 stem).

    ``base_width`` is the stem's and the first stage's bottleneck channels, doubled at
    each later stage (64: the published network).
    """
    inputs = keras.Input(input_shape, name="images")
    x = keras.layers.ReLU()(_bn("stem_bn")(_conv(base_width, 3, 1, "stem_conv")(inputs)))
    for stage, blocks in enumerate((3, 4, 6, 3)):
        planes = base_width * 2 ** stage
        for i in range(blocks):
            strides = 2 if stage > 0 and i == 0 else 1
            x = _bottleneck(x, planes, strides, step_size, f"stage{stage + 1}_block{i + 1}")
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x),
                       name="resnet50")


def _preact_block(x, filters, strides, step_size, name):
    out = keras.layers.ReLU()(_bn(f"{name}_bn1")(x))
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, strides, f"{name}_sc_conv")(out)
    out = _conv(filters, 3, strides, f"{name}_conv1")(out)
    out = _conv(filters, 3, 1, f"{name}_conv2")(keras.layers.ReLU()(_bn(f"{name}_bn2")(out)))
    return _add_scaled(shortcut, out, step_size, name)


@register("preact_resnet18", test_options=dict(base_width=2))
def preact_resnet18(*, input_shape, num_classes, step_size=1.0, base_width=64):
    """Pre-activation ResNet-18 ([2, 2, 2, 2] blocks of ``base_width`` to 8 x
    ``base_width`` channels; 64: the published 64-512)."""
    inputs = keras.Input(input_shape, name="images")
    x = _conv(base_width, 3, 1, "stem_conv")(inputs)
    for stage in range(4):
        filters = base_width * 2 ** stage
        for i in range(2):
            strides = 2 if stage > 0 and i == 0 else 1
            x = _preact_block(x, filters, strides, step_size, f"stage{stage + 1}_block{i + 1}")
    x = keras.layers.ReLU()(_bn("final_bn")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x),
                       name="preact_resnet18")
