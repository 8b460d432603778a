"""`DefendedModel`: a model trained by a registered defense inside Keras' own ``fit``."""

import keras
import tensorflow as tf

from tfnode.defenses import registry
from tfnode.errors import TfnodeError


class DefendedModel(keras.Model):
    """Wraps a model so that ``fit`` trains it with a defense's train step.

    ``call`` is the wrapped model's, so evaluation, checkpoints and callbacks see the
    same weights; only ``train_step`` differs from Keras': it asks the defense for the
    loss, the logits the metrics are computed on and the gradients, and applies them
    with the compiled optimizer. Export the wrapped model (``wrapped``), not this
    wrapper.

    Args:
      model: the Keras model to train.
      defense: a registered defense name (`tfnode.defenses.available`).
      options: its options, already checked (`DefenseSpec.options`).
      seed: seed of the defense's random starts.
    """

    def __init__(self, model, defense, options, *, seed=0, **kwargs):
        if model.losses:
            # The defenses' losses are theirs alone; a regularizer or add_loss term
            # would be silently dropped.
            raise TfnodeError(f"defense {defense}: model {model.name!r} has extra losses "
                              "(regularizers or add_loss), which the defenses do not add")
        kwargs.setdefault("name", f"{model.name}_{defense}")
        super().__init__(**kwargs)
        self.wrapped = model
        self.defense = defense
        self.spec = registry.get(defense)
        self.defense_options = dict(options)
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Its only weights are the model's (built) and the seed state: nothing to build,
        # and BackupAndRestore refuses an unbuilt model.
        self.built = True

    def call(self, inputs, training=False):
        return self.wrapped(inputs, training=training)

    def step_options(self):
        """The options the defense's step sees now: ``eps`` ramped by ``eps_warmup``."""
        options = dict(self.defense_options)
        warmup = options.pop(registry.EPS_WARMUP, 0)
        if warmup:
            # optimizer.iterations is checkpointed, so a resumed run continues the ramp.
            done = tf.cast(self.optimizer.iterations + 1, tf.float32)
            options["eps"] = options["eps"] * tf.minimum(1.0, done / float(warmup))
        return options

    def train_step(self, data):
        x, y = data[0], data[1]
        loss, logits, grads = self.spec.step(self.wrapped, x, y, seed=self.seed_generator,
                                             **self.step_options())
        # Keras' own train step updates the same tracker (what fit logs as "loss").
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        self.optimizer.apply_gradients(zip(grads, self.wrapped.trainable_weights))
        return self.compute_metrics(x, y, logits, sample_weight=None)
