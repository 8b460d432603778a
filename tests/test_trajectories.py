"""`tfnode.evaluation.trajectories` against closed forms: linear ODEs and linear residual blocks."""

import keras
import numpy as np
import pytest

from tfnode import layers
from tfnode.evaluation import trajectories


@keras.saving.register_keras_serializable(package="tfnode_test")
class Linear(keras.layers.Layer):
    """``f(t, y) = a y``: a perturbation grows exactly as exp(a t) (ODE) or (1 + h a)^k."""

    def __init__(self, a, **kwargs):
        super().__init__(**kwargs)
        self.a = float(a)

    def call(self, t, y):
        return self.a * y

    def get_config(self):
        return {**super().get_config(), "a": self.a}


def _model(block):
    inputs = keras.Input((3, 3, 2))
    x = block(inputs)
    return keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(x)))


@pytest.mark.parametrize("a", [0.7, -1.3])
def test_ode_growth_is_exp_at_and_lipschitz_is_a(a):
    model = _model(layers.ODEBlock(Linear(a), rtol=1e-7, atol=1e-7, gradient="backprop"))
    rng = np.random.default_rng(0)
    x = rng.random((5, 3, 3, 2)).astype("float32")
    x_pert = x + 0.05 * rng.standard_normal(x.shape).astype("float32")
    out = trajectories.measure(model, x, x_pert, num_times=5, batch_size=2)
    assert out["kind"] == "ode" and out["positions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    expected = np.exp(a * np.asarray(out["positions"]))
    np.testing.assert_allclose(out["growth"], np.tile(expected, (5, 1)), rtol=1e-4)
    # The block input is the model input here, so per-input equals growth.
    np.testing.assert_allclose(out["per_input"], out["growth"], rtol=1e-5)
    np.testing.assert_allclose(out["lipschitz"], abs(a), rtol=1e-5)
    summary = trajectories.summarize(out)
    assert summary["growth_median"][-1] == pytest.approx(np.exp(a), rel=1e-4)


def test_fixed_step_ode_is_recorded_on_its_own_step_grid():
    """Euler with h = 0.25 grows a perturbation by (1 + h a) per step, at t = k h."""
    a, h = 0.8, 0.25
    model = _model(layers.ODEBlock(Linear(a), solver="euler", step_size=h))
    x = np.random.default_rng(2).random((3, 3, 3, 2)).astype("float32")
    out = trajectories.measure(model, x, x + 0.05, num_times=11, batch_size=3)
    assert out["positions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(out["growth"][0], (1 + h * a) ** np.arange(5), rtol=1e-5)


def test_residual_growth_is_one_plus_ha_per_block():
    a, h, blocks = 0.5, 0.4, 3
    inputs = keras.Input((3, 3, 2))
    x = inputs
    for i in range(blocks):
        x = layers.ResidualBlock(Linear(a), step_size=h, name=f"block{i}")(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(x)))
    rng = np.random.default_rng(1)
    x0 = rng.random((4, 3, 3, 2)).astype("float32")
    out = trajectories.measure(model, x0, x0 + 0.1, batch_size=3)
    assert out["kind"] == "residual" and out["positions"] == [0, 1, 2, 3]
    np.testing.assert_allclose(out["growth"][0], (1 + h * a) ** np.arange(blocks + 1), rtol=1e-5)
    np.testing.assert_allclose(out["lipschitz"][:, :-1], a, rtol=1e-5)
    assert np.isnan(out["lipschitz"][:, -1]).all()


def test_a_model_without_blocks_is_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert trajectories.stages(model) is None
    with pytest.raises(ValueError, match="ODEBlock"):
        trajectories.measure(model, np.zeros((1, 3)), np.ones((1, 3)))
