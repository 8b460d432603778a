"""Interval bound propagation (Gowal et al. 2018) through tfnode's models.

* `tfnode.bounds.box`: the interval arithmetic (`Box`);
* `tfnode.bounds.rules`: one rule per layer class (`RULES`), `propagate` over a model,
  `check_model` (a one-line error for what bounds cannot pass: adaptive solvers);
* `tfnode.bounds.margins`: certified flags and Gowal et al.'s worst-case logits, the
  last linear layer elided.

Used by `tools.evaluate --certify` (`tfnode.evaluation`) and by certified training
(``--defense=ibp``, `tfnode.training.defenses`).
"""

from tfnode.bounds.box import Box
from tfnode.bounds.margins import certified, logit_bounds, margin_lower_bounds, worst_case_logits
from tfnode.bounds.rules import RULES, check_model, propagate

__all__ = ["Box", "RULES", "certified", "check_model", "logit_bounds", "margin_lower_bounds",
           "propagate", "worst_case_logits"]
