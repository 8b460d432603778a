"""`run_layer_test`: the checks every tfnode layer must pass (keras-hub style)."""

import tempfile

import keras
import numpy as np
import tensorflow as tf


def run_layer_test(layer_fn, input_shape, *, expected_output_shape=None, train=True):
    """Checks config round trip, output shape, one training step, and save/load.

    Args:
      layer_fn: zero-argument callable returning a fresh layer.
      input_shape: input shape without the batch dimension.
      expected_output_shape: output shape without batch; default: the input shape.
      train: also run one optimizer step and check that every weight got a gradient.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3,) + tuple(input_shape)).astype("float32")
    layer = layer_fn()
    y = layer(x)
    expected = (3,) + tuple(expected_output_shape or input_shape)
    assert tuple(y.shape) == expected, (y.shape, expected)
    assert tuple(layer.compute_output_shape((3,) + tuple(input_shape))) == expected

    # Config round trip: same config, and the same function once the weights are copied.
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), y, rtol=1e-5, atol=1e-5)

    # Save / load inside a model: identical outputs.
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer(inputs))
    with tempfile.TemporaryDirectory() as tmp:
        model.save(f"{tmp}/m.keras")
        loaded = keras.models.load_model(f"{tmp}/m.keras")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)

    if train and layer.trainable_weights:
        before = [w.numpy().copy() for w in layer.trainable_weights]
        opt = keras.optimizers.SGD(0.1)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x)))
        grads = tape.gradient(loss, layer.trainable_weights)
        assert all(g is not None for g in grads), "a weight got no gradient"
        assert all(np.all(np.isfinite(g)) for g in grads)
        opt.apply_gradients(zip(grads, layer.trainable_weights))
        changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, layer.trainable_weights)]
        assert any(changed), "one training step changed no weight"
    return layer
