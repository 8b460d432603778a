"""Defenses against their definitions: TRADES at beta = 0 is cross-entropy, PGD-AT's
adversarials lie in the ball and raise the loss, YOPO's loop counts and its summed
gradient; every defense's loss function, differentiated by a plain loop, trains as
Keras' fit does, on inputs within eps and [0, 1]; the eps warm-up ramp."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnode import bounds
from tfnode.errors import TfnodeError
from tfnode.training import defenses
from tfnode.training.defenses._inner import cross_entropy

SHAPE = (6, 6, 1)


def tiny_model(seed=0, activation="tanh"):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(4, 3, activation=activation, name="first")(inputs)
    h = keras.layers.Dense(8, activation=activation)(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.uniform(0.2, 0.8, (n,) + SHAPE), tf.float32),
            tf.constant(rng.integers(0, 3, n), tf.int64))


def step(name, model, x, y, **overrides):
    """``(loss, logits, gradients)`` of one batch: the defense's loss under a tape."""
    options = defenses.get(name).options(overrides)
    with tf.GradientTape() as tape:
        loss, logits = defenses.get(name).loss(model, x, y, 0,
                                               seed=keras.random.SeedGenerator(0), **options)
    return loss, logits, tape.gradient(loss, model.trainable_weights)


def test_registry_has_the_papers_defenses_with_published_settings():
    assert defenses.available() == ["pgd_at", "trades", "yopo", "fgsm_rs", "ibp"]
    assert defenses.get("ibp").options() == {"eps": 0.4, "kappa_final": 0.5,
                                             "eps_warmup": 2000, "init": "ibp"}
    assert defenses.get("fgsm_rs").options() == {"eps": 0.3, "step_ratio": 1.25,
                                                 "guard_pgd_steps": 10, "guard_drop": 0.2,
                                                 "eps_warmup": 0}
    assert defenses.get("fgsm_rs").options(dataset="cifar10")["eps"] == pytest.approx(8 / 255)
    with pytest.raises(TfnodeError, match=r"fgsm_rs.guard_drop must be a number in \(0, 1\)"):
        defenses.get("fgsm_rs").options({"guard_drop": 1.5})
    assert defenses.get("pgd_at").options(dataset="cifar10")["eps"] == pytest.approx(8 / 255)
    assert defenses.get("trades").options(dataset="cifar10")["beta"] == 6.0
    assert defenses.get("yopo").options()["inner_steps"] == 10
    with pytest.raises(TfnodeError, match="defense option trades.beta must be a number >= 0"):
        defenses.get("trades").options({"beta": -1})
    with pytest.raises(TfnodeError, match="pgd_at has no option 'beta'"):
        defenses.get("pgd_at").options({"beta": 1.0})
    with pytest.raises(TfnodeError, match="unknown defense 'madry'"):
        defenses.get("madry")


def test_trades_with_beta_zero_is_cross_entropy():
    model = tiny_model()
    x, y = batch()
    loss, logits, grads = step("trades", model, x, y, beta=0.0, num_steps=3)
    with tf.GradientTape() as tape:
        ce = cross_entropy(y, model(x, training=True))
    expected = tape.gradient(ce, model.trainable_weights)
    assert float(loss) == pytest.approx(float(ce), rel=1e-6)
    np.testing.assert_allclose(logits, model(x), rtol=1e-6)
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)
    # With beta > 0 the KL term is there and non-negative.
    robust, _, _ = step("trades", model, x, y, beta=1.0, num_steps=3, eps=0.3, step_size=0.1)
    assert float(robust) > float(ce)


def recording_ascend(monkeypatch, module):
    """Records the adversarials the defense's inner maximization returns."""
    seen, original = [], module.ascend

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(module, "ascend", recording)
    return seen


def test_trades_inner_loop_increases_the_kl_beyond_random_points_of_the_ball(monkeypatch):
    model = tiny_model()
    x, y = batch()
    seen = recording_ascend(monkeypatch, defenses.trades)
    step("trades", model, x, y, eps=0.2, step_size=0.05, num_steps=10)
    natural = model(x, training=False)
    found = defenses.kl_divergence(natural, model(seen[0], training=False)).numpy()
    rng = np.random.default_rng(0)
    noise = np.clip(x.numpy() + rng.uniform(-0.2, 0.2, x.shape), 0, 1).astype(np.float32)
    random = defenses.kl_divergence(natural, model(noise, training=False)).numpy()
    assert np.abs(seen[0].numpy() - x.numpy()).max() <= 0.2 + 1e-6
    assert found.mean() > 3 * random.mean()  # an ascent, not a descent of the KL


def test_kl_divergence_is_zero_on_equal_logits_and_positive_otherwise():
    a = tf.constant([[1.0, 2.0, 0.5]])
    assert float(defenses.kl_divergence(a, a)[0]) == pytest.approx(0.0, abs=1e-7)
    p, q = tf.nn.softmax(a)[0].numpy(), np.array([0.2, 0.5, 0.3])
    assert float(defenses.kl_divergence(a, tf.math.log([q.astype(np.float32)]))[0]) == pytest.approx(
        np.sum(p * np.log(p / q)), rel=1e-5)


def test_pgd_at_adversarials_lie_in_the_ball_and_raise_the_loss(monkeypatch):
    model = tiny_model()
    x, y = batch()
    seen = recording_ascend(monkeypatch, defenses.pgd_at)
    spec = defenses.get("pgd_at")
    loss, logits, grads = step("pgd_at", model, x, y, eps=0.1, step_size=0.02, num_steps=10)
    x_adv = seen[0].numpy()
    assert np.abs(x_adv - x.numpy()).max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    clean = float(cross_entropy(y, model(x, training=True)))
    assert float(loss) > clean
    np.testing.assert_allclose(logits, model(x_adv, training=True), rtol=1e-5)
    assert len(grads) == len(model.trainable_weights) and spec.metrics_on


def test_fgsm_rs_from_a_zero_start_is_one_signed_step_of_the_analytic_gradient(monkeypatch):
    """A linear model, logits = x W: the cross-entropy's input gradient is
    (softmax - onehot) W^T, so from the clean image (the uniform start drawn as zeros)
    FGSM-RS's adversarial is clip(x + eps sign(that), 0, 1): the step of 1.25 eps is
    projected back onto the ball."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    dense = keras.layers.Dense(3, use_bias=False)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    x, y = batch()
    monkeypatch.setattr(defenses.pgd_at.keras.random, "uniform",
                        lambda shape, *a, **k: tf.zeros(shape))
    seen = recording_ascend(monkeypatch, defenses.pgd_at)
    step("fgsm_rs", model, x, y, eps=0.1)
    w = dense.kernel.numpy()
    flat = x.numpy().reshape(len(y), -1)
    p = tf.nn.softmax(flat @ w).numpy()
    grad = (p - np.eye(3)[y.numpy()]) @ w.T
    expected = np.clip(flat + 0.1 * np.sign(grad), 0.0, 1.0)
    clear = np.abs(grad) > 1e-5 * np.abs(grad).max()  # a sign float32 rounding cannot flip
    assert clear.mean() > 0.9
    np.testing.assert_allclose(seen[0].numpy().reshape(len(y), -1)[clear], expected[clear],
                               atol=1e-6)


def test_the_overfitting_guard_keeps_the_previous_epoch_when_pgd_accuracy_collapses(tmp_path):
    model = tiny_model()
    pattern = str(tmp_path / "epoch_{epoch:03d}.weights.h5")
    x, y = batch()
    lines = []

    def run(accuracies, previous=None, first_epoch=0):
        guard = defenses.OverfittingGuard(model, (x.numpy(), y.numpy()), eps=0.1,
                                          num_steps=2, drop=0.2, weights_pattern=pattern,
                                          previous=previous, log=lines.append)
        guard.set_model(model)
        model.stop_training = False
        guard.robust_accuracy = iter(accuracies).__next__
        logs = []
        for epoch in range(first_epoch, first_epoch + len(accuracies)):
            model.get_layer("first").kernel.assign_add(tf.ones_like(model.get_layer("first").kernel))
            model.save_weights(pattern.format(epoch=epoch + 1))  # as the checkpointer does
            logs.append({})
            guard.on_epoch_end(epoch, logs[-1])
            if model.stop_training:
                break
        return guard, logs

    # Drops of 0.1 and 0.2 pass; a drop of more than 0.2 stops after epoch 4 and loads
    # epoch 3's weights back.
    guard, logs = run([0.5, 0.6, 0.5, 0.3 + 1e-3, 0.2, 0.9])
    assert guard.stopped_after is None and not model.stop_training
    assert [l["guard_pgd_accuracy"] for l in logs] == [0.5, 0.6, 0.5, 0.3 + 1e-3, 0.2, 0.9]
    guard, logs = run([0.5, 0.6, 0.5, 0.29])
    assert model.stop_training and guard.stopped_after == 3 and len(logs) == 4
    kept = tiny_model()
    kept.load_weights(pattern.format(epoch=3))
    for a, b in zip(model.weights, kept.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert "fell from 0.500 to 0.290 in epoch 4" in lines[-1]
    # A resumed run starts from the last epoch's accuracy: a fall at its first epoch counts.
    guard, _ = run([0.1], previous=0.6, first_epoch=4)
    assert guard.stopped_after == 4 and model.stop_training
    # Against a real PGD: the accuracy is a fraction of the batch.
    assert 0.0 <= defenses.OverfittingGuard(
        model, (x.numpy(), y.numpy()), eps=0.1, num_steps=2, drop=0.2,
        weights_pattern=pattern).robust_accuracy() <= 1.0


class Counted(keras.layers.Layer):
    """Counts its calls in a variable (each call, also inside a traced function)."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                     dtype="int64", name="calls")

    def call(self, x):
        self.calls.assign_add(1)
        return self.inner(x)


@pytest.mark.parametrize("m,n", [(2, 3), (3, 1)])
def test_yopo_runs_m_full_passes_and_m_times_n_first_layer_steps(m, n):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    first = Counted(keras.layers.Conv2D(4, 3, activation="tanh"), name="first")
    rest = Counted(keras.layers.Dense(3), name="rest")
    h = first(inputs)
    model = keras.Model(inputs, rest(keras.layers.Flatten()(h)))
    first.calls.assign(0)
    rest.calls.assign(0)
    x, y = batch()
    loss, logits, grads = step("yopo", model, x, y, outer_steps=m, inner_steps=n, eps=0.1)
    # m full passes (first and rest), m * n Hamiltonian steps through the first layer
    # only, and m Hamiltonians for the first layer's weight gradient.
    assert int(rest.calls.numpy()) == m
    assert int(first.calls.numpy()) == m + m * n + m
    assert all(g is not None for g in grads) and logits.shape == (8, 3)


def test_yopo_inner_steps_raise_the_loss_of_the_next_pass(monkeypatch):
    model = tiny_model()
    x, y = batch()
    losses, original = [], defenses.yopo.cross_entropy

    def recording(labels, logits):
        value = original(labels, logits)
        losses.append(float(value))
        return value

    monkeypatch.setattr(defenses.yopo, "cross_entropy", recording)
    step("yopo", model, x, y, outer_steps=3, inner_steps=5, eps=0.2, step_size=0.02)
    # Each pass sees the eta the previous one's inner steps moved up the loss.
    assert len(losses) == 3 and losses[0] < losses[1] < losses[2]


def test_yopo_with_no_inner_steps_sums_the_cross_entropy_gradients():
    model = tiny_model()
    x, y = batch()
    loss, _, grads = step("yopo", model, x, y, outer_steps=2, inner_steps=0, eps=0.0)
    # eps = 0: both passes see x itself, and the rest of the model gets twice the CE
    # gradient. The first layer gets that plus, per pass, the gradient of
    # -H = sum(first(x) * dL/dz), which by the chain rule is its CE gradient again (the
    # authors' CIFAR-10 code gives layer one both).
    with tf.GradientTape() as tape:
        ce = cross_entropy(y, model(x, training=True))
    expected = tape.gradient(ce, model.trainable_weights)
    first = {id(w) for w in model.get_layer("first").trainable_weights}
    for w, g, e in zip(model.trainable_weights, grads, expected):
        np.testing.assert_allclose(g, 4 * e if id(w) in first else 2 * e, rtol=1e-4,
                                   atol=1e-6)
    assert float(loss) == pytest.approx(float(ce), rel=1e-6)


def test_yopo_refuses_a_model_without_a_layer_one():
    inputs = keras.Input(SHAPE)
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(flat))
    with pytest.raises(TfnodeError, match="yopo needs a functional model"):
        defenses.split_first_layer(model)


# Small settings of each registered defense, for the tests that run every one.
SMALL = {"pgd_at": {"num_steps": 2}, "trades": {"num_steps": 2},
         "yopo": {"outer_steps": 2, "inner_steps": 2}, "fgsm_rs": {}, "ibp": {}}


def model_for(name, seed=0):
    """The tiny model, with ReLUs for a defense that needs interval bounds through it."""
    needs_bounds = defenses.get(name).model_check is not None
    return tiny_model(seed, activation="relu" if needs_bounds else "tanh")


def test_the_tests_know_every_registered_defense():
    assert set(SMALL) == set(defenses.available())


@pytest.mark.parametrize("name", defenses.available())
def test_every_defense_trains_inside_fit(name):
    model = model_for(name)
    options = defenses.get(name).options({**SMALL[name], "eps": 0.1})
    trainer = defenses.DefendedModel(model, name, options, seed=0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    x, y = batch(32, seed=1)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = trainer.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    assert all(np.isfinite(v) for v in history.history["loss"])
    assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def test_a_model_with_extra_losses_is_refused():
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(2, 3, kernel_regularizer="l2")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    with pytest.raises(TfnodeError, match="has extra losses"):
        defenses.DefendedModel(model, "pgd_at", defenses.get("pgd_at").options())


def test_eps_warmup_ramps_the_radius_linearly_over_optimizer_steps():
    seen = []
    spec = defenses.get("pgd_at")

    def recording(model, x, y, *, seed, eps, **options):
        seen.append(float(eps))
        return spec.fn(model, x, y, seed=seed, eps=eps, **options)

    options = spec.options({"num_steps": 1, "eps": 0.1, "eps_warmup": 4})
    trainer = defenses.DefendedModel(tiny_model(), "pgd_at", options, seed=0)
    trainer.spec = dataclasses.replace(spec, fn=recording)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    run_eagerly=True)
    x, y = batch(48, seed=2)
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert seen == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_warm_up_is_the_one_ramp_and_leaves_the_radius_alone_without_one():
    ramped = defenses.warm_up({"eps": 0.2, "eps_warmup": 4, "num_steps": 3}, 1)
    assert set(ramped) == {"eps", "num_steps"} and float(ramped["eps"]) == pytest.approx(0.1)
    assert float(defenses.warm_up({"eps": 0.2, "eps_warmup": 4}, tf.constant(9))["eps"]) \
        == pytest.approx(0.2)
    # Without a warmup the loss function gets the radius as given, a Python number.
    assert defenses.warm_up({"eps": 0.2, "eps_warmup": 0}, 5) == {"eps": 0.2}


def test_eps_warmup_is_an_option_of_every_defense_and_checked():
    for name in defenses.available():
        # IBP ramps by default (Gowal et al.: from eps 0 the bounds train; at full eps
        # from the start they do not).
        assert defenses.get(name).options()["eps_warmup"] == (2000 if name == "ibp" else 0)
    with pytest.raises(TfnodeError, match="eps_warmup.*an integer >= 0"):
        defenses.get("trades").options({"eps_warmup": -1})


def compile_sgd(model):
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("name", defenses.available())
def test_a_plain_loop_over_the_loss_function_trains_as_fit_does(name):
    """The loss function is all a training loop needs: a loop that differentiates it under
    its own tape and applies the gradient gives fit's weights, bit for bit (the eps ramp
    included: the loop hands it the optimizer's iteration count)."""
    spec = defenses.get(name)
    options = spec.options({**SMALL[name], "eps": 0.1, "eps_warmup": 2})
    x, y = batch(24, seed=1)
    fitted = model_for(name)
    compile_sgd(defenses.DefendedModel(fitted, name, options, seed=0)).fit(
        x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)

    looped = model_for(name)
    weights = looped.trainable_weights
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(weights)
    seed = keras.random.SeedGenerator(0)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss, _ = spec.loss(looped, xb, yb, optimizer.iterations, seed=seed, **options)
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))

    for start in range(0, 24, 8):
        train_step(x[start:start + 8], y[start:start + 8])
    assert int(optimizer.iterations.numpy()) == 3
    for trained, reference in zip(looped.weights, fitted.weights):
        np.testing.assert_array_equal(trained.numpy(), reference.numpy())


class Recorded(keras.layers.Layer):
    """Wraps the first layer and keeps the inputs it gets in training mode (eager)."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.seen = []

    def call(self, x, training=None):
        if training:
            self.seen.append(np.array(x))
        return self.inner(x)


# IBP trains on no perturbed input (its bounds cover the ball: tests/test_bounds.py).
@pytest.mark.parametrize("name", [n for n in defenses.available() if n != "ibp"])
def test_every_defense_trains_on_inputs_within_the_ramped_eps_and_the_image_range(name):
    """Every input the model sees in training mode (the adversarials the loss trains on,
    and PGD-AT's and YOPO's iterates) lies within eps of x and in [0, 1]; eps is the
    ramped one (0.2 at step 1 of a 4-step warm-up: 0.1)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    first = Recorded(keras.layers.Conv2D(4, 3, activation="tanh"), name="first")
    h = first(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    rng = np.random.default_rng(3)
    # Pixels at 0 and 1, so that the clip to the image range has work to do.
    x = tf.constant(rng.choice([0.0, 0.05, 0.5, 0.95, 1.0], (8,) + SHAPE), tf.float32)
    y = tf.constant(rng.integers(0, 3, 8), tf.int64)
    step = {"step_size": 0.05} if "step_size" in defenses.get(name).defaults else {}
    options = defenses.get(name).options({"eps": 0.2, "eps_warmup": 4, **step})
    defenses.get(name).loss(model, x, y, 1, seed=keras.random.SeedGenerator(0), **options)
    seen = list(first.seen)
    assert seen
    gaps = [np.abs(v - x.numpy()).max() for v in seen]
    assert max(gaps) <= 0.1 + 1e-6
    assert max(gaps) > 0.05  # the attack moved
    assert min(v.min() for v in seen) >= 0.0 and max(v.max() for v in seen) <= 1.0


def test_ibp_initialization_draws_shi_et_al_widths_and_tames_the_bounds():
    """Shi et al. 2021's initialization: every kernel but the classifier's drawn with
    standard deviation sqrt(2 pi) / fan_in (an independent draw from the same seed), the
    classifier and the biases untouched, the same weights from the same seed; and the
    logit bounds of a norm-free width-8 ResNet at eps 0.01 shrink from the ~1e6 wide
    boxes of Keras' initialization to order one (ratios of 6e5 to 3e6 over Keras seeds
    0-4, checked at 1e4)."""
    from tfnode import models

    spec = defenses.get("ibp")
    keras.utils.set_random_seed(0)
    net = models.get_model("resnet", dataset="mnist", norm="none", width=8, num_blocks=6)
    kernels = [w for w in net.weights if w.path.endswith("kernel")]
    before = [w.numpy() for w in net.weights]
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    box = bounds.logit_bounds(net, x, 0.01)
    wide = float(np.mean(box.hi - box.lo))
    spec.initialize(net, spec.options({"init": "model"}), seed=0)  # the model's own: kept
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, net.weights))
    spec.initialize(net, spec.options(), seed=0)
    rng = np.random.default_rng(0)  # an independent draw of the same sample
    for w in kernels[:-1]:
        sigma = np.sqrt(2 * np.pi) / int(np.prod(w.shape[:-1]))
        np.testing.assert_allclose(w.numpy(), rng.normal(0.0, sigma, tuple(w.shape)),
                                   rtol=1e-6, atol=0)
    np.testing.assert_array_equal(kernels[-1].numpy(), before[[w.path for w in net.weights]
                                                              .index(kernels[-1].path)])
    for w, a in zip(net.weights, before):
        if not w.path.endswith("kernel"):
            np.testing.assert_array_equal(w.numpy(), a)
    box = bounds.logit_bounds(net, x, 0.01)
    assert float(np.mean(box.hi - box.lo)) * 1e4 < wide
    again = [w.numpy() for w in net.weights]
    spec.initialize(net, spec.options(), seed=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(again, net.weights))


def test_ibp_mixes_natural_and_bound_losses_with_kappa_following_the_eps_ramp():
    model, (x, y) = model_for("ibp"), batch(8, seed=4)
    spec = defenses.get("ibp")
    natural = cross_entropy(y, model(x))
    # At eps 0 the worst-case logits are z - z_y, whose cross-entropy is the natural one
    # (softmax is shift-invariant): the loss is the natural loss whatever kappa.
    at_zero = spec.loss(model, x, y, 0, seed=None, **spec.options({"eps": 0.0}))[0]
    np.testing.assert_allclose(at_zero, natural, rtol=1e-5)
    # Step 1 of a 4-step ramp: eps 0.5 * 0.2, kappa 1 - 0.5 * (1 - 0.5) = 0.75.
    options = spec.options({"eps": 0.2, "eps_warmup": 4})
    loss, logits = spec.loss(model, x, y, 1, seed=None, **options)
    worst = bounds.worst_case_logits(model, x, y, 0.1)
    np.testing.assert_allclose(loss, 0.75 * natural + 0.25 * cross_entropy(y, worst),
                               rtol=1e-5)
    np.testing.assert_allclose(logits, model(x), rtol=1e-6)
    # The bound's loss is above the natural one (the ball holds x).
    assert float(cross_entropy(y, worst)) > float(natural)
