"""An L-infinity contractivity penalty on the ODE function's linear maps.

For a block's function ``f(t, z) = K2 relu(K1 relu(z) + b1 + t c1) + b2 + t c2`` (tfnode's
`ODEFunc` without norm layers; a ResNet branch is the same without ``t``) the Jacobian is
``K2 D1 K1 D0`` with ``D`` diagonal in [0, 1], so its L-infinity logarithmic norm is
bounded by the linear maps alone:

    mu_inf(df/dz) <= ||df/dz||_inf <= L_f = ||K1||_inf ||K2||_inf,

where the induced L-infinity norm of a convolution (stride 1, "same" padding, images at
least as large as the kernel) is exactly its largest output channel's absolute kernel sum
(an interior pixel's row of the operator; a border row has fewer taps). By the
contraction theory of Davydov, Jafarpour & Bullo ("Non-Euclidean contraction theory for
robust nonlinear stability", IEEE TAC 2022), two trajectories of ``dz/dt = f`` then stay
within ``exp(L_f T)`` of their initial L-infinity distance (Chu et al.'s Thm 3.1 in the
L-infinity norm), and a ``y + h Phi(y)`` block within ``1 + h L_f``. The penalty is

    weight * sum over blocks and their functions of max(0, log L_f - log bound),

a hinge on the log of the bound (the product's scale does not set the gradient's). The
linear maps alone cannot certify strict contraction (``mu_inf < 0``): ``f`` has no
``-z`` term whose negative diagonal would do it, so this bounds the expansion, the
L-infinity counterpart of the Lipschitz constraint of Cisse et al. 2017 (Parseval
networks) that Chu et al. name as future work.
"""

import keras
import tensorflow as tf

from tfnode import layers
from tfnode.errors import ConfigError
from tfnode.registry import NONNEGATIVE, POSITIVE
from tfnode.training.regularizers import registry


def conv_inf_norm(kernel):
    """``||K||_inf`` of a stride-1 "same" convolution with ``kernel`` ``[k, k, in, out]``
    (as an operator on images of at least ``k x k`` pixels)."""
    return tf.reduce_max(tf.reduce_sum(tf.abs(kernel), axis=[0, 1, 2]))


def _state_kernel(conv):
    """The kernel slice that acts on the state (a `ConcatConv2D`'s time channel is first)."""
    if isinstance(conv, layers.ConcatConv2D):
        return conv.convolution.kernel[:, :, 1:, :]
    return conv.kernel


def _functions(model):
    """Every ODE and skip-connection function of ``model``'s top-level blocks."""
    out = []
    for layer in model.layers:
        if isinstance(layer, layers.ODEBlock):
            out.append((layer.name, layer.odefunc))
        elif isinstance(layer, layers.SchemeBlock):
            out += [(f"{layer.name}.{key}", getattr(layer, key)) for key in layer.FUNCTIONS]
    return out


def lipschitz_bounds(model):
    """``{block[.function]: L_f}``: the L-infinity bound of each block function."""
    return {name: conv_inf_norm(_state_kernel(fn.conv1)) * conv_inf_norm(_state_kernel(fn.conv2))
            for name, fn in _functions(model)}


def measured_bounds(model):
    """``{block[.function]: L_f}`` as floats, for ``metrics.json``."""
    return {name: float(value) for name, value in lipschitz_bounds(model).items()}


def check_model(model):
    """Raises a one-line `ConfigError` unless every block function is an `ODEFunc` with
    norm 'none' and no spectral normalization (what the bound above holds for)."""
    functions = _functions(model) if isinstance(model, keras.Model) else []
    if not functions:
        raise ConfigError(None, f"contractivity: model {getattr(model, 'name', model)!r} has "
                          "no ODE block or skip-connection block to constrain")
    for name, fn in functions:
        if not isinstance(fn, layers.ODEFunc):
            raise ConfigError(None, f"contractivity: {name} is a {type(fn).__name__}; the "
                              "bound is derived for tfnode's ODEFunc")
        if fn.norm != "none":
            raise ConfigError("model_options.norm", f"is {fn.norm!r}: contractivity bounds "
                              "the linear maps, and a norm layer's division by the "
                              "standard deviation is not one; use norm 'none'")
        if fn.lipschitz:
            raise ConfigError("model_options.lipschitz", f"{fn.lipschitz!r} already "
                              "normalizes the kernels; use it or contractivity, not both")


def contractivity(model, x, *, seed, weight, bound):
    """``(None, penalty)``: a penalty of the weights alone (module docstring), so no
    forward pass of ``x``."""
    del x, seed  # deterministic, and independent of the batch
    hinge = [tf.nn.relu(tf.math.log(value) - tf.math.log(bound))
             for value in lipschitz_bounds(model).values()]
    return None, weight * tf.add_n(hinge)


registry.register(registry.RegularizerSpec(
    name="contractivity", fn=contractivity, model_check=check_model,
    measure=measured_bounds,
    defaults={"weight": 0.1, "bound": 1.0},
    rules={"weight": NONNEGATIVE, "bound": POSITIVE},
    summary="hinge on the log of each block function's L-infinity Lipschitz bound from "
            "its convolutions (an expansion bound exp(L T))",
    reference="Davydov, Jafarpour & Bullo 2022 (L-infinity contraction); Cisse et al. 2017"))
