"""`run_layer_test`: the checks every tfnode layer must pass (keras-hub style), and the
registry they run over (`registered_layers`, each layer's `tfnode.layers.TinyConfig` s)."""

import tempfile

import keras
import numpy as np
import tensorflow as tf


def run_layer_test(layer_fn, input_shape, *, expected_output_shape=None, train=True,
                   time_input=False):
    """Checks config round trip, output shape, one training step, and save/load.

    Args:
      layer_fn: zero-argument callable returning a fresh layer.
      input_shape: input shape without the batch dimension.
      expected_output_shape: output shape without batch; default: the input shape.
      train: also run one optimizer step and check that every weight changed.
      time_input: the layer is an ODE function, called as ``layer(t=0.5, y=x)``.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3,) + tuple(input_shape)).astype("float32")
    layer = layer_fn()

    def call(lay, inputs):
        return lay(t=0.5, y=inputs) if time_input else lay(inputs)

    y = call(layer, x)
    expected = (3,) + tuple(expected_output_shape or input_shape)
    assert tuple(y.shape) == expected, (y.shape, expected)
    shape = (3,) + tuple(input_shape)
    computed = layer.compute_output_shape(y_shape=shape) if time_input else (
        layer.compute_output_shape(shape))
    assert tuple(computed) == expected

    # Config round trip: same config, and the same function once the weights are copied.
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    call(clone, x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(call(clone, x), y, rtol=1e-5, atol=1e-5)

    # Save / load inside a model: identical outputs.
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, call(layer, inputs))
    with tempfile.TemporaryDirectory() as tmp:
        model.save(f"{tmp}/m.keras")
        loaded = keras.models.load_model(f"{tmp}/m.keras")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)

    if train and layer.trainable_weights:
        before = [w.numpy().copy() for w in layer.trainable_weights]
        opt = keras.optimizers.SGD(0.1)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(call(layer, x)))
        grads = tape.gradient(loss, layer.trainable_weights)
        names = [w.path for w in layer.trainable_weights]
        assert all(g is not None for g in grads), f"no gradient for some of {names}"
        assert all(np.all(np.isfinite(g)) for g in grads)
        opt.apply_gradients(zip(grads, layer.trainable_weights))
        unchanged = [n for n, b, w in zip(names, before, layer.trainable_weights)
                     if np.array_equal(b, w.numpy())]
        assert not unchanged, f"one training step left {unchanged} unchanged"
    return layer


def registered_layers(package="tfnode"):
    """``{registered name: class}`` of the Keras layers registered under ``package``
    (``keras.saving.register_keras_serializable(package=...)``), in registration order.

    A class registered under a second, older name as well (kept so that old files load)
    is listed once, under its first. Only imported modules have registered theirs:
    import ``tfnode.layers`` first.
    """
    found = {}
    for name, obj in keras.saving.get_custom_objects().items():
        if (name.partition(">")[0] == package and isinstance(obj, type)
                and issubclass(obj, keras.layers.Layer) and obj not in found.values()):
            found[name] = obj
    return found


def tiny_configs(cls):
    """The `tfnode.layers.TinyConfig` s that ``cls`` itself states (a subclass does not
    inherit its parent's: they would test the parent's behaviour under its name)."""
    return vars(cls).get("TINY_CONFIGS", ())


def run_tiny_config(cls, config):
    """`run_layer_test` on ``config.make(cls)``, with the config's shapes."""
    return run_layer_test(lambda: config.make(cls), config.input_shape,
                          expected_output_shape=config.output_shape,
                          time_input=config.time_input)
