"""How every tfnode training compiles and feeds a model: the loss, the optimizer and its
learning-rate schedule, the training stream, and the one-time build under a strategy."""

import keras
import tensorflow as tf

from tfnode import data, optimizers


def _learning_rate(schedule, learning_rate, total_steps, epochs=1):
    if schedule == "constant":
        return learning_rate
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    if schedule == "halve50":
        # x0.5 every 50 epochs: Chu et al. 2020's Appendix A (as read for issue 27).
        per_epoch = max(1, total_steps // max(1, epochs))
        # PiecewiseConstantDecay switches after a bound: step 50 * per_epoch (0-based) is
        # epoch 51's first.
        bounds = [50 * k * per_epoch - 1 for k in range(1, (epochs - 1) // 50 + 1)]
        if not bounds:
            return learning_rate
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            bounds, [learning_rate * 0.5 ** k for k in range(len(bounds) + 1)])
    # "step": x0.1 at 50% and 75% of training, the shape of Chen et al.'s schedule.
    bounds = [max(1, total_steps // 2), max(2, (3 * total_steps) // 4)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        bounds, [learning_rate, learning_rate * 0.1, learning_rate * 0.01])


def _optimizer(name, learning_rate, weight_decay):
    if name == "adam":
        return optimizers.AdamWithL2(learning_rate, l2=weight_decay)
    return optimizers.SGDWithL2(learning_rate, momentum=0.9, l2=weight_decay)  # Chen et al.'s momentum


def compile_for_training(model, config, total_steps):
    """Compiles ``model`` as every tfnode training does: cross-entropy on logits,
    accuracy, and the config's optimizer with its schedule over ``total_steps`` steps."""
    model.compile(optimizer=_optimizer(config.optimizer, _learning_rate(
                      config.lr_schedule, config.learning_rate, total_steps, config.epochs),
                      config.weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def train_stream(config, skip):
    """The training batches from batch ``skip`` on, as one endless stream (a resumed run
    skips what it has trained on).

    Full batches only (the last partial one, 96 of MNIST's 60,000 images, different ones
    each epoch as the data is reshuffled, is dropped): Keras then traces the train step
    for a known batch size. With an unknown one the ODE block's XLA-compiled GroupNorm and
    its adaptive loop took longer (benchmarks/README.md); and the block compiles its
    solver step with XLA only for a known batch size.
    """
    return data.load(config.dataset, "train", batch_size=config.batch_size,
                     data_dir=config.data_dir, seed=config.seed, repeat=True,
                     drop_remainder=True, validation_size=config.validation_size,
                     whole_passes=config.steps_per_epoch is None, skip_batches=skip)


def steps_per_epoch(config):
    """The config's ``steps_per_epoch``, or the full batches in one pass over the
    training split (the last partial one dropped)."""
    return config.steps_per_epoch or data.split_size(
        config.dataset, "train", data_dir=config.data_dir,
        validation_size=config.validation_size) // config.batch_size


def build_for_strategy(trainer, strat, dataset):
    """Builds the compiled metrics, loss and optimizer from ``dataset``'s spec, once.

    Keras 3's fit and evaluate under a tf.distribute strategy first pull a batch from the
    distributed iterator and reduce it across replicas to build them
    (``Trainer._maybe_symbolic_build``). Under MultiWorkerMirroredStrategy that reduce
    fails (keras-team/keras#20585, open since TF 2.16); under MirroredStrategy the pulled
    batch is never trained on. Only the batch's shapes and dtypes are used, so zeros of
    the dataset's spec build the same state, and the per-call build is switched off.
    """
    batch = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), dataset.element_spec)
    with strat.scope():
        trainer._symbolic_build(data_batch=batch)
    trainer._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
