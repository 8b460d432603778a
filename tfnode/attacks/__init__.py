"""Adversarial attacks: pure functions of any logits callable, inputs in [0, 1].

Every attack is registered once in `tfnode.attacks.registry` (its kind, defaults, option
rules and capabilities); the evaluation, the audit, the apps and the tests read the
registry. Call an attack directly (``pgd(model, x, y, eps=0.1)`` returns ``x_adv``) or
uniformly through ``get(name).run(...)``, which returns an `AttackResult`.
"""

# Each module registers its attacks on import; the order is the registry's order.
from tfnode.attacks._utils import (AttackResult, distances, forward_fn, logits_fn, predict,
                                   project)
from tfnode.attacks.gradient import fgsm, pgd, random_start
from tfnode.attacks.di2_fgsm import di2_fgsm, input_diversity
from tfnode.attacks.apgd import apgd, apgd_ce, apgd_dlr
from tfnode.attacks.apgd_t import apgd_t
from tfnode.attacks.fab import fab_t
from tfnode.attacks.square import square_attack
from tfnode.attacks.boundary import boundary_attack, confirm_kwargs
from tfnode.attacks.transfer import transfer
from tfnode.attacks.registry import AttackSpec, available, get

__all__ = ["AttackResult", "AttackSpec", "apgd", "apgd_ce", "apgd_dlr", "apgd_t", "available",
           "boundary_attack", "confirm_kwargs", "di2_fgsm", "distances", "fab_t", "fgsm", "forward_fn", "get",
           "input_diversity", "logits_fn", "pgd", "predict", "project", "random_start",
           "square_attack", "transfer"]
