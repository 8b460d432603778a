"""Skip connections as schemes (Chu et al. 2020, Sec. 3.3): each block against its
formula on a linear function, h scaling, h -> 0, the Keras contract, the model family."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_test_util import run_layer_test
from tfnode import layers, models
from tfnode.evaluation import trajectories
from tfnode.errors import TfnodeError

SCHEMES = ("polynet", "heun", "fractal_rk2", "revnet")
SHAPE = (3, 3, 4)


@keras.saving.register_keras_serializable(package="tfnode_schemes_test")
class MatrixFn(keras.layers.Layer):
    """``f(t, y) = y @ M^T`` over the channels, ``M`` fixed: the scheme formulas are then
    matrix polynomials in ``h M``."""

    def __init__(self, matrix, **kwargs):
        super().__init__(**kwargs)
        self.matrix = np.asarray(matrix, np.float64).tolist()

    def call(self, t, y):
        return tf.matmul(y, tf.constant(self.matrix, tf.float32), transpose_b=True)

    def get_config(self):
        return {**super().get_config(), "matrix": self.matrix}


def matrices(c, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(c, c)) / np.sqrt(c) for _ in range(2)]


def apply(m, y):
    return y @ m.T


def expected(name, y, h, a, b):
    """The scheme's step in numpy (float64), from the formula in its docstring."""
    if name == "polynet":
        return y + h * apply(a, y) + h * h * apply(a, apply(a, y))
    if name == "heun":
        return y + h / 2 * (apply(a, y) + apply(a, y + h * apply(a, y)))
    if name == "fractal_rk2":
        return y + h / 2 * apply(a, y) + h / 2 * apply(b, y + h * apply(a, y))
    first, second = np.split(y, 2, axis=-1)
    first = first + h * apply(a, second)
    return np.concatenate([first, second + h * apply(b, first)], axis=-1)


def block(name, h, a, b):
    if name == "polynet":
        return layers.PolyBlock(MatrixFn(a), step_size=h)
    if name == "heun":
        return layers.HeunBlock(MatrixFn(a), step_size=h)
    cls = layers.FractalRK2Block if name == "fractal_rk2" else layers.RevBlock
    return cls(MatrixFn(a), MatrixFn(b), step_size=h)


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("h", [1.0, 0.1])
def test_blocks_match_their_formula_on_a_linear_function(name, h):
    c = SHAPE[-1] // 2 if name == "revnet" else SHAPE[-1]
    a, b = matrices(c, seed=1)
    y = np.random.default_rng(0).normal(size=(2,) + SHAPE)
    out = block(name, h, a, b)(y.astype(np.float32))
    np.testing.assert_allclose(out, expected(name, y, h, a, b), rtol=1e-4, atol=1e-5)


def limit(name, y, a, b):
    """``(block(y) - y) / h`` as h -> 0: each scheme's update direction at h = 0."""
    if name in ("polynet", "heun"):
        return apply(a, y)
    if name == "fractal_rk2":
        return (apply(a, y) + apply(b, y)) / 2
    first, second = np.split(y, 2, axis=-1)
    return np.concatenate([apply(a, second), apply(b, first)], axis=-1)


@pytest.mark.parametrize("name", SCHEMES)
def test_h_scales_the_update_and_h_to_zero_is_the_identity(name):
    c = SHAPE[-1] // 2 if name == "revnet" else SHAPE[-1]
    a, b = matrices(c, seed=2)
    y = np.random.default_rng(3).normal(size=(2,) + SHAPE)
    direction = limit(name, y, a, b)

    def error(h):  # how far the update divided by h is from its h -> 0 limit
        step = block(name, h, a, b)(y.astype(np.float32)).numpy() - y.astype(np.float32)
        return np.abs(step / h - direction).max()

    # The update is h times a direction that converges, to first order in h.
    assert error(1e-1) < 0.5 * np.abs(direction).max()
    assert error(1e-2) < 0.2 * error(1e-1)
    np.testing.assert_allclose(block(name, 1e-10, a, b)(y.astype(np.float32)),
                               y.astype(np.float32), atol=1e-6)


def test_fractal_join_with_one_function_twice_is_heun():
    a, _ = matrices(SHAPE[-1], seed=4)
    y = np.random.default_rng(5).normal(size=(2,) + SHAPE).astype(np.float32)
    np.testing.assert_allclose(layers.FractalRK2Block(MatrixFn(a), MatrixFn(a), step_size=0.3)(y),
                               layers.HeunBlock(MatrixFn(a), step_size=0.3)(y), atol=1e-6)


def test_revnet_block_is_invertible():
    a, b = matrices(2, seed=6)
    rev = layers.RevBlock(MatrixFn(a), MatrixFn(b), step_size=0.5)
    y = np.random.default_rng(7).normal(size=(2,) + SHAPE)
    out = rev(y.astype(np.float32)).numpy().astype(np.float64)
    first, second = np.split(out, 2, axis=-1)
    second = second - 0.5 * apply(b, first)
    first = first - 0.5 * apply(a, second)
    np.testing.assert_allclose(np.concatenate([first, second], -1), y, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: layers.PolyBlock(layers.ODEFunc(8, time_dependent=False), step_size=0.1),
    lambda: layers.HeunBlock(layers.ODEFunc(8, time_dependent=False), step_size=0.1),
    lambda: layers.FractalRK2Block(layers.ODEFunc(8, time_dependent=False),
                                layers.ODEFunc(8, time_dependent=False), step_size=0.1),
    lambda: layers.RevBlock(layers.ODEFunc(4, time_dependent=False),
                            layers.ODEFunc(4, time_dependent=False), step_size=0.1),
], ids=SCHEMES)
def test_layer_contract(make):
    run_layer_test(make, (5, 5, 8))


def test_a_revnet_block_on_odd_channels_is_refused():
    with pytest.raises(ValueError, match="even number"):
        layers.RevBlock(MatrixFn(np.eye(2)), MatrixFn(np.eye(2)))(np.zeros((1, 2, 2, 3), "f"))
    with pytest.raises(TfnodeError, match="width must be even"):
        models.get_model("revnet", dataset="mnist", width=7)


@pytest.mark.parametrize("name", SCHEMES)
def test_scheme_models_are_registered_and_take_a_step_size(name, tmp_path):
    assert models.model_options(name) == {"width": 64, "num_blocks": 6, "step_size": 1.0,
                                          "norm": "group", "lipschitz": None}
    x = np.random.default_rng(8).random((2, 28, 28, 1)).astype(np.float32)
    full = models.get_model(name, dataset="mnist", width=8, num_blocks=2, step_size=1.0)
    tiny = models.get_model(name, dataset="mnist", width=8, num_blocks=2, step_size=1e-10)
    none = models.get_model(name, dataset="mnist", width=8, num_blocks=0)
    tiny.set_weights(full.get_weights())
    none.set_weights([w for layer in full.layers if not layer.name.startswith("block")
                      for w in layer.get_weights()])
    np.testing.assert_allclose(tiny(x), none(x), atol=1e-5)  # h -> 0: the blocks vanish
    assert not np.allclose(full(x), none(x), atol=1e-3)
    full.save(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "m.keras")(x), full(x),
                               rtol=1e-6, atol=1e-6)


def test_trajectories_measure_a_scheme_family():
    """Through PolyBlocks on f = a y a perturbation grows by 1 + h a + (h a)^2 per block."""
    a, h = 0.5, 0.4
    inputs = keras.Input((3, 3, 2))
    x = inputs
    for i in range(3):
        x = layers.PolyBlock(MatrixFn(a * np.eye(2)), step_size=h, name=f"block{i}")(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(x)))
    x0 = np.random.default_rng(9).random((4, 3, 3, 2)).astype(np.float32)
    out = trajectories.measure(model, x0, x0 + 0.1, batch_size=3)
    assert out["kind"] == "residual" and out["positions"] == [0, 1, 2, 3]
    factor = 1 + h * a + (h * a) ** 2
    np.testing.assert_allclose(out["growth"][0], factor ** np.arange(4), rtol=1e-5)
    # The block's update direction F(y) + h F(F(y)) is linear with slope a + h a^2.
    np.testing.assert_allclose(out["lipschitz"][:, :-1], a + h * a * a, rtol=1e-5)
