"""ODE solvers: Runge-Kutta tableaux (`TABLEAUX`, alias `SOLVERS`) and the loops that run them.

A solver is a `Tableau` registered in `tableaux`; `solve` runs any of them:

* `tfnode.ode.solving`: the entry point, `validate` (the option checks), `adaptive`,
  `uses_tfp`;
* `tfnode.ode.fixed`: the fixed-step loop;
* `tfnode.ode.adaptive_loop`: tfnode's adaptive loop, batched and per sample, and its
  step-size control (`initial_step_size`);
* `tfnode.ode.adjoint`: dopri5 with TFP's DormandPrince and the adjoint method, and how
  its error control differs from tfnode's;
* `tfnode.ode.xla`: an adaptive step as one XLA-compiled function, and its cache.

This package imports nothing of `tfnode.layers` (the layers import it).
"""

from tfnode.ode.adaptive_loop import initial_step_size
from tfnode.ode.fixed import num_fixed_steps
from tfnode.ode.stats import SolveStats
from tfnode.ode.tableaux import TABLEAUX, Tableau, get, register
from tfnode.ode.solving import (ADJOINT_SOLVERS, GRADIENTS, OPTIONS, adaptive, solve, uses_tfp,
                                validate)

# The registry under the name every caller uses: a dict of name -> Tableau.
SOLVERS = TABLEAUX

__all__ = ["ADJOINT_SOLVERS", "GRADIENTS", "OPTIONS", "SOLVERS", "SolveStats", "TABLEAUX", "Tableau",
           "adaptive", "get", "initial_step_size", "num_fixed_steps", "register", "solve",
           "uses_tfp", "validate"]
