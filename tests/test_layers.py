"""Layers against truth: analytic ODE solutions, solver orders, finite differences."""

import contextlib

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from tests.layer_test_util import registered_layers, run_tiny_config, tiny_configs
from tfnode import layers
from tfnode.errors import TfnodeError

# A damped rotation: y(t) = expm(A t) y0, stiff enough that solver errors are visible.
A = np.array([[-0.1, 3.0], [-3.0, -0.1]])
Y0 = np.array([[1.0, 0.5], [-0.3, 2.0]])


@keras.saving.register_keras_serializable(package="tfnode_tests")
class LinearODE(keras.layers.Layer):
    """dy/dt = y @ A^T with a trainable A (initialised to the test matrix)."""

    def build(self, t_shape=None, y_shape=None):
        self.a = self.add_weight(shape=(2, 2), name="a",
                                 initializer=keras.initializers.Constant(A))

    def call(self, t, y):
        return tf.matmul(y, self.a, transpose_b=True)


def exact(t1=1.0, y0=Y0, a=A):
    return y0 @ scipy.linalg.expm(a * t1).T


# The three ways to run dopri5: TFP's (adjoint), tfnode's loop, tfnode's per-sample loop.
DOPRI5 = {"adjoint": dict(gradient="adjoint"), "backprop": dict(gradient="backprop"),
          "per_sample": dict(gradient="backprop", per_sample_steps=True)}


def solve_block(**options):
    block = layers.ODEBlock(LinearODE(), **options)
    return block, block(tf.constant(Y0, tf.float32)).numpy()


@pytest.mark.parametrize("xla", [True, False], ids=["xla", "no_xla"])
@pytest.mark.parametrize("way", DOPRI5)
def test_dopri5_matches_expm_at_tight_tolerance(way, xla):
    # tfnode's loops run each step XLA-compiled unless inside no_xla: both are checked.
    with contextlib.nullcontext() if xla else layers.no_xla():
        block, y = solve_block(rtol=1e-7, atol=1e-7, **DOPRI5[way])
    np.testing.assert_allclose(y, exact(), atol=2e-5)
    assert block.nfe > 20


@pytest.mark.parametrize("way", DOPRI5)
def test_nfe_grows_as_tolerance_tightens(way):
    nfes = [solve_block(rtol=tol, atol=tol, **DOPRI5[way])[0].nfe
            for tol in (1e-2, 1e-4, 1e-6)]
    assert nfes[0] < nfes[1] < nfes[2], nfes


def test_backprop_dopri5_agrees_with_tfp():
    _, y_tfp = solve_block(rtol=1e-5, atol=1e-5, gradient="adjoint")
    _, y_own = solve_block(rtol=1e-5, atol=1e-5, gradient="backprop")
    np.testing.assert_allclose(y_own, y_tfp, atol=1e-4)


class CubicInTime(keras.layers.Layer):
    """dy/dt = 3 t^2: RK4 (Simpson's rule here) is exact, so y(1) = y(0) + 1 iff the
    steps cover [0, 1] exactly."""

    def call(self, t, y):
        return 3.0 * t * t * tf.ones_like(y)


@pytest.mark.parametrize("h,steps", [(0.3, 4), (0.03, 34), (0.25, 4)])
def test_fixed_steps_land_exactly_on_t1(h, steps):
    # 0.3: three steps and a short one of 0.1 (unrolled); 0.03: 33 steps and one of 0.01,
    # through the tf.while_loop path; 0.25: four equal steps.
    block = layers.ODEBlock(CubicInTime(), solver="rk4", step_size=h)
    y0 = np.array([[0.5, -1.0]], "float32")
    np.testing.assert_allclose(block(y0), y0 + 1.0, atol=2e-6)
    assert block.nfe == 4 * steps


@tf.function  # traced once per block; A is a variable, so bumps to it are seen
def _loss_and_grad(block, y0):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(block(y0) * tf.constant([[1.0, -2.0], [0.5, 1.0]]))
    return loss, tape.gradient(loss, block.trainable_weights[0])


@pytest.mark.parametrize("way", DOPRI5)
def test_gradients_match_finite_differences(way):
    block = layers.ODEBlock(LinearODE(), rtol=1e-7, atol=1e-7, **DOPRI5[way])
    y0 = tf.constant(Y0, tf.float32)
    block(y0)  # build eagerly: the weights must exist before the tf.function traces
    _, grad = _loss_and_grad(block, y0)
    a = block.trainable_weights[0]
    fd = np.zeros((2, 2))
    eps = 1e-2
    for i in range(2):
        for j in range(2):
            for sign in (1, -1):
                bumped = A.copy()
                bumped[i, j] += sign * eps
                a.assign(bumped)
                fd[i, j] += sign * float(_loss_and_grad(block, y0)[0]) / (2 * eps)
            a.assign(A)
    np.testing.assert_allclose(grad.numpy(), fd, rtol=2e-3, atol=2e-3)


def test_first_step_size_is_set_deliberately():
    # Hairer's rule (default) beats TFP's fixed 1e-3 first step on this problem.
    auto, _ = solve_block(rtol=1e-3, atol=1e-3, gradient="adjoint")
    fixed, _ = solve_block(rtol=1e-3, atol=1e-3, gradient="adjoint", first_step_size=1e-3)
    assert auto.nfe < fixed.nfe, (auto.nfe, fixed.nfe)


@pytest.mark.parametrize("options", [
    dict(solver="rk45"), dict(rtol=0.0), dict(atol=-1e-3), dict(solver="euler"),
    dict(solver="rk4", step_size=-0.1), dict(t1=0.0), dict(gradient="exact"),
    dict(solver="euler", step_size=0.1, gradient="adjoint"),
    dict(solver="euler", step_size=1e-4, max_num_steps=100),
    dict(per_sample_steps=True), dict(per_sample_steps=True, gradient="adjoint"),
])
def test_bad_solver_options_are_one_line_errors(options):
    with pytest.raises(TfnodeError) as err:
        layers.ODEBlock(LinearODE(), **options)
    assert "\n" not in str(err.value)


def test_max_num_steps_is_enforced():
    block = layers.ODEBlock(LinearODE(), rtol=1e-7, atol=1e-7, gradient="backprop",
                            max_num_steps=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_num_steps"):
        block(tf.constant(Y0, tf.float32))


@pytest.mark.parametrize("per_sample", [False, True])
def test_unfinished_solve_is_nan_under_xla_which_drops_the_assertion(per_sample):
    block = layers.ODEBlock(LinearODE(), rtol=1e-7, atol=1e-7, gradient="backprop",
                            max_num_steps=3, per_sample_steps=per_sample)
    y0 = tf.constant(np.stack([Y0, Y0]) if per_sample else Y0, tf.float32)
    assert np.isnan(tf.function(block, jit_compile=True)(y0).numpy()).all()
    finished = layers.ODEBlock(LinearODE(), rtol=1e-3, atol=1e-3, gradient="backprop",
                               per_sample_steps=per_sample)
    assert np.isfinite(tf.function(finished, jit_compile=True)(y0).numpy()).all()


def test_group_norm_equals_keras_group_normalization():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 5, 5, 16)).astype("float32")
    ours, ref = layers.GroupNorm(4), keras.layers.GroupNormalization(4, epsilon=1e-5)
    ours.build(x.shape)
    ref.build(x.shape)
    weights = [np.linspace(0.5, 2, 16, dtype="float32"), np.linspace(-1, 1, 16, dtype="float32")]
    ours.set_weights(weights)
    ref.set_weights(weights)
    np.testing.assert_allclose(ours(x), ref(x), atol=1e-5)


def test_group_norm_xla_path_equals_plain_path_in_values_and_gradients():
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (3, 6, 6, 8)).astype("float32"))
    norm = layers.GroupNorm(4)
    norm.build(x.shape)
    norm.set_weights([np.linspace(0.5, 2, 8, dtype="float32"),
                      np.linspace(-1, 1, 8, dtype="float32")])
    weights = tf.constant(np.random.default_rng(2).normal(size=x.shape).astype("float32"))

    def value_and_grads():
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = norm(x)
            loss = tf.reduce_sum(out * weights)
        return [out] + tape.gradient(loss, [x, norm.gamma, norm.beta])

    fast = value_and_grads()
    with layers.no_xla():
        plain = value_and_grads()
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(fast[1])) > 1e-3  # a real gradient was compared


@pytest.mark.parametrize("strides, padding, per_sample", [
    (1, "same", False), (2, "same", False), (1, "valid", True)])
def test_concat_conv_folded_time_equals_explicit_concat(strides, padding, per_sample):
    """The time channel folded into a bias map computes conv(concat([t, y])) exactly."""
    rng = np.random.default_rng(0)
    y = tf.constant(rng.normal(size=(3, 7, 7, 5)).astype("float32"))
    t = tf.constant([0.1, 0.5, 0.9] if per_sample else 0.7, tf.float32)
    conv = layers.ConcatConv2D(4, strides=strides, padding=padding)
    conv.build(y_shape=y.shape)
    conv.conv.bias.assign(rng.normal(size=4).astype("float32"))

    def value_and_grads(explicit):
        with tf.GradientTape() as tape:
            tape.watch([y, t])
            if explicit:  # Chen et al.'s formulation, through the inner Keras Conv2D
                tt = tf.ones_like(y[..., :1]) * tf.reshape(t, [-1, 1, 1, 1] if per_sample else [])
                out = conv.conv(tf.concat([tt, y], axis=-1))
            else:
                out = conv(t=t, y=y)
            loss = tf.reduce_sum(tf.sin(out))
        return [out] + tape.gradient(loss, [y, t, conv.conv.kernel, conv.conv.bias])

    for a, b in zip(value_and_grads(False), value_and_grads(True)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_concat_conv_sees_time():
    conv = layers.ConcatConv2D(4)
    y = np.zeros((1, 5, 5, 3), "float32")
    assert not np.allclose(conv(t=tf.constant(0.0), y=y), conv(t=tf.constant(1.0), y=y))


def test_residual_block_is_one_euler_step():
    fn = layers.ODEFunc(8, time_dependent=False)
    block = layers.ResidualBlock(fn, step_size=0.1)
    ode = layers.ODEBlock(fn, solver="euler", step_size=0.1, t1=0.1)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")
    np.testing.assert_allclose(block(x), ode(x), atol=1e-6)
    np.testing.assert_allclose(block(x), x + 0.1 * fn(t=0.0, y=x), atol=1e-6)


# Every layer registered under the "tfnode" package, with each of its tiny configs: a
# new layer is picked up from Keras' registry, and fails here until it states its own.
LAYERS = registered_layers()
CASES = [pytest.param(cls, config, id="-".join(filter(None, (cls.__name__,
                                                            getattr(config, "label", "")))))
         for cls in LAYERS.values() for config in tiny_configs(cls) or (None,)]


def test_the_registry_holds_every_layer_and_only_layers():
    assert {"tfnode>ODEBlock", "tfnode>ODEFunc", "tfnode>GroupNorm"} <= set(LAYERS)
    assert "tfnode>SolveMetric" not in LAYERS  # a metric, registered beside them
    # Each public layer class is registered, or is the base of a registered one.
    public = [getattr(layers, n) for n in layers.__all__]
    for cls in public:
        if isinstance(cls, type) and issubclass(cls, keras.layers.Layer):
            assert cls in LAYERS.values() or any(
                issubclass(sub, cls) for sub in LAYERS.values()), cls.__name__


@pytest.mark.parametrize("cls,config", CASES)
def test_layer_contract(cls, config):
    assert config is not None, (
        f"{cls.__name__} is a registered tfnode layer without TINY_CONFIGS of its own: "
        "give it a class attribute TINY_CONFIGS = (tfnode.layers.TinyConfig(...),)")
    run_tiny_config(cls, config)


def _tiny_model(**block_options):
    inputs = keras.Input((4, 4, 8))
    x = layers.ODEBlock(layers.ODEFunc(8), **block_options)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_nfe_is_a_keras_metric_in_fit_and_evaluate():
    xs = np.random.default_rng(0).normal(size=(8, 4, 4, 8)).astype("float32")
    ys = np.arange(8) % 3
    # Euler with h = 0.25 makes exactly 4 evaluations per call: the metric must say 4.
    model = _tiny_model(solver="euler", step_size=0.25)
    assert model.fit(xs, ys, batch_size=4, epochs=1, verbose=0).history["nfe"] == [4.0]
    assert model.evaluate(xs, ys, batch_size=4, verbose=0, return_dict=True)["nfe"] == 4.0
    assert model.get_layer("ode_block").nfe == 4
    # dopri5: the metric is the mean of the per-call counts, each 2 + 6 k.
    model = _tiny_model(gradient="backprop")
    block = model.get_layer("ode_block")
    counts = []
    for i in (0, 4):
        model(xs[i:i + 4])
        counts.append(block.nfe)
    assert all(c >= 8 and (c - 2) % 6 == 0 for c in counts), counts
    result = model.evaluate(xs, ys, batch_size=4, verbose=0, return_dict=True)
    assert result["nfe"] == pytest.approx(np.mean(counts))


def test_per_sample_steps_make_a_sample_independent_of_its_batch():
    keras.utils.set_random_seed(0)
    func = layers.ODEFunc(4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5, 5, 4)).astype("float32")
    x[3:] *= 20.0  # batch-mates whose error is measured on another scale
    # Loose tolerances make the solver's error, and so a change of steps, visible.
    options = dict(gradient="backprop", rtol=1e-2, atol=1e-2)
    per_sample = layers.ODEBlock(func, per_sample_steps=True, **options)
    shared = layers.ODEBlock(func, name="shared", **options)

    def alone_and_batched(block):
        alone = np.concatenate([block(x[i:i + 1]).numpy() for i in range(3)])
        return alone, block(x).numpy()[:3]

    alone, batched = alone_and_batched(per_sample)
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0)
    # A batch of one is the same method with either controller ...
    shared_alone, shared_batched = alone_and_batched(shared)
    np.testing.assert_allclose(alone, shared_alone, atol=1e-5, rtol=0)
    # ... while the shared RMS norm lets the fast samples change the slow ones' steps.
    assert np.max(np.abs(shared_batched - shared_alone)) > 1e-4


def test_xla_forward_equals_plain_forward_and_traces_once_per_shape():
    from tfnode import attacks

    model = _tiny_model(gradient="backprop", per_sample_steps=True)
    xs = np.random.default_rng(3).normal(size=(10, 4, 4, 8)).astype("float32")
    fast, plain = attacks.forward_fn(model), attacks.logits_fn(model)
    for batch in (xs[:4], xs[4:8], xs[8:]):
        np.testing.assert_allclose(fast(tf.constant(batch)), plain(tf.constant(batch)),
                                   rtol=1e-5, atol=1e-5)
    # Two batches of 4 and one of 2: the second batch reuses the first trace, and the
    # smaller one relaxes the batch dimension instead of tracing per size from then on.
    assert fast.experimental_get_tracing_count() <= 2
    assert plain.experimental_get_tracing_count() <= 2
    fast(tf.constant(xs[:3]))
    assert fast.experimental_get_tracing_count() <= 2


@pytest.mark.parametrize("per_sample", [False, True])
def test_xla_compiled_dopri5_step_equals_plain_step(per_sample):
    from tfnode.ode import xla

    model = _tiny_model(gradient="backprop", per_sample_steps=per_sample, rtol=1e-4,
                        atol=1e-4)
    block = model.layers[1]
    x = tf.constant(np.random.default_rng(4).normal(size=(5, 4, 4, 8)).astype("float32"))
    y = tf.constant([0, 1, 2, 0, 1])

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return [logits] + tape.gradient(loss, [x] + model.trainable_variables)

    def compiled_calls(fn):
        graph = fn.get_concrete_function(x).graph.as_graph_def()
        nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
        return sum("_XlaMustCompile" in n.attr and n.attr["_XlaMustCompile"].b
                   for n in nodes)

    fast = run(x)
    fast_nfe = block.nfe
    plain_run = tf.function(run.python_function)  # a new trace, without XLA
    with layers.no_xla():
        plain = plain_run(x)
        assert compiled_calls(plain_run) == 0
    assert compiled_calls(run) > 0
    assert any(xla._JIT_STEPS.get(c) for c in block._odefunc_callers.values())
    assert block.nfe == fast_nfe  # the same steps
    names = ["logits", "d/dx"] + [v.path for v in model.trainable_variables]
    for name, a, b in zip(names, fast, plain):
        # A bias before a GroupNorm has a zero gradient: rounding noise on both sides.
        scale = max(float(tf.reduce_max(tf.abs(b))), 1e-3)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * scale, err_msg=name)
    assert np.max(np.abs(fast[1])) > 1e-3  # a real gradient was compared


class ModeODE(keras.layers.Layer):
    """dy/dt = -y in inference, -2y in training: reads Keras' training mode."""

    def call(self, t, y, training=None):
        return -2.0 * y if training else -y


def test_compiled_step_follows_the_training_mode():
    # The compiled step is reused across graphs; the training mode the ODE function
    # inherits must not be frozen in whichever graph traced it first.
    y0 = tf.ones((2, 3))
    for order in ((True, False), (False, True)):
        block = layers.ODEBlock(ModeODE(), gradient="backprop", rtol=1e-6, atol=1e-6)
        for training in order:
            out = tf.function(lambda y, training=training: block(y, training=training))(y0)
            rate = 2.0 if training else 1.0
            np.testing.assert_allclose(out, np.exp(-rate) * np.ones((2, 3)), rtol=1e-4)


def test_compiled_step_is_cached_per_tolerance_and_step_control():
    # One ODE function, several solves: each (rtol, atol, per-sample) gets its own
    # compiled step, so each takes the steps the uncompiled loop takes.
    from tfnode import ode
    from tfnode.ode import xla

    func = LinearODE()
    y0 = tf.constant(Y0, tf.float32)
    func(tf.constant(0.0), y0)  # build
    for tol, per_sample in ((1e-2, False), (1e-6, False), (1e-2, True), (1e-2, False)):
        results = [ode.solve(func, y0, rtol=tol, atol=tol, gradient="backprop",
                             per_sample_steps=per_sample, jit_step=jit)
                   for jit in (True, False)]
        (y_jit, stats_jit), (y_plain, stats_plain) = results
        assert int(stats_jit.nfe) == int(stats_plain.nfe), (tol, per_sample)
        np.testing.assert_allclose(y_jit, y_plain, rtol=1e-5, atol=1e-6)
    assert len(xla._JIT_STEPS[func]) == 3
    # An unknown batch size (a relaxed graph) runs the plain step: no compile per size.
    relaxed = LinearODE()
    relaxed(tf.constant(0.0), y0)
    tf.function(lambda y: ode.solve(relaxed, y, gradient="backprop", jit_step=True)[0],
                input_signature=[tf.TensorSpec([None, 2], tf.float32)]).get_concrete_function()
    assert relaxed not in xla._JIT_STEPS


def test_compiled_steps_do_not_keep_a_model_alive():
    import gc
    import weakref

    from tfnode.ode import xla

    model = _tiny_model(gradient="backprop")
    model(tf.ones((2, 4, 4, 8)))
    func = weakref.ref(model.layers[1].odefunc)
    callers = list(model.layers[1]._odefunc_callers.values())
    assert callers and all(c in xla._JIT_STEPS for c in callers)
    del model, callers
    gc.collect()
    assert func() is None


@keras.saving.register_keras_serializable(package="tfnode_test")
class CountingODEFunc(layers.ODEFunc):
    """An ODEFunc that counts its Python calls: inside tf.function, one per trace."""

    calls = 0

    def call(self, t, y):
        type(self).calls += 1
        return super().call(t, y)


def test_training_does_not_retrace_between_batches_or_epochs():
    inputs = keras.Input((4, 4, 8))
    x = layers.ODEBlock(CountingODEFunc(8), gradient="backprop")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    xs = np.random.default_rng(0).normal(size=(12, 4, 4, 8)).astype("float32")
    ys = np.arange(12) % 3
    seen = []
    callback = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(CountingODEFunc.calls))
    model.fit(xs, ys, batch_size=4, epochs=3, verbose=0, callbacks=[callback])
    # Epoch 1 traced the step (a few calls of the function per trace); epochs 2 and 3,
    # three batches each, ran the traced graph without a single new Python call.
    assert seen[0] > 0 and seen[0] == seen[1] == seen[2], seen


def test_sublayers_walks_nested_models_and_filters_by_kind():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="inner_dense")],
                             name="inner")
    outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(2, name="head")])
    names = {layer.name for layer in layers.sublayers(outer)
             if not isinstance(layer, keras.layers.InputLayer)}
    assert names == {"inner", "inner_dense", "head"}  # the model itself left out
    dense = layers.sublayers(outer, keras.layers.Dense)
    assert sorted(layer.name for layer in dense) == ["head", "inner_dense"]
    assert layers.sublayers(object()) == []  # not a Keras layer: nothing to walk


def test_the_ode_block_takes_every_option_of_a_solve():
    import inspect

    from tfnode import models, ode

    # ode.OPTIONS (read off ode.validate) names the block's recorded fields and the
    # solver options a trained model can be re-solved with: the block must take each.
    taken = inspect.signature(layers.ODEBlock.__init__).parameters
    assert set(ode.OPTIONS) <= set(taken) and "t1" in ode.OPTIONS
    assert set(models.SOLVER_OPTIONS) == set(ode.OPTIONS) - {"t1"}


@pytest.mark.parametrize("time_dependent", [True, False], ids=["time", "no_time"])
def test_spectral_option_drives_each_kernels_top_singular_value_to_one(time_dependent):
    """Keras' SpectralNormalization in the ODE function: each training call divides a
    kernel (reshaped to [k*k*C_in, C_out]) by its power-iteration estimate of the top
    singular value. With kernels of a known spectrum (3, 1, 0.5, 0.2: a gap that power
    iteration closes fast) the true top singular value is 1 after a few calls, and
    inference calls change nothing."""
    fn = layers.ODEFunc(4, time_dependent=time_dependent, norm="none", lipschitz="spectral")
    y = tf.random.stateless_uniform((2, 5, 5, 4), (0, 1))
    fn(t=0.0, y=y)
    wrappers = layers.sublayers(fn, keras.layers.SpectralNormalization)
    assert len(wrappers) == 2
    rng = np.random.default_rng(0)
    for w in wrappers:
        rows = int(np.prod(w.kernel.shape[:-1]))
        u, _ = np.linalg.qr(rng.normal(size=(rows, 4)))
        v, _ = np.linalg.qr(rng.normal(size=(4, 4)))
        w.kernel.assign(np.reshape(u @ np.diag([3.0, 1.0, 0.5, 0.2]) @ v.T, w.kernel.shape))
    frozen = [w.kernel.numpy().copy() for w in wrappers]
    fn(t=0.0, y=y, training=False)
    assert all(np.array_equal(f, w.kernel.numpy()) for f, w in zip(frozen, wrappers))
    for _ in range(20):
        fn(t=0.0, y=y, training=True)
    for w in wrappers:
        top = np.linalg.svd(np.reshape(w.kernel.numpy(), (-1, 4)), compute_uv=False)[0]
        assert top == pytest.approx(1.0, abs=1e-4)
