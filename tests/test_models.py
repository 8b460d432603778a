"""Model zoo: every registered model built tiny, trained a step and saved; the registry;
published sizes; a ``model.keras`` written earlier still loads to the same logits."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnode import models
from tfnode.errors import TfnodeError
from tfnode.exports import read, write

# Every registered model (not the aliases), each built with its registry entry's tiny
# test_options: a new model is picked up without editing this file.
NAMES = models.available()


@pytest.mark.parametrize("name", NAMES)
def test_every_model_trains_a_step_and_round_trips_through_model_keras(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = models.get_model(name, dataset="mnist", **models.spec(name).test_options)
    assert model.input_shape == (None, 28, 28, 1)
    # Tiny, so this test stays a few seconds per model: resnet50 at its published size
    # has 23.5M parameters.
    assert model.count_params() < 100_000, (
        f"{name}'s test_options build {model.count_params()} parameters: make them tiny")
    rng = np.random.default_rng(0)
    x = rng.random((4, 28, 28, 1)).astype("float32")
    y = np.arange(4) % 10
    logits = model(x)
    assert logits.shape == (4, 10) and np.all(np.isfinite(logits))

    # One training step, eager (tracing a training function would cost resnet50 seconds).
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    weights = model.trainable_weights
    grads = tape.gradient(loss, weights)
    assert np.isfinite(loss)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads), [
        w.path for w, g in zip(weights, grads) if g is None]
    keras.optimizers.SGD(0.1).apply(grads, weights)
    trained = model(x).numpy()
    assert not np.allclose(trained, logits)

    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    # The same weights and graph on the same machine: the same logits, up to rounding.
    np.testing.assert_allclose(loaded(x), trained, rtol=1e-6, atol=1e-6)


def test_registry_has_the_papers_models():
    assert {"node", "resnet", "resnet56", "resnet50", "preact_resnet18", "polynet", "heunnet",
            "fractal_rk2", "revnet"} <= set(NAMES)


def test_heun_is_the_old_name_of_heunnet():
    # ``heun`` names a solver too; the model was renamed, its old name still builds it.
    assert "heun" not in NAMES
    assert models.spec("heun") is models.spec("heunnet")
    assert models.model_options("heun") == models.model_options("heunnet")
    assert models.get_model("heun", dataset="mnist", width=4, num_blocks=1).name == "heunnet"
    # fractalnet was renamed for what it is (the identity join is not FractalNet's).
    assert "fractalnet" not in NAMES and models.spec("fractalnet") is models.spec("fractal_rk2")


def test_a_registry_entry_is_checked():
    def builder(*, input_shape, num_classes, width=8):
        raise AssertionError("not built")

    with pytest.raises(ValueError, match="test_options"):
        models.register("tiny_test_model", test_options=dict(depth=2))(builder)
    with pytest.raises(ValueError, match="'heun' is registered twice"):
        models.register("tiny_test_model", test_options={}, aliases=("heun",))(builder)
    assert "tiny_test_model" not in models.available()


@pytest.mark.parametrize("dataset,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_the_dataset_fixes_input_shape_and_classes(dataset, shape):
    model = models.get_model("resnet", dataset=dataset, width=4, num_blocks=1)
    assert model.input_shape == (None,) + shape
    x = np.random.default_rng(0).random((2,) + shape).astype("float32")
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name,params", [
    ("resnet56", 0.85e6), ("resnet50", 23.5e6), ("preact_resnet18", 11.17e6), ("node", 0.21e6)])
def test_published_sizes(name, params):
    model = models.get_model(name, dataset="cifar10")
    assert abs(model.count_params() - params) / params < 0.02, model.count_params()


def test_step_size_scales_the_residual_branch():
    x = np.random.default_rng(2).random((2, 28, 28, 1)).astype("float32")
    full = models.get_model("resnet", dataset="mnist", width=8, num_blocks=1, step_size=1.0)
    tiny = models.get_model("resnet", dataset="mnist", width=8, num_blocks=1, step_size=1e-10)
    skip = models.get_model("resnet", dataset="mnist", width=8, num_blocks=0)
    tiny.set_weights(full.get_weights())
    # With h -> 0 the block is the identity: same logits as no block at all.
    skip.set_weights([w for layer in full.layers if not layer.name.startswith("block")
                      for w in layer.get_weights()])
    np.testing.assert_allclose(tiny(x), skip(x), atol=1e-5)
    assert not np.allclose(full(x), skip(x), atol=1e-3)


NORMED = [n for n in NAMES if "norm" in models.model_options(n)]


@pytest.mark.parametrize("name", NORMED)
def test_norm_none_leaves_no_norm_in_the_model(name):
    from tfnode import layers

    options = models.spec(name).test_options
    grouped = models.get_model(name, dataset="mnist", **options)
    assert layers.sublayers(grouped, layers.GroupNorm)  # the default keeps Chen et al.'s
    model = models.get_model(name, dataset="mnist", norm="none", **options)
    assert not layers.sublayers(model, layers.GroupNorm)
    assert not layers.sublayers(model, keras.layers.GroupNormalization)
    with pytest.raises(TfnodeError, match=r"model_options.norm must be one of \['group', "
                                          r"'none'\], got 'batch'"):
        models.get_model(name, dataset="mnist", norm="batch", **options)


# The ODE function with time, and a scheme with two functions on split channels.
@pytest.mark.parametrize("name", ["node", "revnet"])
def test_norm_none_trains_and_round_trips_through_model_keras(name, tmp_path):
    from tfnode import layers

    keras.utils.set_random_seed(0)
    model = models.get_model(name, dataset="mnist", norm="none",
                             **models.spec(name).test_options)
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in grads)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert not layers.sublayers(loaded, layers.GroupNorm)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6, atol=1e-6)


def test_norm_none_is_refused_with_zero_init():
    with pytest.raises(TfnodeError, match="zero_init scales the last norm to 0"):
        models.get_model("node", dataset="mnist", norm="none", zero_init=True, width=4)


def test_unknown_model_and_option_are_one_line_errors():
    with pytest.raises(TfnodeError, match="unknown model 'resnet57'"):
        models.get_model("resnet57", dataset="mnist")
    with pytest.raises(TfnodeError, match="has no option 'rtol'"):
        models.get_model("resnet56", dataset="mnist", rtol=1e-3)
    with pytest.raises(TfnodeError, match="unknown dataset"):
        models.get_model("node", dataset="imagenet")
    with pytest.raises(TfnodeError, match="base_width must be a positive integer"):
        models.get_model("resnet50", dataset="mnist", base_width=0)


def test_with_solver_options_keeps_weights_and_changes_the_solver():
    keras.utils.set_random_seed(0)
    net = models.get_model("node", dataset="mnist", width=4)
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    tight = models.with_solver_options(net, rtol=1e-6, atol=1e-6)
    per_sample = models.with_solver_options(net, per_sample_steps=True)
    base = net(x).numpy()
    assert tight.get_layer("ode_block").rtol == 1e-6
    assert net.get_layer("ode_block").rtol == 1e-3  # the original is untouched
    np.testing.assert_allclose(tight(x), base, atol=5e-3)  # same weights, other tolerance
    np.testing.assert_allclose(per_sample(x[:1]), per_sample(x)[:1], atol=1e-5)
    assert tight.get_layer("ode_block").nfe > net.get_layer("ode_block").nfe
    assert models.with_solver_options(net) is net
    with pytest.raises(TfnodeError):
        models.with_solver_options(net, width=8)


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def test_a_stored_model_keras_still_loads_to_its_logits(tmp_path):
    """``tests/data/node_tiny.keras``, written by ``python tests/data/make_node_model.py``
    (a tiny ``node`` with rk4 steps of 0.5), loads through tfnode's reader, computes the
    logits stored beside it in ``node_tiny.npz``, and re-exports as a SavedModel that
    serves them too.

    The tolerance holds on any x86 CPU by construction: the model is a fixed sequence of
    float32 operations (a fixed-step solver takes no step that rounding could change;
    ReLU is continuous), each a sum of at most 65 terms (a 4x4 convolution over 4
    channels, plus its bias), so another CPU's kernels (AVX2 or AVX-512, FMA or not,
    oneDNN or Eigen, XLA or not) change each by at most a few dozen float32 ulps
    (6e-8 each). Perturbing every weight and pixel by 4 ulps moves these logits (of size
    below 1) by under 1e-6; 1e-4 is a hundred times more. The stored logits of different
    images differ by more than 10 times it, so the check is not vacuous.
    """
    stored = np.load(os.path.join(DATA, "node_tiny.npz"))
    images, logits = stored["images"], stored["logits"]
    tol = 1e-4 * max(1.0, float(np.abs(logits).max()))
    assert np.abs(logits - np.roll(logits, 1, axis=0)).max() > 10 * tol

    model, info = read.load_model(os.path.join(DATA, "node_tiny.keras"))
    assert info["format"] == "keras" and info["input_shape"] == (28, 28, 1)
    np.testing.assert_allclose(model(images), logits, rtol=0, atol=tol)

    version = write.export_trained(os.path.join(DATA, "node_tiny.keras"),
                                   export_dir=str(tmp_path), name="node_tiny")
    serve = tf.saved_model.load(version).signatures["serving_default"]
    np.testing.assert_allclose(serve(images=tf.constant(images))["logits"], logits, rtol=0,
                               atol=tol)


def test_the_fingerprint_names_the_weights_in_either_format(tmp_path):
    """sha256 over (the weight's own name, shape, float32 bytes) in ``model.weights``
    order, written out here independently: the ``.keras`` file and its bare SavedModel agree, and one ulp in
    one weight, or two weights in another order, give another fingerprint."""
    import hashlib
    import shutil

    model, info = read.load_model(os.path.join(DATA, "node_tiny.keras"))
    digest = hashlib.sha256()
    for w in model.weights:
        value = np.asarray(w.numpy(), "<f4")
        digest.update(w.name.encode() + b"\0" + repr(value.shape).encode() + b"\0"
                      + value.tobytes())
    assert info["fingerprint"] == digest.hexdigest()[:12]

    version = write.export_trained(os.path.join(DATA, "node_tiny.keras"),
                                   export_dir=str(tmp_path), name="node_tiny")
    bare = str(tmp_path / "bare")
    shutil.copytree(version, bare, ignore=shutil.ignore_patterns("model.keras"))
    _, bare_info = read.load_model(bare)
    assert bare_info["format"] == "saved_model"
    assert bare_info["fingerprint"] == info["fingerprint"]

    weights = read.weights_of(model)
    name, value = weights[0]
    nudged = np.nextafter(value.ravel()[0], np.float32(np.inf), dtype=np.float32)
    changed = value.copy()
    changed.ravel()[0] = nudged
    assert read.fingerprint([(name, changed)] + weights[1:]) != info["fingerprint"]
    assert read.fingerprint([weights[1], weights[0]] + weights[2:]) != info["fingerprint"]
