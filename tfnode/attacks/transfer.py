"""Transfer (black-box) attacks: adversarials crafted on one model, evaluated on another."""

import numpy as np

from tfnode.attacks._utils import predict


def transfer(source_model, target_model, attack, x, y, *, batch_size=None, **attack_kwargs):
    """Crafts ``attack(source_model, x, y, **attack_kwargs)`` and evaluates it on the target.

    Chu et al. 2020 (Fig. 1) craft FGSM on a small 3-residual-block network and feed it
    to the ResNet and the ODE-Net.

    Args:
      source_model: logits callable the attack sees (white-box).
      target_model: logits callable that is evaluated (never queried by the attack).
      attack: a gradient attack function (e.g. `fgsm`, `pgd`) returning ``x_adv``.
      x: inputs.
      y: true labels.
      batch_size: batch size of the predictions.
      **attack_kwargs: passed to ``attack`` (``eps``, ...).

    Returns:
      A dict: ``x_adv`` (numpy), ``source_correct`` and ``target_correct`` (bool arrays:
      each model's top-1 on ``x_adv`` equals ``y``).
    """
    x_adv = np.asarray(attack(source_model, x, y, **attack_kwargs))
    y = np.asarray(y)
    return {"x_adv": x_adv,
            "source_correct": predict(source_model, x_adv, batch_size=batch_size) == y,
            "target_correct": predict(target_model, x_adv, batch_size=batch_size) == y}
