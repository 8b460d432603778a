"""Transfer (black-box) attacks: adversarials crafted on one model, scored on another."""

from tfnode.attacks import registry


def transfer(source_model, x, y, *, eps, attack="fgsm", seed=0, batch_size=None, **options):
    """Crafts registered attack ``attack`` on ``source_model``; the caller scores the target.

    Chu et al. 2020 (Fig. 1) craft FGSM on a small 3-residual-block network and feed it
    to the ResNet and the ODE-Net. The target is never queried here: the evaluation
    predicts the returned adversarials on it, like any attack's.

    Args:
      source_model: logits callable the attack sees (white-box).
      x: inputs.
      y: true labels.
      eps: budget.
      attack: a transferable registered attack (``registry.available(transferable=True)``).
      seed: passed to a seeded attack.
      batch_size: passed to an attack that queries in batches.
      **options: that attack's options.

    Returns:
      The attack's `AttackResult` on the source model.
    """
    return registry.get(attack).run(source_model, x, y, eps=eps, seed=seed,
                                    batch_size=batch_size, **options)


registry.register(registry.AttackSpec(
    name="transfer", fn=transfer, kind="transfer", defaults={"attack": "fgsm"}, rules={},
    takes_batch_size=True, needs_source=True, in_audit=True,
    iterations=lambda options: registry.get(options["attack"]).iterations(options),
    summary="adversarials crafted on --source_model_path with a transferable attack "
            "(transfer.attack), scored on the model",
    reference="Papernot et al. 2016; Chu et al. 2020, Fig. 1"))
