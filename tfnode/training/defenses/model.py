"""`DefendedModel`: a model trained on a registered defense's loss by the training loop
(`tfnode.training.loop`, which runs Keras' train step, here this one)."""

import keras
import tensorflow as tf

from tfnode.errors import TfnodeError
from tfnode.training import regularizers
from tfnode.training.defenses import registry
from tfnode.training.defenses._inner import cross_entropy


class DefendedModel(keras.Model):
    """Wraps a model so that the training loop (or Keras' ``fit``) trains it on a
    defense's loss, a regularizer's penalty added to it, or both.

    ``call`` is the wrapped model's, so evaluation, checkpoints and callbacks see the
    same weights; only ``train_step`` differs from Keras': it takes the gradient of the
    defense's per-batch loss (`DefenseSpec.loss`) under its tape and applies it with the
    compiled optimizer, under any tf.distribute strategy (the loss scaled for the
    replicas' sum). Export
    the wrapped model (``wrapped``), not this wrapper.

    With a regularizer (`tfnode.training.regularizers`) the loss gains its penalty on
    the clean batch: without a defense, cross-entropy on the logits of the regularizer's
    own forward pass plus the penalty; with one, the defense's loss plus the penalty.

    Args:
      model: the Keras model to train.
      defense: a registered defense name (`tfnode.training.defenses.available`), or None
        (a regularizer alone).
      options: its options, already checked (`DefenseSpec.options`); None without one.
      seed: seed of the defense's random starts and the regularizer's noise.
      regularizer: a registered regularizer name, or None.
      regularizer_options: its options, already checked (`RegularizerSpec.options`).
    """

    def __init__(self, model, defense, options, *, seed=0, regularizer=None,
                 regularizer_options=None, **kwargs):
        parts = [n for n in (defense, regularizer) if n]
        who = " + ".join(parts)
        if not who:
            raise TfnodeError("DefendedModel needs a defense, a regularizer or both")
        if model.losses:
            # The defenses' losses are theirs alone; a Keras regularizer or add_loss
            # term would be silently dropped.
            raise TfnodeError(f"{who}: model {model.name!r} has extra losses (Keras "
                              "regularizers or add_loss), which the training step does not add")
        kwargs.setdefault("name", "_".join([model.name] + parts))
        super().__init__(**kwargs)
        self.wrapped = model
        self.defense = defense
        self.spec = registry.get(defense) if defense else None
        self.defense_options = dict(options or {})
        self.regularizer = regularizers.get(regularizer) if regularizer else None
        self.regularizer_options = dict(regularizer_options or {})
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Its only weights are the model's (built) and the seed state: nothing to build,
        # and BackupAndRestore refuses an unbuilt model.
        self.built = True

    def call(self, inputs, training=False):
        return self.wrapped(inputs, training=training)

    def train_step(self, data):
        x, y = data[0], data[1]
        weights = self.wrapped.trainable_weights
        # The one place the gradient is taken and applied: the loss function crafts its
        # adversarials under this tape too, but they enter the loss stop-gradient'd, so
        # backprop never runs through the attack (and in the traced train function the
        # attack's recorded ops cost nothing).
        with tf.GradientTape() as tape:
            if self.spec is not None:
                loss, logits = self.spec.loss(self.wrapped, x, y, self.optimizer.iterations,
                                              seed=self.seed_generator, **self.defense_options)
            if self.regularizer is not None:
                clean_logits, penalty = self.regularizer.fn(
                    self.wrapped, x, seed=self.seed_generator, **self.regularizer_options)
                if self.spec is None:
                    if clean_logits is None:  # a penalty of the weights alone
                        clean_logits = self.wrapped(x, training=True)
                    loss, logits = cross_entropy(y, clean_logits), clean_logits
                loss = loss + penalty
            # The loss is this replica's batch mean; the optimizer sums the replicas'
            # gradients. Scaled by 1 / replicas (as Keras' own losses are), the sum is the
            # global batch's mean gradient (tf.nn.compute_average_loss); one device: x1.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = loss / replicas if replicas > 1 else loss
        grads = tape.gradient(scaled, weights)
        # Keras' own train step updates the same tracker (what fit logs as "loss").
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        self.optimizer.apply_gradients(zip(grads, weights))
        return self.compute_metrics(x, y, logits, sample_weight=None)
