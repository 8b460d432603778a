"""`solve`: integrates ``dy/dt = fn(t, y)`` with any registered `Tableau`, and the checks
of its options (`validate`).

* Fixed-step methods (``euler``, ``midpoint``, ``heun``, ``rk4``, ...): `tfnode.ode.fixed`,
  ``t1 / step_size`` steps, differentiated by backpropagating through them (the exact
  gradient of what is computed). A ResNet block ``y + h f(y)`` is one Euler step with
  step ``h``.
* Adaptive methods (``bosh3``, ``dopri5``, ``tsit5``, ...): tfnode's own loop
  (`tfnode.ode.adaptive_loop`), one ``tf.while_loop`` of trial steps with torchdiffeq's step
  controller, differentiated through the steps it took (accepted and rejected): the exact
  gradient of the computed function whatever the tolerance, and no second ODE solve.
  With ``per_sample_steps`` every sample keeps its own time, step and error norm. Each
  step can run as one XLA-compiled function (`tfnode.ode.xla`).
* ``dopri5`` with ``gradient="adjoint"`` (the `ODEBlock` default for dopri5): TFP's
  ``tfp.math.ode.DormandPrince``, differentiated by the adjoint method (Chen et al.
  2018), a second ODE solve backwards in time, only as exact as the tolerances; its
  error control is not tfnode's (`tfnode.ode.adjoint`).

Every solve returns the state at ``t1`` and its `SolveStats`.
"""

import inspect

from tfnode.errors import TfnodeError
from tfnode.ode import tableaux
from tfnode.ode.adaptive_loop import batch_loop, per_sample_loop
from tfnode.ode.adjoint import dopri5_tfp
from tfnode.ode.fixed import fixed_step, num_fixed_steps

GRADIENTS = ("adjoint", "backprop")
# The solvers with an adjoint path: TFP implements only Dormand-Prince.
ADJOINT_SOLVERS = ("dopri5",)


def adaptive(solver):
    """Whether the registered solver ``solver`` has step-size control."""
    return tableaux.get(solver).adaptive


def uses_tfp(solver, gradient):
    """Whether a block with these options solves with TFP's DormandPrince (adjoint)."""
    return solver in ADJOINT_SOLVERS and gradient in (None, "adjoint")


def validate(*, solver, rtol, atol, t1, step_size, first_step_size, max_num_steps,
             gradient=None, per_sample_steps=False):
    """Raises `TfnodeError` (one line) for solver options that cannot work."""
    tableau = tableaux.get(solver)
    if gradient is not None and gradient not in GRADIENTS:
        raise TfnodeError(f"unknown gradient {gradient!r}; expected one of {list(GRADIENTS)}")
    if gradient == "adjoint" and solver not in ADJOINT_SOLVERS:
        raise TfnodeError(f"gradient='adjoint' needs solver {' or '.join(ADJOINT_SOLVERS)} "
                          f"(TFP's DormandPrince); {solver!r} backpropagates through its steps")
    if per_sample_steps and uses_tfp(solver, gradient):
        raise TfnodeError("per_sample_steps=True needs gradient='backprop' (tfnode's own "
                          "loop): TFP's DormandPrince has one step size for the whole batch")
    if not float(t1) > 0:
        raise TfnodeError(f"t1 must be > 0, got {t1!r}")
    if tableau.adaptive:
        for name, value in (("rtol", rtol), ("atol", atol)):
            if not float(value) > 0:
                raise TfnodeError(f"{name} must be > 0 for solver {solver!r}, got {value!r}")
        if first_step_size is not None and not float(first_step_size) > 0:
            raise TfnodeError(f"first_step_size must be > 0 or None (automatic), "
                              f"got {first_step_size!r}")
    else:
        if step_size is None or not float(step_size) > 0:
            raise TfnodeError(f"solver {solver!r} needs step_size > 0, got {step_size!r}")
        if max_num_steps is not None and num_fixed_steps(t1, step_size) > max_num_steps:
            raise TfnodeError(f"step_size {step_size} needs {num_fixed_steps(t1, step_size)} "
                              f"steps to reach t1={t1}, more than max_num_steps={max_num_steps}")
    if max_num_steps is not None and int(max_num_steps) < 1:
        raise TfnodeError(f"max_num_steps must be >= 1 or None, got {max_num_steps!r}")



# The options of a solve, read off `validate`'s signature: the one list of them (a block's
# recorded fields, the audit's re-solves and the solver options of a model all use it).
OPTIONS = tuple(inspect.signature(validate).parameters)

def solve(fn, y0, *, solver="dopri5", t0=0.0, t1=1.0, rtol=1e-3, atol=1e-3,
          first_step_size=None, max_num_steps=None, step_size=None, gradient=None,
          per_sample_steps=False, jit_step=False, label="solve"):
    """Integrates ``dy/dt = fn(t, y)`` from ``t0`` to ``t1``.

    Args:
      fn: callable ``fn(t, y) -> dy/dt`` with ``t`` a scalar tensor of ``y0``'s dtype
        (``[N]`` with ``per_sample_steps``).
      y0: initial state tensor (float32 or float64).
      solver: a name in `TABLEAUX`.
      t0: initial time.
      t1: final time.
      rtol: relative tolerance (adaptive solvers).
      atol: absolute tolerance (adaptive solvers).
      first_step_size: first trial step of an adaptive solver; None picks it with
        Hairer's rule from one extra evaluation of ``fn`` (two on TFP's path, which
        evaluates ``fn(t0)`` again; counted in the NFE).
      max_num_steps: trial-step budget of an adaptive solver (None: unbounded).
      step_size: step of a fixed-step solver.
      gradient: for dopri5, ``"adjoint"`` (TFP's DormandPrince; the default) or
        ``"backprop"`` (tfnode's loop); other adaptive solvers always run tfnode's loop,
        and fixed-step solvers always backpropagate.
      per_sample_steps: with tfnode's adaptive loop, every sample (index 0 of ``y0``)
        keeps its own time, step size and error norm, so its solution does not depend on
        the rest of the batch; ``fn`` is then called with a time per sample (``t`` of
        shape ``[N]``). Fixed-step solvers are batch-independent anyway.
      jit_step: with tfnode's adaptive loop, run each trial step as one XLA-compiled
        function, forward and backward, if the batch size (``y0.shape[0]``) is known;
        the same math, faster on CPU (see `tfnode.ode.xla`). ``fn`` must then be
        XLA-compilable.
      label: who solves (an ODE block's name), for the error of a failed solve.

    Returns:
      ``(y1, stats)``: the state at ``t1`` and the solve's `SolveStats`.

    Raises:
      tf.errors.InvalidArgumentError: tfnode's adaptive loop did not reach ``t1``
        (``max_num_steps`` used up, or the state became non-finite); its message names
        ``label``, the solver, the tolerances, the steps taken and the time reached, and
        `tfnode.errors.solver_failure` turns it into one line. Where XLA compiles the
        loop (which drops assertions) the state of such a solve is NaN instead. The
        assertion is the loop's own (`tfnode.ode.adaptive_loop`): it runs in the graph right
        after the loop.
    """
    validate(solver=solver, rtol=rtol, atol=atol, t1=t1 - t0, step_size=step_size,
             first_step_size=first_step_size, max_num_steps=max_num_steps, gradient=gradient,
             per_sample_steps=per_sample_steps)
    tableau = tableaux.get(solver)
    if not tableau.adaptive:
        return fixed_step(fn, y0, tableau, t0=t0, t1=t1, step_size=step_size)
    if uses_tfp(solver, gradient):
        return dopri5_tfp(fn, y0, tableau, t0=t0, t1=t1, rtol=rtol, atol=atol,
                          first_step_size=first_step_size, max_num_steps=max_num_steps)
    # XLA compiles per concrete shape: in a graph relaxed to an unknown batch size (as
    # Square and Boundary query shrinking subsets) it would compile a step for every new
    # size, and the compiled step ran slower there too (see tfnode.attacks.logits_fn).
    jit_step = jit_step and y0.shape[0] is not None
    loop = per_sample_loop if per_sample_steps else batch_loop
    return loop(fn, y0, tableau, t0=t0, t1=t1, rtol=rtol, atol=atol,
                first_step_size=first_step_size, max_num_steps=max_num_steps,
                jit_step=jit_step, label=label)
