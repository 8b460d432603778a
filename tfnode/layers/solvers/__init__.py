"""ODE solvers behind `ODEBlock`: Runge-Kutta tableaux (`TABLEAUX`) and the loops that run them.

A solver is a `Tableau` registered in `tableaux`; `solve` runs any of them (see `loops`
for the loops, their error control and how TFP's DormandPrince differs).
"""

from tfnode.layers.solvers.loops import (ADJOINT_SOLVERS, GRADIENTS, SolveStats, adaptive,
                                         initial_step_size, num_fixed_steps, solve, uses_tfp,
                                         validate)
from tfnode.layers.solvers.tableaux import TABLEAUX, Tableau, get, register

# The registry under the name every caller uses: a dict of name -> Tableau.
SOLVERS = TABLEAUX

__all__ = ["ADJOINT_SOLVERS", "GRADIENTS", "SOLVERS", "SolveStats", "TABLEAUX", "Tableau",
           "adaptive", "get", "initial_step_size", "num_fixed_steps", "register", "solve",
           "uses_tfp", "validate"]
