"""Adversarial attacks: pure functions of any logits callable, inputs in [0, 1].

``ATTACKS`` maps the names the apps use to the functions. Gradient attacks return
``x_adv``; the decision-based `boundary_attack` returns a `BoundaryResult` (it minimizes
a distance instead of working within a budget) and the score-based `square_attack` a
`SquareResult` (adversarials and exact query counts).
"""

from tfnode.attacks._utils import distances, forward_fn, logits_fn, predict, project
from tfnode.attacks.boundary import BoundaryResult, boundary_attack
from tfnode.attacks.gradient import di2_fgsm, fgsm, input_diversity, pgd, random_start
from tfnode.attacks.square import SquareResult, square_attack
from tfnode.attacks.transfer import transfer

ATTACKS = {"fgsm": fgsm, "pgd": pgd, "di2_fgsm": di2_fgsm, "boundary": boundary_attack,
           "square": square_attack}

__all__ = ["ATTACKS", "BoundaryResult", "SquareResult", "boundary_attack", "di2_fgsm",
           "distances", "fgsm", "forward_fn", "input_diversity", "logits_fn", "pgd", "predict",
           "project", "random_start", "square_attack", "transfer"]
