"""Interval rules, one per layer class, and the walk that applies them to a model.

`RULES` maps a layer class to ``rule(layer, box, ...) -> box`` (a layer of several
inputs gets a list of boxes; an ODE function also gets its time ``t``). `propagate`
walks a functional model's graph with them (`tfnode.layers.through_graph`); a layer
without a rule, or an ODE block with an adaptive solver (whose steps depend on the
input: no interval passes through its step-size control), is refused with a one-line
`ConfigError` before any bound is computed (`check_model`).

Rules cover every layer tfnode's models are made of: Keras' Conv2D, Dense, ReLU,
GlobalAveragePooling2D, Flatten, Rescaling, SpectralNormalization (its layer), Add and BatchNormalization (inference
statistics), tfnode's GroupNorm, ConcatConv2D, ODEFunc, ShortcutA, the scheme blocks
(`tfnode.layers.residual`) and `ODEBlock` with a fixed-step solver, unrolled stage by
stage from its Butcher tableau (`tfnode.ode.TABLEAUX`).
"""

import keras
from keras import ops

from tfnode import layers, ode
from tfnode.bounds.box import Box, combination, group_normalized, relu
from tfnode.errors import ConfigError
from tfnode.registry import Registry

RULES = Registry("interval rule")  # class name -> (class, rule)


def rule(cls):
    """Registers the decorated function as the interval rule of layer class ``cls``."""
    def wrap(fn):
        RULES.add(cls.__name__, (cls, fn))
        return fn
    return wrap


def _rule_of(layer):
    for cls, fn in RULES.values():
        if type(layer) is cls:
            return fn
    # A subclass of a covered layer computes what its parent does only if it keeps the
    # parent's call (e.g. a model's own subclass that adds a property).
    for cls, fn in RULES.values():
        if isinstance(layer, cls) and type(layer).call is cls.call:
            return fn
    return None


def _operations(model):
    """Every operation of a model's graph (layers and raw ``keras.ops`` calls), nested
    models' included; a Sequential's layers."""
    ops_ = list(getattr(model, "operations", None) or model.layers)
    for op in list(ops_):
        if isinstance(op, keras.Model) and op is not model:
            ops_ += _operations(op)
    return ops_


def check_model(model):
    """Raises a one-line `ConfigError` if interval bounds cannot pass through ``model``:
    a layer without a rule, an activation other than linear or ReLU, an adaptive solver."""
    if not isinstance(model, keras.Model):
        raise ConfigError(None, "interval bounds need a Keras model (an export with its "
                          "model.keras), not a SavedModel's signature")
    for layer in layers.sublayers(model) + [
            op for op in _operations(model) if not isinstance(op, keras.layers.Layer)]:
        if isinstance(layer, (keras.layers.InputLayer, keras.Model)):
            continue
        if _rule_of(layer) is None:
            raise ConfigError(None, f"the model's layer {layer.name!r} "
                              f"({type(layer).__name__}) is one interval bounds do not "
                              f"pass; they pass {sorted(RULES)}")
        activation = getattr(layer, "activation", None)
        if activation is not None and activation not in _ACTIVATIONS:
            raise ConfigError(None, f"the model's layer {layer.name!r} has activation "
                              f"{getattr(activation, '__name__', activation)!r}; interval "
                              "bounds pass linear and relu")
        if getattr(layer, "data_format", "channels_last") != "channels_last" or (
                isinstance(layer, keras.layers.BatchNormalization)
                and layer.axis not in (-1, len(layer.input.shape) - 1)):
            raise ConfigError(None, f"the model's layer {layer.name!r} is channels-first; "
                              "interval bounds pass channels-last layers")
        if isinstance(layer, keras.layers.ReLU) and (
                layer.max_value is not None or layer.negative_slope or layer.threshold):
            raise ConfigError(None, f"the model's layer {layer.name!r}: interval bounds "
                              "pass the plain ReLU only")
        if isinstance(layer, layers.ODEBlock) and ode.adaptive(layer.solver):
            raise _adaptive(layer)


def _adaptive(block):
    return ConfigError(None, f"the model's ODE block {block.name!r} solves with "
                       f"{block.solver!r}, an adaptive solver: its steps depend on the "
                       "input, so no interval bound passes through them; choose a "
                       "fixed-step solver (--model_option=solver=rk4 "
                       "--model_option=step_size=0.25)")


_ACTIVATIONS = (keras.activations.linear, keras.activations.relu)


def _activate(layer, box):
    activation = getattr(layer, "activation", None)
    if activation is keras.activations.relu:
        return relu(box)
    if activation not in (None, keras.activations.linear):
        # Reached only past check_model: never treat another activation as linear.
        raise ConfigError(None, f"the model's layer {layer.name!r} has activation "
                          f"{getattr(activation, '__name__', activation)!r}; interval "
                          "bounds pass linear and relu")
    return box


def apply(layer, box, *args, **kwargs):
    """The box of ``layer``'s output for its input ``box`` (`RULES`)."""
    fn = _rule_of(layer)
    if fn is None:
        raise ConfigError(None, f"the model's layer {layer.name!r} "
                          f"({type(layer).__name__}) is one interval bounds do not pass")
    return _no_nan(fn(layer, box, *args, **kwargs))


def _no_nan(box):
    # Bounds through a norm of a wide box can overflow (inf - inf, 0 * inf): a NaN bound
    # proves nothing, so it becomes the infinite one.
    inf = float("inf")
    return Box(ops.where(ops.isnan(box.lo), -inf, box.lo), ops.where(ops.isnan(box.hi), inf, box.hi))


def propagate(model, box, stop_before=None):
    """The box of ``model``'s output for the input ``box``; with ``stop_before`` (one of
    its layers) the box of that layer's input instead (the last layer elided, as in
    `tfnode.bounds.margins`)."""

    def step(layer, *args, **kwargs):
        if any(isinstance(a, _Held) for a in args):
            # The elided layer must produce the model's output; anything after it would
            # be skipped, so a certificate would not be of this model.
            raise ConfigError(None, f"{layer.name!r} follows the last layer the margins "
                              "elide; interval bounds cannot elide it")
        if layer is stop_before:
            return _Held(args[0])
        kwargs.pop("training", None)
        kwargs.pop("mask", None)  # BatchNormalization's; no mask flows in these models
        return apply(layer, *args, **kwargs)

    if isinstance(model, keras.Sequential):  # no graph of its own: its layers in order
        out = box
        for layer in model.layers:
            out = step(layer, out)
    else:
        out = layers.through_graph(model, box, step)
    return out.box if isinstance(out, _Held) else out


class _Held:
    """The input box of the elided layer, carried unchanged to the graph's output."""

    def __init__(self, box):
        self.box = box


# Keras layers ---------------------------------------------------------------------------

def _conv(x, kernel, layer):
    return ops.conv(x, kernel, strides=layer.strides, padding=layer.padding,
                    dilation_rate=layer.dilation_rate)


@rule(keras.layers.Conv2D)
def _conv2d(layer, box):
    def center(mu):
        out = _conv(mu, layer.kernel, layer)
        return out + layer.bias if layer.use_bias else out
    return _activate(layer, box.affine(center, lambda r: _conv(r, ops.abs(layer.kernel), layer)))


@rule(keras.layers.Dense)
def _dense(layer, box):
    def center(mu):
        out = ops.matmul(mu, layer.kernel)
        return out + layer.bias if layer.use_bias else out
    return _activate(layer, box.affine(center, lambda r: ops.matmul(r, ops.abs(layer.kernel))))


@rule(keras.layers.ReLU)
def _relu(layer, box):
    if layer.max_value is not None or layer.negative_slope or layer.threshold:
        raise ConfigError(None, f"the model's layer {layer.name!r}: interval bounds pass "
                          "the plain ReLU only")
    return relu(box)


@rule(keras.layers.GlobalAveragePooling2D)
def _pool(layer, box):
    return box.monotone(layer)


@rule(keras.layers.Flatten)
def _flatten(layer, box):
    return box.map(layer)


@rule(keras.layers.SpectralNormalization)
def _spectral(layer, box):
    return apply(layer.layer, box)  # at inference the wrapper is its layer


@rule(keras.layers.Rescaling)
def _rescaling(layer, box):
    return box.scale(layer.scale) + layer.offset


@rule(keras.layers.Add)
def _add(layer, boxes):
    return combination([(1.0, b) for b in boxes])


@rule(keras.layers.BatchNormalization)
def _batch_norm(layer, box):
    # Inference: a per-channel affine map with the moving statistics.
    scale = ops.rsqrt(layer.moving_variance + layer.epsilon)
    if layer.scale:
        scale = scale * layer.gamma
    shift = -layer.moving_mean * scale
    if layer.center:
        shift = shift + layer.beta
    return box.scale(scale) + shift


# tfnode's layers ------------------------------------------------------------------------

@rule(layers.GroupNorm)
def _group_norm(layer, box):
    channels = box.lo.shape[-1]
    size = box.lo.shape[1] * box.lo.shape[2] * (channels // layer.groups)

    def group_mean(t):
        return layers.group_mean(ops.mean(t, axis=(1, 2)), layer.groups)

    normalized = group_normalized(box, group_mean=group_mean, group_size=size,
                                  epsilon=layer.epsilon)
    return normalized.scale(layer.gamma) + layer.beta


@rule(layers.ShortcutA)
def _shortcut(layer, box):
    return box.monotone(layer)


@rule(layers.ConcatConv2D)
def _concat_conv(layer, box, t):
    kernel = layer.conv.kernel[:, :, 1:, :]
    return box.affine(lambda mu: layer(t=t, y=mu),
                      lambda r: ops.conv(r, ops.abs(kernel), strides=layer.strides,
                                         padding=layer.padding))


def _normed(norm, box):
    return box if norm is None else apply(norm, box)


@rule(layers.ODEFunc)
def _ode_func(layer, box, t=0.0):
    # The rule follows ODEFunc.call line by line.
    h = relu(_normed(layer.norm1, box))
    h = apply(layer.conv1, h, t) if layer.time_dependent else apply(layer.conv1, h)
    h = relu(_normed(layer.norm2, h))
    if layer.time_dependent:
        return _normed(layer.norm3, apply(layer.conv2, h, t))
    return apply(layer.conv2, h)


def _fn(layer, key):
    """Bounds of ``layer``'s function ``key`` as ``fn(t, box)``."""
    return lambda t, box: apply(getattr(layer, key), box, t)


@rule(layers.ResidualBlock)
def _residual(layer, box):
    return combination([(1.0, box), (layer.step_size, _fn(layer, "residual_fn")(0.0, box))])


@rule(layers.PolyBlock)
def _poly(layer, box):
    f, h = _fn(layer, "residual_fn"), layer.step_size
    first = f(0.0, box)
    return combination([(1.0, box), (h, first), (h * h, f(0.0, first))])


def _two_stage(box, f1, f2, h):
    # y + h/2 f1(0, y) + h/2 f2(h, y + h f1(0, y)): Heun (f1 = f2) and FractalRK2.
    k1 = f1(0.0, box)
    k2 = f2(h, combination([(1.0, box), (h, k1)]))
    return combination([(1.0, box), (0.5 * h, k1), (0.5 * h, k2)])


@rule(layers.HeunBlock)
def _heun(layer, box):
    f = _fn(layer, "residual_fn")
    return _two_stage(box, f, f, layer.step_size)


@rule(layers.FractalRK2Block)
def _fractal_rk2(layer, box):
    return _two_stage(box, _fn(layer, "first_fn"), _fn(layer, "second_fn"), layer.step_size)


@rule(layers.RevBlock)
def _rev(layer, box):
    h = layer.step_size
    halves = [Box(*pair) for pair in zip(ops.split(box.lo, 2, axis=-1),
                                         ops.split(box.hi, 2, axis=-1))]
    first = combination([(1.0, halves[0]), (h, _fn(layer, "first_fn")(0.0, halves[1]))])
    second = combination([(1.0, halves[1]), (h, _fn(layer, "second_fn")(0.0, first))])
    return Box(ops.concatenate([first.lo, second.lo], axis=-1),
               ops.concatenate([first.hi, second.hi], axis=-1))


@rule(layers.ODEBlock)
def _ode_block(layer, box):
    """The fixed-step solve unrolled: every stage ``k_i = f(t + c_i h, y + h sum_j
    a_ij k_j)`` and the update ``y + h sum_i b_i k_i`` as sums of independent boxes, with
    the same steps as `tfnode.ode.fixed` (the last one shortened to land on ``t1``)."""
    if ode.adaptive(layer.solver):
        raise _adaptive(layer)
    tableau = ode.get(layer.solver)
    f = _fn(layer, "odefunc")
    y = box
    for i in range(ode.num_fixed_steps(layer.t1, layer.step_size)):
        t = i * layer.step_size
        h = min(layer.step_size, layer.t1 - t)
        ks = []
        for c, row in zip(tableau.c, ((),) + tuple(tableau.a)):
            stage = combination([(1.0, y)] + [(h * a, k) for a, k in zip(row, ks)])
            ks.append(f(t + c * h, stage))
        y = combination([(1.0, y)] + [(h * b, k) for b, k in zip(tableau.b, ks)])
    return y
