"""Fast adversarial training: FGSM from a random start (Wong, Rice & Kolter, "Fast is
better than free: Revisiting adversarial training", ICLR 2020).

Each batch: a start drawn uniformly from the Linf ball of radius eps (kept in the image
range), one signed gradient step of ``step_ratio * eps`` (their alpha = 1.25 eps),
projected back onto the ball and the image range; the model trains on the result alone,
as in their code (locuslab/fast_adversarial, MNIST/train_mnist.py and
CIFAR10/train_fgsm.py). That is PGD-AT with one step from a random start
(`tfnode.training.defenses.pgd_at_loss`).

Single-step training can fail all at once ("catastrophic overfitting": within an epoch,
robustness to PGD collapses while FGSM accuracy rises). Their remedy is early stopping:
after each epoch, PGD on one batch; if its robust accuracy fell by more than 0.2 since
the epoch before, stop and keep the previous epoch's weights. `OverfittingGuard` does
that with PGD-10 (step eps / 4, no random start) on the first batch of the validation
split, a batch the model never trains on (theirs: PGD-5 on the epoch's first training
batch); ``guard_pgd_steps=0`` turns it off.
"""

import keras
import numpy as np
import tensorflow as tf

from tfnode import attacks
from tfnode.registry import FRACTION, NONNEGATIVE, NONNEGATIVE_COUNT, POSITIVE
from tfnode.training.defenses import registry
from tfnode.training.defenses.pgd_at import pgd_at_loss


def fgsm_rs_loss(model, x, y, *, seed, eps, step_ratio, guard_pgd_steps=0, guard_drop=0.2):
    """FGSM-RS's loss on one batch: ``(cross-entropy at the adversarials, their logits)``
    (the guard's options are the guard's, `OverfittingGuard`)."""
    del guard_pgd_steps, guard_drop
    return pgd_at_loss(model, x, y, seed=seed, eps=eps, step_size=step_ratio * eps,
                       num_steps=1, rand_init=True)


METRIC = "guard_pgd_accuracy"  # the epoch log of the guard's robust accuracy


class OverfittingGuard(keras.callbacks.Callback):
    """Wong et al. 2020's early stop against catastrophic overfitting.

    At each epoch's end: the robust accuracy of the model under PGD on ``batch``, logged
    as ``guard_pgd_accuracy`` (so the resume state keeps it); if it fell by more than
    ``drop`` since the epoch before, the previous epoch's weights are loaded back from
    their checkpoint and training stops.

    Args:
      net: the model trained (its weights are what the checkpoints hold).
      batch: ``(x, y)`` numpy arrays the model does not train on.
      eps: the defense's radius; PGD takes ``num_steps`` steps of ``eps / 4``.
      num_steps: PGD steps.
      drop: the tolerated fall in robust accuracy (a fraction).
      weights_pattern: the epoch checkpoints' path, ``{epoch}`` 1-based.
      previous: the last epoch's robust accuracy (a resumed run's), or None.
      log: where the stop is reported.
    """

    def __init__(self, net, batch, *, eps, num_steps, drop, weights_pattern, previous=None,
                 log=print):
        super().__init__()
        self.net, self.batch = net, batch
        self.eps, self.num_steps, self.drop = eps, num_steps, drop
        self.weights_pattern, self.previous, self.log = weights_pattern, previous, log
        self.stopped_after = None
        self._twin = None  # `_plain`'s copy of the net under a strategy

    def robust_accuracy(self):
        x, y = self.batch
        net = self._plain()
        x_adv = attacks.pgd(net, x, y, eps=self.eps, step_size=self.eps / 4,
                            num_steps=self.num_steps, rand_init=False)
        return float(np.mean(attacks.predict(net, x_adv, batch_size=len(y)) == y))

    def _plain(self):
        """The net, or, where its variables are a `tf.distribute` strategy's (mirrored
        over replicas), a plain twin holding its current weights: the guard attacks
        outside the strategy's replica context, where an XLA-compiled solver step cannot
        read a mirrored variable's other replicas (tests/test_strategies.py)."""
        if not any(isinstance(getattr(w, "value", w), tf.distribute.DistributedValues)
                   for w in self.net.weights):
            return self.net
        if self._twin is None:
            self._twin = keras.models.clone_model(self.net)
        self._twin.set_weights(self.net.get_weights())
        return self._twin

    def on_epoch_end(self, epoch, logs=None):
        accuracy = self.robust_accuracy()
        if logs is not None:
            logs[METRIC] = accuracy
        if self.previous is not None and accuracy < self.previous - self.drop:
            # The checkpoint of the epoch before this one (0-based ``epoch`` - 1).
            self.net.load_weights(self.weights_pattern.format(epoch=epoch))
            self.model.stop_training = True
            self.stopped_after = epoch  # 1-based: the epoch before this one
            self.log(f"tfnode: fgsm_rs guard: PGD-{self.num_steps} robust accuracy on the "
                     f"held-out batch fell from {self.previous:.3f} to {accuracy:.3f} in epoch "
                     f"{epoch + 1} (catastrophic overfitting, Wong et al. 2020); stopped, "
                     f"and the weights of epoch {epoch} are kept")
            return
        self.previous = accuracy


def _guard(net, options, *, batch, weights_pattern, previous, log):
    return OverfittingGuard(net, batch, eps=options["eps"],
                            num_steps=options["guard_pgd_steps"], drop=options["guard_drop"],
                            weights_pattern=weights_pattern, previous=previous, log=log)


# Wong et al.'s settings: MNIST eps 0.3 with alpha 0.375; CIFAR-10 eps 8/255 with
# alpha 10/255 (both alpha = 1.25 eps).
registry.register(registry.DefenseSpec(
    name="fgsm_rs", fn=fgsm_rs_loss,
    defaults={"eps": 0.3, "step_ratio": 1.25, "guard_pgd_steps": 10, "guard_drop": 0.2},
    dataset_defaults={"cifar10": {"eps": 8 / 255}},
    rules={"eps": NONNEGATIVE, "step_ratio": POSITIVE, "guard_pgd_steps": NONNEGATIVE_COUNT,
           "guard_drop": FRACTION},
    summary="fast adversarial training: one FGSM step of 1.25 eps from a random start, "
            "early stop on a PGD-10 collapse",
    reference="Wong, Rice & Kolter 2020",
    guard=_guard, guard_option="guard_pgd_steps", guard_metric=METRIC))
