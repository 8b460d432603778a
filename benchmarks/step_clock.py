"""A Keras callback that times each training step (the benchmarks' child processes)."""

import time

import keras


class StepClock(keras.callbacks.Callback):
    """Appends each training step's wall seconds to ``times``."""

    def __init__(self, times=None):
        super().__init__()
        self.times = [] if times is None else times

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)
