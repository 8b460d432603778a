"""Regularizers added to any training loss: ``--regularizer=kinetic_jacobian`` (RNODE,
Finlay et al. 2020) and ``contractivity`` (an L-infinity bound on the block functions'
linear maps). ``get(name).fn(model, x, *, seed, **options)`` gives the batch's
logits and the penalty; `tfnode.training.defenses.DefendedModel` adds it to the loss.
"""

# Each module registers its regularizer on import; the order is the registry's order.
from tfnode.training.regularizers import kinetic_jacobian
from tfnode.training.regularizers import contractivity
from tfnode.training.regularizers.registry import RegularizerSpec, available, get, record

__all__ = ["RegularizerSpec", "available", "contractivity", "get", "kinetic_jacobian",
           "record"]
