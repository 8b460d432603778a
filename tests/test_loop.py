"""The one training loop (`tfnode.training.loop`): under the default strategy it trains to
what Keras' fit trains, bit for bit, with the same logs and callbacks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnode import models
from tfnode.training import loop


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, n).astype("int64")
    return x, y


def _trainer(model_name, seed=3):
    keras.utils.set_random_seed(seed)
    model = models.get_model(model_name, dataset="mnist", **models.spec(model_name).test_options)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


class Seen(keras.callbacks.Callback):
    """Records the hooks called and the logs they got."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, round(float(logs["loss"]), 4)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))


@pytest.mark.parametrize("model_name", ["resnet", "node"])
def test_the_loop_trains_what_fit_trains_bit_for_bit(model_name):
    x, y = _data()
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    val = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(16)
    results = {}
    for how in ("fit", "loop"):
        trainer = _trainer(model_name)
        seen = Seen()
        if how == "fit":
            history = trainer.fit(train, epochs=2, steps_per_epoch=3, validation_data=val,
                                  callbacks=[seen], verbose=0, shuffle=False)
        else:
            history = loop.fit(trainer, train, strategy=tf.distribute.get_strategy(),
                               epochs=2, steps_per_epoch=3, validation_data=val,
                               callbacks=[seen], verbose=0)
        results[how] = ([w.numpy() for w in trainer.weights], history.history, seen.calls,
                        loop.evaluate(trainer, val, strategy=tf.distribute.get_strategy()),
                        trainer.evaluate(val, verbose=0, return_dict=True))
    (w_fit, h_fit, c_fit, e_fit, k_fit), (w_loop, h_loop, c_loop, e_loop, k_loop) = (
        results["fit"], results["loop"])
    assert len(w_fit) == len(w_loop)
    for a, b in zip(w_fit, w_loop):
        np.testing.assert_array_equal(a, b)
    assert h_fit == h_loop and c_fit == c_loop
    assert set(h_loop) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert e_loop == pytest.approx(k_loop, rel=1e-6) and k_fit == pytest.approx(k_loop)
