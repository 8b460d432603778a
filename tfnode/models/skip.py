"""Skip-connection families as numerical schemes (Chu et al. 2020, Sec. 3.3).

Each is the MNIST ``resnet`` (Chen et al. 2018's stem and head, ``num_blocks`` blocks of
``width`` channels) with its residual blocks replaced by another scheme's step of size
``h`` (`tfnode.layers.residual`), so the families differ only in how they discretize:

* ``polynet``: ``y + h F(y) + h^2 F(F(y))`` (`tfnode.layers.PolyBlock`).
* ``heunnet``: Heun's method (`tfnode.layers.HeunBlock`); registered as ``heun`` before
  that name was the solver's too (``heun`` still builds it).
* ``fractal_rk2``: the two-stage Runge-Kutta scheme Lu et al. 2018 read into
  FractalNet's expansion rule, two functions per block (`tfnode.layers.FractalRK2Block`;
  registered as ``fractalnet`` before it was named for what it is: its shallow column
  is the identity, FractalNet's is a convolution).
* ``revnet``: RevNet's additive coupling, two functions on half the channels each
  (`tfnode.layers.RevBlock`).

A block's functions are `tfnode.layers.ODEFunc` without time, the ResNet's residual
branch. Parameters therefore differ with the scheme at the same width and depth
(fractal_rk2's blocks hold two functions, RevNet's two of half the width); the reports
record them.
"""

import keras

from tfnode import layers
from tfnode.errors import TfnodeError
from tfnode.models.odenet import head, stem
from tfnode.models.registry import register

# The shared model test's options for every scheme net: two blocks of 4 channels.
TINY = dict(width=4, num_blocks=2)


def _function(width, name, fn_options):
    return layers.ODEFunc(width, time_dependent=False, name=name, **fn_options)


def one_function(block_cls):
    """A block maker for schemes with one function (ResNet, PolyNet, Heun)."""
    def make(width, step_size, name, fn_options):
        return block_cls(_function(width, f"{name}_fn", fn_options), step_size=step_size,
                         name=name)
    return make


def two_functions(block_cls, split):
    """A block maker for schemes with two functions, of half the width if ``split``."""
    def make(width, step_size, name, fn_options):
        inner = width // 2 if split else width
        return block_cls(_function(inner, f"{name}_fn1", fn_options),
                         _function(inner, f"{name}_fn2", fn_options), step_size=step_size,
                         name=name)
    return make


def scheme_net(name, make_block, *, input_shape, num_classes, width, num_blocks, step_size,
               norm="group", lipschitz=None):
    """Stem, ``num_blocks`` blocks from ``make_block(width, h, name, fn_options)``, head;
    ``norm`` and ``lipschitz`` as `tfnode.models.odenet.odenet`'s (``norm="none"``: no
    norm in the stem, the residual branches or the head; ``lipschitz="spectral"``: the
    residual branches' convolutions spectrally normalized)."""
    layers.norm_layer(norm, width, "check")  # one-line errors before any layer is made
    layers.check_lipschitz(lipschitz, norm)
    inputs = keras.Input(input_shape, name="images")
    x = stem(inputs, width, norm)
    fn_options = dict(norm=norm, lipschitz=lipschitz)
    for i in range(num_blocks):
        x = make_block(width, step_size, f"block{i + 1}", fn_options)(x)
    return keras.Model(inputs, head(x, width, num_classes, norm), name=name)


@register("polynet", test_options=TINY)
def polynet(*, input_shape, num_classes, width=64, num_blocks=6, step_size=1.0, norm="group",
            lipschitz=None):
    """PolyNet poly-2 blocks with step ``h`` (Zhang et al. 2017)."""
    return scheme_net("polynet", one_function(layers.PolyBlock), input_shape=input_shape,
                       num_classes=num_classes, width=width, num_blocks=num_blocks,
                       step_size=step_size, norm=norm, lipschitz=lipschitz)


@register("heunnet", test_options=TINY, aliases=("heun",))
def heunnet(*, input_shape, num_classes, width=64, num_blocks=6, step_size=1.0, norm="group",
            lipschitz=None):
    """Heun (explicit RK2) blocks with step ``h``: the scheme net of the solver ``heun``."""
    return scheme_net("heunnet", one_function(layers.HeunBlock), input_shape=input_shape,
                       num_classes=num_classes, width=width, num_blocks=num_blocks,
                       step_size=step_size, norm=norm, lipschitz=lipschitz)


@register("fractal_rk2", test_options=TINY, aliases=("fractalnet",))
def fractal_rk2(*, input_shape, num_classes, width=64, num_blocks=6, step_size=1.0, norm="group",
                lipschitz=None):
    """Blocks of the two-stage Runge-Kutta reading of FractalNet's expansion rule
    (Lu et al. 2018, after Larsson et al. 2017) with step ``h``: not FractalNet itself,
    whose join has no identity column (`tfnode.layers.FractalRK2Block`)."""
    return scheme_net("fractal_rk2", two_functions(layers.FractalRK2Block, split=False),
                       input_shape=input_shape, num_classes=num_classes, width=width,
                       num_blocks=num_blocks, step_size=step_size, norm=norm,
                       lipschitz=lipschitz)


@register("revnet", test_options=TINY)
def revnet(*, input_shape, num_classes, width=64, num_blocks=6, step_size=1.0, norm="group",
            lipschitz=None):
    """RevNet additive-coupling blocks with step ``h`` (Gomez et al. 2017); ``width``
    must be even (the coupling splits the channels)."""
    if width % 2:
        raise TfnodeError(f"model 'revnet': width must be even (the coupling splits the "
                          f"channels in two), got {width}")
    return scheme_net("revnet", two_functions(layers.RevBlock, split=True), input_shape=input_shape,
                       num_classes=num_classes, width=width, num_blocks=num_blocks,
                       step_size=step_size, norm=norm, lipschitz=lipschitz)
