"""One training loop for every `tf.distribute` strategy (issue 28).

Keras 3's ``fit`` does not run under ``MultiWorkerMirroredStrategy``: it builds its state
by reducing a pulled batch across replicas and reduces each step's scalar logs along axis
0 (keras-team/keras#20585). `fit` and `evaluate` here are the same loop without either
reduction: each step is ``strategy.run(trainer.train_step)`` (Keras' own train step, or a
defense's, `tfnode.training.defenses.DefendedModel`), and the logs are the trainer's
metrics read in cross-replica context, where a metric's replicas are summed by its
variables' own aggregation. The callbacks are Keras' (`keras.callbacks.CallbackList`,
called at the points ``fit`` calls them), so the progress bar, TensorBoard, the resume
state (`tfnode.training.resume.Checkpointer`) and a user's callbacks work unchanged.

Under the default strategy a step is compiled as ``fit`` compiles it (XLA where Keras
would use it: ``trainer.jit_compile``), and the loop trains to the same weights as
``fit`` bit for bit (tests/test_loop.py). Under another strategy the step is a plain
``tf.function``: XLA does not compile the collective all-reduce of the gradients.
"""

import keras
import tensorflow as tf


def _distribute(strategy, dataset):
    """``dataset`` split over the strategy's replicas and workers.

    Across workers the data is sharded by element (``AutoShardPolicy.DATA``): an
    in-memory dataset has no files to shard (``FILE`` fails on it) and ``OFF`` would give
    every worker the same batches.
    """
    if _is_default(strategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _is_default(strategy):
    return strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()


def _logs(trainer):
    """The trainer's metric results, flattened as Keras' ``get_metrics_result`` does (the
    compiled metrics' container gives a dict); in cross-replica context, replicas summed."""
    out = {}
    for metric in trainer.metrics:
        result = metric.result()
        out.update(result if isinstance(result, dict) else {metric.name: result})
    return out


def _step_function(trainer, strategy, step):
    """``(on batch, on iterator)``: one step of ``step`` (``trainer.train_step`` or
    ``test_step``) on a batch, or on the next batch of a (distributed) iterator; each
    returns the logs after it.

    Built as Keras' ``make_train_function`` builds it (an outer function that takes the
    batch from the iterator, an inner one for the step), so that under the default
    strategy the graph, and so every rounding, is fit's.
    """
    if _is_default(strategy):
        def one_step(data):  # the step's own logs: its metrics' results, as in fit
            return strategy.run(step, args=(data,))
        jit = trainer.jit_compile
    else:
        def one_step(data):  # no reduction of per-replica logs: read the metrics
            strategy.run(step, args=(data,))
            return _logs(trainer)
        jit = False
    one_step = tf.function(one_step, reduce_retracing=True, jit_compile=jit)

    def on_iterator(iterator):
        return one_step(iterator.get_next())
    return one_step, tf.function(on_iterator, reduce_retracing=True)


def train_step_function(trainer, strategy):
    """The step `fit` runs on each batch: ``step(batch)`` trains on one global batch and
    returns the logs after it (for benchmarks that time the loop's step alone)."""
    step, _ = _step_function(trainer, strategy, trainer.train_step)
    return step


def _floats(logs):
    return {k: float(v) for k, v in logs.items()}


def evaluate(trainer, dataset, *, strategy, callbacks=None):
    """The trainer's loss and metrics on every batch of ``dataset``, as ``evaluate``
    returns them with ``return_dict=True``.

    Every worker must iterate alike: the distributed dataset ends on all workers at once.
    """
    step, _ = _step_function(trainer, strategy, trainer.test_step)
    trainer.reset_metrics()
    if callbacks is not None:
        callbacks.on_test_begin()
    logs = {}
    # Python iteration ends a distributed dataset on every worker at once (a worker whose
    # shard is shorter gets an empty batch).
    for i, data in enumerate(_distribute(strategy, dataset)):
        if callbacks is not None:
            callbacks.on_test_batch_begin(i)
        logs = step(data)
        if callbacks is not None:
            callbacks.on_test_batch_end(i, logs)
    logs = _floats(logs) if logs else _floats(_logs(trainer))
    if callbacks is not None:
        callbacks.on_test_end(logs)
    return logs


def fit(trainer, dataset, *, strategy, epochs, steps_per_epoch, initial_epoch=0,
        validation_data=None, callbacks=(), verbose=1):
    """Trains ``trainer`` on ``dataset`` as Keras' ``fit`` does with these arguments.

    Args:
      trainer: a compiled Keras model (its optimizer, loss and metrics), built.
      dataset: an endless `tf.data.Dataset` of ``(x, y)`` global batches.
      strategy: the `tf.distribute.Strategy` the trainer was created under.
      epochs: the index of the last epoch, plus one (Keras' ``epochs``).
      steps_per_epoch: steps of one epoch.
      initial_epoch: the epoch to start at.
      validation_data: a finite dataset evaluated at each epoch end (``val_`` logs).
      callbacks: Keras callbacks; a progress bar is added for ``verbose``.
      verbose: 0 (silent), 1 (a progress bar) or 2 (one line per epoch).

    Returns:
      The `keras.callbacks.History` of this call.
    """
    callbacks = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, verbose=verbose,
        epochs=epochs, steps=steps_per_epoch, model=trainer)
    _, step = _step_function(trainer, strategy, trainer.train_step)
    iterator = iter(_distribute(strategy, dataset))
    trainer.stop_training = False
    callbacks.on_train_begin()
    training_logs = None
    for epoch in range(initial_epoch, epochs):
        trainer.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        logs = {}
        for i in range(steps_per_epoch):
            callbacks.on_train_batch_begin(i)
            logs = step(iterator)
            callbacks.on_train_batch_end(i, logs)
            if trainer.stop_training:
                break
        epoch_logs = _floats(logs) if logs else _floats(_logs(trainer))
        if validation_data is not None and not trainer.stop_training:
            val_logs = evaluate(trainer, validation_data, strategy=strategy)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        if trainer.stop_training:
            break
    callbacks.on_train_end(logs=training_logs)
    return trainer.history
