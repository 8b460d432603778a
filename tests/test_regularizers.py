"""The regularizers against truth: RNODE's integrals of a linear ODE in closed form (rk4
integrates them to float tolerance) and its Hutchinson term of a skip block against the
explicit Jacobian with the same noise; the contractivity bound's convolution norm against
the explicit operator's row sums, and the bound holding for f and for the solved flow;
each penalty's gradient lowering it; the training step with a regularizer alone and
beside a defense; one-line errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnode import layers
from tfnode.errors import TfnodeError
from tfnode.training import TrainConfig, config as config_lib, defenses, regularizers
from tfnode.training.regularizers import contractivity, kinetic_jacobian

SHAPE = (3, 3, 2)


class Scale(keras.layers.Layer):
    """``f(t, y) = a * y``: ``y(t) = y0 exp(a t)``."""

    def __init__(self, a, **kwargs):
        super().__init__(**kwargs)
        self.a = a

    def call(self, t, y):
        return self.a * y


def ode_model(func, **block):
    inputs = keras.Input(SHAPE)
    x = layers.ODEBlock(func, **block)(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))


def images(n=4, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(0, 1, (n,) + SHAPE), tf.float32)


def first_noise(seed, shape):
    """The first normal draw of a fresh generator: the regularizer's ``e``."""
    return keras.random.normal(shape, seed=keras.random.SeedGenerator(seed))


@pytest.mark.parametrize("block", [dict(solver="rk4", step_size=0.05, t1=1.0),
                                   dict(solver="dopri5", gradient="backprop", rtol=1e-7,
                                        atol=1e-7, t1=1.0)], ids=["rk4", "dopri5"])
def test_linear_ode_integrals_in_closed_form(block):
    a, x = -0.7, images()
    model = ode_model(Scale(a), **block)
    _, kinetic, jacobian = kinetic_jacobian.walk(model, x, keras.random.SeedGenerator(5))
    t1 = block["t1"]
    mean_sq = tf.reduce_mean(tf.square(x), axis=[1, 2, 3])
    # int_0^T 0.5 mean(a^2 y0^2 e^{2at}) dt and int_0^T mean((a e)^2) dt.
    want_k = 0.5 * a ** 2 * mean_sq * (np.exp(2 * a * t1) - 1) / (2 * a)
    e = first_noise(5, x.shape)
    want_j = a ** 2 * t1 * tf.reduce_mean(tf.square(e), axis=[1, 2, 3])
    np.testing.assert_allclose(kinetic, want_k, rtol=1e-4)
    np.testing.assert_allclose(jacobian, want_j, rtol=1e-4)


def test_skip_block_terms_match_the_explicit_jacobian():
    keras.utils.set_random_seed(1)
    h = 0.5
    inputs = keras.Input(SHAPE)
    block = layers.ResidualBlock(layers.ODEFunc(2, time_dependent=False, norm="none"),
                                 step_size=h)
    out = block(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(out)))
    x = images(3, seed=2)
    logits, kinetic, jacobian = kinetic_jacobian.walk(model, x, keras.random.SeedGenerator(9))
    np.testing.assert_allclose(logits, model(x), rtol=1e-5, atol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(x)
        phi = block.increment(x)
    jac = tape.batch_jacobian(phi, x)  # [N, 3, 3, 2, 3, 3, 2]
    n, d = x.shape[0], int(np.prod(SHAPE))
    e = tf.reshape(first_noise(9, x.shape), [n, 1, d])
    e_jac = tf.matmul(e, tf.reshape(jac, [n, d, d]))  # e^T dPhi/dy, row vectors
    want_j = h * tf.reduce_mean(tf.square(e_jac), axis=[1, 2])
    want_k = h * 0.5 * tf.reduce_mean(tf.square(phi), axis=[1, 2, 3])
    np.testing.assert_allclose(kinetic, want_k, rtol=1e-5)
    np.testing.assert_allclose(jacobian, want_j, rtol=1e-4)


def test_penalty_gradient_lowers_the_penalty():
    keras.utils.set_random_seed(3)
    model = ode_model(layers.ODEFunc(2, norm="none"), solver="rk4", step_size=0.25)
    x, spec = images(8), regularizers.get("kinetic_jacobian")
    options = spec.options({"kinetic_energy": 1.0, "jacobian_norm2": 1.0})
    optimizer = keras.optimizers.SGD(0.05)

    def penalty():  # the same noise every time, so the comparison is of the weights alone
        return spec.fn(model, x, seed=keras.random.SeedGenerator(0), **options)[1]

    before = float(penalty())
    for _ in range(5):
        with tf.GradientTape() as tape:
            value = penalty()
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_weights),
                                      model.trainable_weights))
    assert before > 0 and float(penalty()) < before


@pytest.mark.parametrize("defense", [None, "pgd_at"])
@pytest.mark.parametrize("name", ["kinetic_jacobian", "contractivity"])
def test_training_step_adds_the_penalty(defense, name):
    keras.utils.set_random_seed(4)
    model = ode_model(layers.ODEFunc(2, norm="none"), solver="euler", step_size=0.5)
    options = defenses.get(defense).options({"num_steps": 2}) if defense else None
    trainer = defenses.DefendedModel(model, defense, options, regularizer=name,
                                     regularizer_options=regularizers.get(name).options())
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    x, y = images(8), tf.constant(np.arange(8) % 3)
    before = [w.numpy().copy() for w in model.trainable_weights]
    logs = trainer.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    assert trainer.name == "_".join(n for n in (model.name, defense, name) if n)


def test_one_line_errors():
    assert regularizers.available() == ["kinetic_jacobian", "contractivity"]
    with pytest.raises(TfnodeError, match="kinetic_jacobian has no option 'beta'"):
        regularizers.get("kinetic_jacobian").options({"beta": 1})
    with pytest.raises(TfnodeError, match="kinetic_jacobian.jacobian_norm2 must be a number >= 0"):
        regularizers.get("kinetic_jacobian").options({"jacobian_norm2": -1})
    with pytest.raises(TfnodeError, match="unknown regularizer 'l2'"):
        regularizers.get("l2")
    with pytest.raises(TfnodeError, match="regularizer_options"):
        config_lib.check(TrainConfig(model="node", regularizer_options={"kinetic_energy": 1}))
    inputs = keras.Input(SHAPE)
    plain = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    with pytest.raises(TfnodeError, match="no ODE block or skip-connection block"):
        kinetic_jacobian.walk(plain, images(), keras.random.SeedGenerator(0))
    with pytest.raises(TfnodeError, match="needs a defense, a regularizer or both"):
        defenses.DefendedModel(plain, None, None)


def test_conv_inf_norm_is_the_operators_largest_row_sum():
    kernel = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 2, 3)), tf.float32)
    x = tf.zeros((1, 5, 5, 2))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.nn.conv2d(x, kernel, 1, "SAME")
    operator = tf.reshape(tape.jacobian(out, x), [5 * 5 * 3, 5 * 5 * 2])
    want = tf.reduce_max(tf.reduce_sum(tf.abs(operator), axis=1))
    np.testing.assert_allclose(contractivity.conv_inf_norm(kernel), want, rtol=1e-6)


def test_the_bound_holds_for_f_and_for_the_solved_flow():
    keras.utils.set_random_seed(6)
    t1 = 0.5
    model = ode_model(layers.ODEFunc(2, norm="none"), solver="rk4", step_size=0.125, t1=t1)
    (name, bound), = contractivity.lipschitz_bounds(model).items()
    func, block = model.get_layer(name).odefunc, model.get_layer(name)
    rng = np.random.default_rng(7)
    z1 = tf.constant(rng.normal(size=(16,) + SHAPE), tf.float32)
    z2 = z1 + tf.constant(rng.uniform(-0.1, 0.1, (16,) + SHAPE), tf.float32)

    def inf_dist(a, b):
        return tf.reduce_max(tf.abs(a - b), axis=[1, 2, 3])

    d0 = inf_dist(z1, z2)
    assert np.all(inf_dist(func(t=0.3, y=z1), func(t=0.3, y=z2)) <= bound * d0 * (1 + 1e-5))
    # An rk4 step's Lipschitz constant is at most 1 + hL + ... + (hL)^4 / 24 <= exp(hL).
    assert np.all(inf_dist(block(z1), block(z2)) <= np.exp(float(bound) * t1) * d0 * (1 + 1e-5))


def test_contractivity_penalty_falls_under_its_gradient_and_is_zero_under_the_bound():
    keras.utils.set_random_seed(8)
    model = ode_model(layers.ODEFunc(2, norm="none"), solver="euler", step_size=0.5)
    spec, x = regularizers.get("contractivity"), images()
    penalty = lambda **o: spec.fn(model, x, seed=None, **spec.options(o))[1]  # noqa: E731
    big = float(max(contractivity.lipschitz_bounds(model).values())) * 2
    assert float(penalty(bound=big)) == 0.0
    before = float(penalty())
    optimizer = keras.optimizers.SGD(0.05)
    for _ in range(3):
        with tf.GradientTape() as tape:
            value = penalty()
        grads = tape.gradient(value, model.trainable_weights)
        optimizer.apply_gradients([(g, w) for g, w in zip(grads, model.trainable_weights)
                                   if g is not None])
    assert before > 0 and float(penalty()) < before


def test_contractivity_refuses_what_its_bound_does_not_cover():
    check = regularizers.get("contractivity").model_check
    with pytest.raises(TfnodeError, match="norm layer's division"):
        check(ode_model(layers.ODEFunc(2), solver="rk4", step_size=0.5))
    with pytest.raises(TfnodeError, match="use it or contractivity, not both"):
        check(ode_model(layers.ODEFunc(2, norm="none", lipschitz="spectral"), solver="rk4",
                        step_size=0.5))
    with pytest.raises(TfnodeError, match="bound is derived for tfnode's ODEFunc"):
        check(ode_model(Scale(1.0), solver="rk4", step_size=0.5))


@pytest.mark.slow  # ~35 s: TFP's adjoint at tight tolerances
def test_the_adjoint_and_backprop_gradients_of_the_penalty_agree():
    """TFP's adjoint differentiates the augmented solve (a double backward inside its
    vjp); the exact gradient through tfnode's steps is the independent check."""
    x, spec = images(), regularizers.get("kinetic_jacobian")
    grads = {}
    for gradient in ("adjoint", "backprop"):
        keras.utils.set_random_seed(0)  # the same weights for both
        model = ode_model(layers.ODEFunc(2, norm="none"), solver="dopri5", gradient=gradient,
                          rtol=1e-6, atol=1e-6)
        with tf.GradientTape() as tape:
            _, penalty = spec.fn(model, x, seed=keras.random.SeedGenerator(0), **spec.options())
        grads[gradient] = tape.gradient(penalty, model.layers[1].trainable_weights)
    for a, b in zip(grads["adjoint"], grads["backprop"]):
        assert np.max(np.abs(a - b)) <= 0.05 * np.max(np.abs(b))
