"""Adversarial-training defenses: train steps that `tfnode.training` plugs into ``fit``.

``--defense=pgd_at`` (Madry et al. 2018), ``trades`` (Zhang et al. 2019) or ``yopo``
(Zhang et al. 2019), each with its published options (`get(name).defaults`, per dataset).
"""

# Each module registers its defense on import; the order is the registry's order.
from tfnode.defenses.pgd_at import pgd_at_step
from tfnode.defenses.trades import kl_divergence, trades_step
from tfnode.defenses.yopo import split_first_layer, yopo_step
from tfnode.defenses.model import DefendedModel
from tfnode.defenses.registry import DefenseSpec, available, get

__all__ = ["DefendedModel", "DefenseSpec", "available", "get", "kl_divergence",
           "pgd_at_step", "split_first_layer", "trades_step", "yopo_step"]
