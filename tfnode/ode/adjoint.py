"""``dopri5`` with ``gradient="adjoint"`` (the `ODEBlock` default for dopri5): TFP's
``tfp.math.ode.DormandPrince``, differentiated by the adjoint method (Chen et al. 2018), a
second ODE solve backwards in time, only as exact as the tolerances.

TFP's DormandPrince controls its error differently from tfnode's adaptive loop
(`tfnode.ode.adaptive_loop`), in five ways (read in TFP 0.25's ``dormand_prince.py``,
``runge_kutta_util.py`` and ``util.py``; torchdiffeq 0.2.5 as shipped shares 4 and 5
with TFP):

1. norm: TFP squares the scaled errors before its RMS, so its ratio is
   ``sqrt(mean((err / tol)^4))``, the square of a 4-norm, not the RMS;
2. exponent: ``ratio^(-1/6)`` on that squared norm, i.e. ``norm^(-1/3)``, not ``^(-1/5)``;
3. clamp: step factors in [0.1, 10] after any step, so an accepted step near the
   tolerance can be followed by a smaller one;
4. error estimate: Shampine's (1986) embedded 4th-order weights, not Dormand and
   Prince's (both estimate the same error, with different constants);
5. end point: TFP steps past ``t1`` and returns a 4th-order interpolant at ``t1``; tfnode
   shortens the last step to land on ``t1``.

So the same rtol/atol make TFP and tfnode take different steps and return different
solutions (benchmarks/solvers.py measures both against a tight reference), and the
audit's adjoint surrogate changes the forward solve as well as the gradient.
"""

import tensorflow as tf
import tensorflow_probability as tfp

from tfnode.ode.adaptive_loop import initial_step_size
from tfnode.ode.stats import SolveStats


def dopri5_tfp(fn, y0, tableau, *, t0, t1, rtol, atol, first_step_size, max_num_steps):
    """Integrates ``dy/dt = fn(t, y)`` from ``t0`` to ``t1`` with TFP's DormandPrince
    (``tableau`` is dopri5's, for the first step and the NFE); returns
    ``(y1, SolveStats)``, with no accepted or rejected counts (TFP reports none)."""
    extra_nfe = 0
    if first_step_size is None:
        first_step_size = initial_step_size(fn, t0, y0, rtol=rtol, atol=atol,
                                            order=tableau.error_order + 1)
        extra_nfe = 2
    ode = tfp.math.ode.DormandPrince(rtol=rtol, atol=atol, first_step_size=first_step_size,
                                     max_num_steps=max_num_steps)
    results = ode.solve(fn, t0, y0, solution_times=[t1])
    # TFP's count misses its first evaluation, f(t0): it tests `solver_internal_state is
    # None` after assigning it (TFP 0.25, dormand_prince.py), so it counts only the six
    # evaluations of each trial step (accepted or rejected).
    steps = tf.cast(results.diagnostics.num_ode_fn_evaluations, tf.int32) // (
        tableau.evaluations_per_step)
    nfe = 1 + steps * tableau.evaluations_per_step + extra_nfe
    return results.states[-1], SolveStats(nfe, steps, None, None)
