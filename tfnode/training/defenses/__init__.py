"""Adversarial-training defenses as per-batch loss functions, for any training loop.

``--defense=pgd_at`` (Madry et al. 2018), ``trades`` (Zhang et al. 2019), ``yopo``
(Zhang et al. 2019), ``fgsm_rs`` (Wong et al. 2020) or ``ibp`` (Gowal et al. 2018,
certified training), each with its published options (`get(name).defaults`, per dataset).
``get(name).loss(model, x, y, step, seed=..., **options)`` is the loss on one batch: a
loop differentiates it under its own tape and applies the gradient (`DefendedModel` does
so inside Keras' ``fit``).
"""

# Each module registers its defense on import; the order is the registry's order.
from tfnode.training.defenses.pgd_at import pgd_at_loss
from tfnode.training.defenses.trades import kl_divergence, trades_loss
from tfnode.training.defenses.yopo import split_first_layer, yopo_loss
from tfnode.training.defenses.fgsm_rs import OverfittingGuard, fgsm_rs_loss
from tfnode.training.defenses.ibp import ibp_loss
from tfnode.training.defenses.model import DefendedModel
from tfnode.training.defenses.registry import DefenseSpec, available, get, warm_up

__all__ = ["DefendedModel", "DefenseSpec", "OverfittingGuard", "available", "fgsm_rs_loss",
           "get", "ibp_loss", "kl_divergence", "pgd_at_loss", "split_first_layer", "trades_loss", "warm_up", "yopo_loss"]
