"""Interval bound propagation (`tfnode.bounds`) against truth: a network computed by
hand layer by layer, points sampled and found by PGD inside the ball, the collapse to the
logits at eps 0, and the refusals (adaptive solvers, layers without a rule)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnode import attacks, bounds, layers, models
from tfnode.bounds.box import Box, group_normalized
from tfnode.errors import ConfigError

# float32 bounds of a float32 model: a point may sit a few ulps outside (docstring of
# tfnode.bounds.box). Relative to the logits' scale.
SLACK = 1e-5


def _net(name, **options):
    if name == "sequential_cnn":  # a user's plain Keras model: Conv2D + relu, Flatten
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((28, 28, 1)),
                                 keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                                 keras.layers.Flatten(), keras.layers.Dense(10)])
    return models.get_model(name, dataset="mnist", **options)


# Every registered model at its shared-test size, and the ones whose bounds differ:
# no norm (the certified-training option), a step size that adds a Rescaling, the
# fixed-step solvers of the ODE block.
# resnet50 is left out for time (7 s to build): its layers (Conv2D, BatchNormalization,
# ReLU, Add, pooling, Dense) are preact_resnet18's and resnet56's.
CASES = [(n, dict(models.spec(n).test_options)) for n in models.available()
         if n != "resnet50"] + [
    ("node", dict(width=4, solver="euler", step_size=0.3, norm="none")),
    ("node", dict(width=4, solver="heun", step_size=0.4, norm="none")),
    ("resnet", dict(width=4, num_blocks=2, norm="none", step_size=0.5)),
    ("revnet", dict(width=4, num_blocks=1, norm="none")),
    ("node", dict(width=4, solver="rk4", step_size=0.5, norm="none", lipschitz="spectral")),
    ("resnet56", dict(depth=8, step_size=0.5)),
    ("sequential_cnn", {}),
]


def _images(n=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 28, 28, 1)).astype("float32")


def _inside(box, z):
    scale = 1.0 + np.abs(z)
    return (np.all(box.lo.numpy() <= z + SLACK * scale)
            and np.all(z <= box.hi.numpy() + SLACK * scale))


@pytest.mark.parametrize("name,options", CASES, ids=lambda v: str(v))
def test_sampled_and_pgd_points_stay_inside_and_bounds_collapse_at_eps_0(name, options):
    net = _net(name, **options)
    bounds.check_model(net)
    x, eps = _images(), 0.02
    z = net(x, training=False).numpy()
    at_zero = bounds.logit_bounds(net, x, 0.0)
    np.testing.assert_allclose(at_zero.lo.numpy(), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(at_zero.hi.numpy(), z, rtol=1e-5, atol=1e-5)
    box = bounds.logit_bounds(net, x, eps)
    rng = np.random.default_rng(1)
    corners = np.clip(x + eps * rng.choice([-1.0, 1.0], (8,) + x.shape), 0, 1)
    for point in list(corners.astype("float32")):
        assert _inside(box, net(point, training=False).numpy())
    y = z.argmax(1)
    x_adv = attacks.pgd(lambda v: net(v, training=False), x, y, eps=eps, step_size=eps / 4,
                        num_steps=5)
    assert np.abs(x_adv - x).max() <= eps + 1e-6
    assert _inside(box, net(x_adv, training=False).numpy())
    # Margins: the elided last layer at eps 0 gives the logits' own differences.
    margins = bounds.margin_lower_bounds(net, x, y, 0.0).numpy()
    np.testing.assert_allclose(margins, z[np.arange(len(y)), y][:, None] - z, atol=1e-4)


def test_hand_computed_network_layer_by_layer():
    # x in [0, 1]^2 around (0.5, 0.5) with eps 0.5 (the whole square after clipping).
    # Dense 1: W = [[1, -1], [2, 1]] (input i -> unit j), b = [0, -1]:
    #   unit 0 = x0 + 2 x1 in [0, 3]; unit 1 = -x0 + x1 - 1 in [-2, 0].
    # ReLU: [0, 3], [0, 0]. Dense 2: W = [[1, -1], [1, 1]], b = [0, 0.5]:
    #   logit 0 = u0 + u1 in [0, 3]; logit 1 = -u0 + u1 + 0.5 in [-2.5, 0.5].
    # Margin z0 - z1 = 2 u0 - 0.5 in [-0.5, 5.5] with the last layer elided (separate
    # bounds would give 0 - 0.5 = -0.5 as well here; at eps 0.1 they differ, below).
    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(2, name="d1")(inputs)
    out = keras.layers.Dense(2, name="d2")(keras.layers.ReLU()(hidden))
    net = keras.Model(inputs, out)
    net.get_layer("d1").set_weights([np.array([[1, -1], [2, 1]], "f"), np.array([0, -1], "f")])
    net.get_layer("d2").set_weights([np.array([[1, -1], [1, 1]], "f"), np.array([0, .5], "f")])
    x = np.array([[0.5, 0.5]], "float32")
    box = bounds.logit_bounds(net, x, 0.5)
    np.testing.assert_allclose(box.lo.numpy(), [[0, -2.5]])
    np.testing.assert_allclose(box.hi.numpy(), [[3, 0.5]])
    np.testing.assert_allclose(bounds.margin_lower_bounds(net, x, [0], 0.5).numpy(),
                               [[0, -0.5]])
    # eps 0.1: u0 in [1.5 - 0.3, 1.5 + 0.3], u1 = relu([-1.2, -0.8]) = 0. Elided margin
    # 2 u0 - 0.5 >= 1.9; from the logits' bounds: z0 >= 1.2, z1 <= -1.2 + 0.5 = -0.7,
    # so 1.9 as well; z1 - z0 for label 1: -(2 u0 - 0.5) <= -1.9.
    np.testing.assert_allclose(bounds.margin_lower_bounds(net, x, [0], 0.1).numpy(),
                               [[0, 1.9]], rtol=1e-6)
    assert bounds.certified(net, x, [0], 0.1).numpy().tolist() == [True]
    assert bounds.certified(net, x, [1], 0.1).numpy().tolist() == [False]
    np.testing.assert_allclose(bounds.worst_case_logits(net, x, [0], 0.1).numpy(),
                               [[0, -1.9]], rtol=1e-6)


def test_hand_computed_rk4_step_stage_by_stage():
    """One rk4 step (h = 1) of the ODE function f(y) = -relu(relu(y)) (a norm-free
    ODEFunc of one channel on a 1x1 image: each 3x3 convolution is its centre tap, w1 = 1
    and w2 = -1, no bias), from y in [0.6, 1.0] (0.8 +- 0.2). Every stage's box by hand,
    each stage a sum of independent boxes:
      k1 = f([0.6, 1.0]) = [-1.0, -0.6]
      y + k1 / 2 = [0.1, 0.7]          k2 = [-0.7, -0.1]
      y + k2 / 2 = [0.25, 0.95]        k3 = [-0.95, -0.25]
      y + k3 = [-0.35, 0.75]           k4 = -relu(.) = [-0.75, 0]
      y + (k1 + 2 k2 + 2 k3 + k4) / 6 = [0.6 - 5.05 / 6, 1.0 - 1.3 / 6].
    The solve itself maps y to 0.375 y on y >= 0 (rk4's 1 - 1 + 1/2 - 1/6 + 1/24):
    [0.225, 0.375], inside the box; the box is that wide because interval arithmetic
    forgets that the stages share y (the dependency problem)."""
    odefunc = layers.ODEFunc(1, time_dependent=False, norm="none")
    block = layers.ODEBlock(odefunc, solver="rk4", step_size=1.0)
    inputs = keras.Input((1, 1, 1))
    net = keras.Model(inputs, block(inputs))
    for conv, w in ((odefunc.conv1, 1.0), (odefunc.conv2, -1.0)):
        kernel = np.zeros((3, 3, 1, 1), "float32")
        kernel[1, 1] = w
        conv.set_weights([kernel] + [np.zeros(1, "float32")] * (len(conv.weights) - 1))
    x = np.full((1, 1, 1, 1), 0.8, "float32")
    box = bounds.logit_bounds(net, x, 0.2)
    np.testing.assert_allclose(box.lo.numpy().ravel(), [0.6 - 5.05 / 6], rtol=1e-6)
    np.testing.assert_allclose(box.hi.numpy().ravel(), [1.0 - 1.3 / 6], rtol=1e-6)
    for y0 in (0.6, 0.8, 1.0):
        out = net(np.full((1, 1, 1, 1), y0, "float32")).numpy().ravel()
        np.testing.assert_allclose(out, [0.375 * y0], rtol=1e-6)
        assert _inside(box, out.reshape(box.lo.shape))


def test_elision_is_tighter_than_subtracting_the_logits_bounds():
    # Two equal rows of the last layer: z0 - z1 = 0.1 exactly, whatever the input; the
    # logits' separate bounds cannot see it.
    inputs = keras.Input((3,))
    out = keras.layers.Dense(2, name="d")(keras.layers.Dense(3, activation="relu")(inputs))
    net = keras.Model(inputs, out)
    kernel = np.random.default_rng(0).normal(size=(3, 1)).astype("f")
    net.get_layer("d").set_weights([np.concatenate([kernel, kernel], 1), np.array([.1, 0], "f")])
    x = np.full((1, 3), 0.5, "float32")
    np.testing.assert_allclose(bounds.margin_lower_bounds(net, x, [0], 0.5).numpy()[0, 1],
                               0.1, rtol=1e-5)
    box = bounds.logit_bounds(net, x, 0.5)
    assert (box.lo.numpy()[0, 0] - box.hi.numpy()[0, 1]) < 0.1


def test_group_norm_bounds_hold_sampled_points_and_are_exact_at_eps_0():
    norm = layers.GroupNorm(2)
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype("float32")
    norm.build(x.shape)
    norm.gamma.assign([1.0, -2.0, 0.5, 3.0])
    norm.beta.assign([0.1, 0.2, -0.3, 0.0])
    z = norm(x).numpy()
    exact = bounds.rules.apply(norm, Box(x, x))
    np.testing.assert_allclose(exact.lo.numpy(), z, atol=1e-5)
    np.testing.assert_allclose(exact.hi.numpy(), z, atol=1e-5)
    box = bounds.rules.apply(norm, Box(x - 0.05, x + 0.05))
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert _inside(box, norm(x + rng.uniform(-0.05, 0.05, x.shape).astype("f")).numpy())
    # Centering alone is exact per element: one element moved, the others at a corner.
    one = Box(np.array([[[[0.0, 1.0]]]], "f"), np.array([[[[1.0, 1.0]]]], "f"))
    mean = lambda t: tf.reduce_mean(t, axis=-1, keepdims=True)  # noqa: E731 (one group)
    normalized = group_normalized(one, group_mean=mean, group_size=2, epsilon=0.0)
    # x0 - m in [-0.5, 0]: at x0 = 0 the group is (0, 1), normalized -1; at x0 = 1 both
    # are 0 (0 / 0 is where epsilon matters: here the bound stays finite through rsqrt).
    assert normalized.lo.numpy()[0, 0, 0, 0] <= -1.0 + 1e-6


def test_adaptive_solvers_and_unknown_layers_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"ODE block 'ode_block' solves with 'dopri5', "
                                          r"an adaptive solver.*choose a fixed-step solver"):
        bounds.check_model(_net("node", width=4))
    inputs = keras.Input((4,))
    net = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dropout(0.1)(inputs)))
    with pytest.raises(ConfigError, match=r"layer 'dropout.*' \(Dropout\) is one interval "
                                          r"bounds do not pass"):
        bounds.check_model(net)
    inputs = keras.Input((4,))
    net = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(3, activation="tanh")(
        inputs)))
    with pytest.raises(ConfigError, match="activation 'tanh'"):
        bounds.check_model(net)
    # The public functions refuse it too: an activation is never taken for linear.
    with pytest.raises(ConfigError, match="activation 'tanh'"):
        bounds.certified(net, np.zeros((1, 4), "f"), [0], 0.01)
    # A raw op after the last Dense: the margins would elide the Dense and skip the op.
    inputs = keras.Input((4,))
    net = keras.Model(inputs, -keras.layers.Dense(2)(inputs))
    with pytest.raises(ConfigError, match=r"\(Negative\) is one interval bounds do not pass"):
        bounds.check_model(net)
    with pytest.raises(ConfigError):
        bounds.certified(net, np.zeros((1, 4), "f"), [0], 0.01)

    class Doubled(keras.layers.Dense):  # a subclass that computes something else
        def call(self, x):
            return 2.0 * super().call(x)

    inputs = keras.Input((4,))
    net = keras.Model(inputs, keras.layers.Dense(2)(Doubled(3)(inputs)))
    with pytest.raises(ConfigError, match=r"\(Doubled\) is one interval bounds do not pass"):
        bounds.check_model(net)


def test_every_rule_is_exercised_by_the_cases():
    seen = set()
    for name, options in CASES:
        seen.update(type(layer).__name__ for layer in layers.sublayers(_net(name, **options)))
    assert set(bounds.RULES) <= seen
