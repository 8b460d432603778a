"""The loops that integrate ``dy/dt = fn(t, y)`` with a `Tableau`, and `solve`.

* Fixed-step methods (``euler``, ``midpoint``, ``heun``, ``rk4``, ...): ``t1 / step_size``
  steps, differentiated by backpropagating through them (the exact gradient of what is
  computed). A ResNet block ``y + h f(y)`` is one Euler step with step ``h``.
* Adaptive methods (``bosh3``, ``dopri5``, ``tsit5``, ...): tfnode's own loop, one
  ``tf.while_loop`` of trial steps with torchdiffeq's step controller (below), differentiated
  through the steps it took (accepted and rejected): the exact gradient of the computed
  function whatever the tolerance, and no second ODE solve. With ``per_sample_steps``
  every sample keeps its own time, step and error norm. Each step can run as one
  XLA-compiled function (`_step_function`).
* ``dopri5`` with ``gradient="adjoint"`` (the `ODEBlock` default for dopri5): TFP's
  ``tfp.math.ode.DormandPrince``, differentiated by the adjoint method (Chen et al.
  2018), a second ODE solve backwards in time, only as exact as the tolerances.

Error control. tfnode's loop: error ratio = RMS over the state of
``err / (atol + rtol max(|y|, |y_new|))`` with ``err`` the embedded-pair estimate of the
tableau; accept if ratio <= 1; next step ``h * clip(0.9 ratio^(-1/(q+1)), lo, 10)`` for an
embedded order ``q``, with ``lo = 0.2`` after a rejected step and ``lo = 1`` after an
accepted one (an accepted step is never followed by a smaller one); the last step is
shortened to land on ``t1``. The norm, exponent and clamps are torchdiffeq's
(``_optimal_step_size``, ``_rms_norm``); the error weights are the tableau's (for
dopri5, Dormand and Prince's). TFP's DormandPrince differs in five ways (read in TFP
0.25's ``dormand_prince.py``, ``runge_kutta_util.py`` and ``util.py``; torchdiffeq 0.2.5
as shipped shares 4 and 5 with TFP):

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

Every solve returns the state at ``t1`` and its `SolveStats`.
"""

import collections
import functools
import math
import weakref

import tensorflow as tf
import tensorflow_probability as tfp

from tfnode import errors
from tfnode.errors import TfnodeError
from tfnode.layers.solvers import tableaux

GRADIENTS = ("adjoint", "backprop")
# The solvers with an adjoint path: TFP implements only Dormand-Prince.
ADJOINT_SOLVERS = ("dopri5",)
# Above this many steps the fixed-step loop is a tf.while_loop instead of unrolled ops,
# so that a small h does not build a huge graph.
_MAX_UNROLL = 8
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


class SolveStats(collections.namedtuple("SolveStats", "nfe steps accepted rejected")):
    """What one solve cost.

    Attributes:
      nfe: evaluations of ``fn`` (int32 scalar), every one counted: the initial ``f``,
        the automatic first step's probe, and each trial step's stages.
      steps: trial steps taken (int32 scalar); with per-sample steps, iterations of the
        batched loop (the slowest sample's trial steps).
      accepted: accepted steps (int32; one per sample, ``[N]``, with per-sample steps);
        None where TFP solves (it does not report them).
      rejected: rejected steps, likewise. ``accepted + rejected == steps`` (per sample:
        at most ``steps``, equal for the slowest sample), and
        ``nfe == initial + steps * evaluations_per_step`` (`Tableau.evaluations_per_step`).
    """


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


def num_fixed_steps(t1, step_size, t0=0.0):
    """Steps of size ``step_size`` to go from t0 to t1 (the last one may be shorter)."""
    # The 1e-9 slack keeps t1/h = 10.000000001 (float rounding) at 10 steps.
    return max(1, math.ceil((t1 - t0) / step_size - 1e-9))


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
        the same math, faster on CPU (see `_step_function`). ``fn`` must then be
        XLA-compilable.
      label: who solves (an ODE block's name), for the error of a failed solve.

    Returns:
      ``(y1, stats)``: the state at ``t1`` and the solve's `SolveStats`.

    Raises:
      tf.errors.InvalidArgumentError: tfnode's adaptive loop did not reach ``t1``
        (``max_num_steps`` used up, or the state became non-finite); its message names
        ``label``, the solver, the tolerances, the steps taken and the time reached, and
        `tfnode.errors.solver_failure` turns it into one line. Where XLA compiles the
        loop (which drops assertions) the state of such a solve is NaN instead.
    """
    validate(solver=solver, rtol=rtol, atol=atol, t1=t1 - t0, step_size=step_size,
             first_step_size=first_step_size, max_num_steps=max_num_steps, gradient=gradient,
             per_sample_steps=per_sample_steps)
    tableau = tableaux.get(solver)
    if not tableau.adaptive:
        return _fixed_step(fn, y0, tableau, t0=t0, t1=t1, step_size=step_size)
    if uses_tfp(solver, gradient):
        return _dopri5_tfp(fn, y0, tableau, t0=t0, t1=t1, rtol=rtol, atol=atol,
                           first_step_size=first_step_size, max_num_steps=max_num_steps)
    # XLA compiles per concrete shape: in a graph relaxed to an unknown batch size (as
    # Square and Boundary query shrinking subsets) it would compile a step for every new
    # size, and the compiled step ran slower there too (see tfnode.attacks.logits_fn).
    jit_step = jit_step and y0.shape[0] is not None
    loop = _adaptive_per_sample if per_sample_steps else _adaptive
    return loop(fn, y0, tableau, t0=t0, t1=t1, rtol=rtol, atol=atol,
                first_step_size=first_step_size, max_num_steps=max_num_steps,
                jit_step=jit_step, label=label)


def _assert_reached(reached, label, tableau, *, t1, rtol, atol, max_num_steps, steps, t,
                    finite):
    """Fails a solve that did not reach t1, with what a user needs to act on it."""
    tf.debugging.Assert(reached, [
        f"{label}: {tableau.name} {errors.SOLVER_FAILURE}={t1:g} (rtol={rtol:g}, "
        f"atol={atol:g}, max_num_steps={max_num_steps}); trial steps taken:", steps,
        "; time reached:", t, "; state finite:", finite,
        "; raise max_num_steps or rtol/atol, or check the inputs"], summarize=1)


def _rms(x, axes=None):
    return tf.sqrt(tf.reduce_mean(tf.square(x), axis=axes))


def _per_sample(v, ndim):
    """``[N]`` -> ``[N, 1, ..., 1]`` to broadcast against a state of rank ``ndim``."""
    return tf.reshape(v, [-1] + [1] * (ndim - 1))


def _weighted(h, weights, ks):
    """``h * sum_i w_i k_i`` over the nonzero weights (None if all are zero)."""
    terms = [w * k for w, k in zip(weights, ks) if w]
    return h * tf.add_n(terms) if terms else None


def initial_step_size(fn, t0, y0, *, rtol, atol, f0=None, order=5, per_sample=False):
    """Hairer, Norsett & Wanner (Solving ODEs I, II.4) starting step.

    Costs one evaluation of fn, plus one for ``f0 = fn(t0, y0)`` unless given. TFP's
    default first step of 1e-3 on [0, 1] at rtol=1e-3 wastes about three accepted but
    needlessly small steps (18 evaluations) while the controller grows the step; this
    rule lands close to the step the controller settles on. ``order`` is ``q + 1`` for
    a method whose error estimate has order ``q``. The result is a stop-gradient: the
    step size is a control choice, not part of the model's math. With ``per_sample``
    (``t0`` of shape ``[N]``), one step per sample of ``y0``.
    """
    y0 = tf.stop_gradient(y0)
    dtype = y0.dtype
    t0 = tf.cast(t0, dtype)
    axes = list(range(1, len(y0.shape))) if per_sample else None
    expand = (lambda v: _per_sample(v, len(y0.shape))) if per_sample else (lambda v: v)
    scale = atol + tf.abs(y0) * rtol
    f0 = tf.stop_gradient(fn(t0, y0) if f0 is None else f0)
    d0, d1 = _rms(y0 / scale, axes), _rms(f0 / scale, axes)
    tiny = tf.constant(1e-6, dtype)
    h0 = tf.where((d0 < 1e-5) | (d1 < 1e-5), tiny, 0.01 * d0 / d1)
    f1 = tf.stop_gradient(fn(t0 + h0, y0 + expand(h0) * f0))
    d2 = _rms((f1 - f0) / scale, axes) / h0
    h1 = tf.where(tf.maximum(d1, d2) <= 1e-15, tf.maximum(tiny, h0 * 1e-3),
                  (0.01 / tf.maximum(d1, d2)) ** (1.0 / order))
    return tf.minimum(100 * h0, h1)


def _dopri5_tfp(fn, y0, tableau, *, t0, t1, rtol, atol, first_step_size, max_num_steps):
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


def _fixed_step(fn, y0, tableau, *, t0, t1, step_size):
    n = num_fixed_steps(t1, step_size, t0)
    dtype = y0.dtype

    def step(t, y, h):
        ks = []
        for i, ci in enumerate(tableau.c):
            increment = _weighted(h, tableau.a[i - 1], ks) if i else None
            ks.append(fn(t + ci * h, y if increment is None else y + increment))
        return y + _weighted(h, tableau.b, ks)

    def h_at(i):
        # Every step is step_size except the last, which lands exactly on t1.
        return tf.minimum(tf.constant(step_size, dtype), t1 - (t0 + i * step_size))

    t0_ = tf.constant(t0, dtype)
    if n <= _MAX_UNROLL:
        y = y0
        for i in range(n):
            y = step(t0_ + i * step_size, y, h_at(float(i)))
    else:
        def body(i, y):
            fi = tf.cast(i, dtype)
            return i + 1, step(t0_ + fi * step_size, y, h_at(fi))

        _, y = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), y0),
                             maximum_iterations=n)
    steps = tf.constant(n, tf.int32)
    return y, SolveStats(tf.constant(n * tableau.evaluations_per_step, tf.int32), steps,
                         steps, tf.constant(0, tf.int32))


def _step_factor(ratio, exponent):
    """Next step / this step from the error ratio (error norm / tolerance).

    ``0.9 ratio^(-exponent)`` clipped to [0.2, 10], except that an accepted step (ratio
    < 1) is never followed by a smaller one: torchdiffeq's rule (TFP's controller may
    shrink the step after an accepted step whose ratio is close to 1). A next step that
    is too long is simply rejected, so the tolerance is met either way; the rule is kept
    so that tfnode and torchdiffeq take the same steps where their error estimates agree
    (benchmarks/ode_block.py checks exactly that).
    """
    factor = _SAFETY * tf.math.pow(tf.maximum(ratio, 1e-10), -exponent)
    lowest = tf.where(ratio < 1.0, tf.ones_like(ratio), tf.fill(tf.shape(ratio),
                                                                 tf.cast(_MIN_FACTOR, ratio.dtype)))
    return tf.clip_by_value(factor, lowest, _MAX_FACTOR)


def _rk_step(tableau, fn, t, y, f, h, *, rtol, atol, per_sample):
    """One trial step of an adaptive ``tableau`` from ``(t, y)``, with ``f = fn(t, y)``.

    Returns ``(y_new, f_new, ratio)``: the solution at ``t + h``, ``fn`` there (the next
    step's first stage if this one is accepted: the last stage of an FSAL method, one
    more evaluation otherwise), and the stop-gradient error ratio (RMS of error /
    tolerance scale; one per sample with ``per_sample``, where ``t`` and ``h`` are
    ``[N]``).
    """
    # No gradient flows to the times (the controller's steps are stop-gradients and t0
    # a constant); saying so spares the compiled backward step their reductions.
    t, h = tf.stop_gradient(t), tf.stop_gradient(h)
    hb = _per_sample(h, len(y.shape)) if per_sample else h
    ks = [f]
    for ci, ai in zip(tableau.c[1:], tableau.a):
        increment = _weighted(hb, ai, ks)
        yi = y if increment is None else y + increment
        ks.append(fn(t + ci * h, yi))
    if tableau.fsal:  # the last stage was evaluated at the new solution yi
        y_new, f_new = yi, ks[-1]
    else:
        y_new = y + _weighted(hb, tableau.b, ks)
        f_new = fn(t + h, y_new)
    err = _weighted(hb, tableau.error, ks)
    scale = atol + rtol * tf.maximum(tf.abs(y), tf.abs(y_new))
    axes = list(range(1, len(y.shape))) if per_sample else None
    return y_new, f_new, tf.stop_gradient(_rms(err / scale, axes))


def _step_function(fn, tableau, *, rtol, atol, per_sample, jit_step):
    """`_rk_step` for ``fn``, as one XLA-compiled function with ``jit_step``.

    Why XLA per step and not per loop: XLA compiles a whole step (the stages' evaluations
    of ``fn`` and the stage sums) and its gradient well on CPU, fusing the stage sums and
    each GroupNorm's passes; a ``tf.while_loop``'s gradient it compiles badly (issue 4).
    So the loop stays TF's and each iteration runs one compiled step forward and one
    compiled step backward, which is faster than the same loop without it for the
    forward pass, the training step and the input gradient (timings:
    benchmarks/README.md).

    The compiled function is cached per ``fn`` and reused by every graph that solves
    with it: ``fn``'s trace-time Python state is frozen in it (`ODEBlock` gives each
    Keras training mode its own ``fn``). XLA compiles it once per input shape.
    """
    options = dict(rtol=rtol, atol=atol, per_sample=per_sample)
    if not jit_step:
        return functools.partial(_rk_step, tableau, fn, **options)
    # One compiled function per (fn, tableau, options): a new tf.function per solve would
    # make every eager call (and every retrace) compile the step again. The cached
    # function holds fn weakly, so the cache does not keep fn (a layer and its weights)
    # alive.
    try:
        ref = weakref.ref(fn)
        cache = _JIT_STEPS.setdefault(fn, {})
    except TypeError:  # fn cannot be weakly referenced: no caching
        return tf.function(functools.partial(_rk_step, tableau, fn, **options),
                           jit_compile=True)
    key = (tableau.name, float(rtol), float(atol), bool(per_sample))
    if key not in cache:
        cache[key] = tf.function(
            lambda t, y, f, h: _rk_step(tableau, ref(), t, y, f, h, **options),
            jit_compile=True)
    return cache[key]


_JIT_STEPS = weakref.WeakKeyDictionary()


def _start(fn, t0, y0, tableau, *, rtol, atol, first_step_size, per_sample):
    """``(f0, h, initial_nfe)``: ``fn`` at the start and the first trial step."""
    f0 = fn(t0, y0)
    if first_step_size is None:
        h = initial_step_size(fn, t0, y0, rtol=rtol, atol=atol, f0=f0,
                              order=tableau.error_order + 1, per_sample=per_sample)
        return f0, h, 2
    return f0, tf.fill(tf.shape(t0), tf.constant(first_step_size, y0.dtype)), 1


def _adaptive(fn, y0, tableau, *, t0, t1, rtol, atol, first_step_size, max_num_steps,
              jit_step=False, label="solve"):
    """An adaptive Runge-Kutta method as a differentiable ``tf.while_loop``.

    One error norm and one step size for the whole state (a batch shares them, as in
    TFP's and torchdiffeq's solvers); the step controller is torchdiffeq's (module
    docstring). TF backpropagates through the steps actually taken (accepted and
    rejected), so the gradient is exact for the function computed, whatever the
    tolerance, and costs no second ODE solve. The step-size controller is a
    stop-gradient (a control decision), as in `initial_step_size`.
    """
    dtype = y0.dtype
    t1_value = float(t1)
    t0 = tf.constant(t0, dtype)
    t1 = tf.constant(t1, dtype)
    f0, h, initial_nfe = _start(fn, t0, y0, tableau, rtol=rtol, atol=atol,
                                first_step_size=first_step_size, per_sample=False)
    max_steps = tf.constant(max_num_steps or 2**31 - 1, tf.int32)
    step = _step_function(fn, tableau, rtol=rtol, atol=atol, per_sample=False,
                          jit_step=jit_step)

    def body(t, y, f, h, accepted, rejected, finite):
        h = tf.minimum(h, t1 - t)
        y_new, f_new, ratio = step(t, y, f, h)
        finite = tf.math.is_finite(ratio)
        accept = finite & (ratio <= 1.0)
        factor = _step_factor(ratio, tableau.step_exponent)
        return (tf.where(accept, t + h, t), tf.where(accept, y_new, y),
                tf.where(accept, f_new, f), tf.stop_gradient(h * factor),
                accepted + tf.cast(accept, tf.int32), rejected + tf.cast(~accept, tf.int32),
                finite)

    # Stop a hair before t1 so float rounding cannot leave a step of size ~1e-8.
    t_end = t1 - 1e-6 * tf.abs(t1)

    def cond(t, y, f, h, accepted, rejected, finite):
        # A non-finite error (NaN/inf in a stage) cannot be fixed by a smaller step that
        # we could trust; end the loop at once so the check below reports it, instead of
        # burning max_num_steps rejected steps (or looping forever with no budget).
        return (t < t_end) & (accepted + rejected < max_steps) & finite

    zero = tf.constant(0, tf.int32)
    # A plain while_loop. Unrolling the first 10 steps as tf.cond-guarded steps was
    # measured slower to train and much slower to trace (see benchmarks/README.md).
    # maximum_iterations bounds the loop, which XLA needs to differentiate it.
    t, y, _, _, accepted, rejected, finite = tf.while_loop(
        cond, body, (t0, y0, f0, h, zero, zero, tf.constant(True)),
        maximum_iterations=max_num_steps)
    _assert_reached(t >= t_end, label, tableau, t1=t1_value, rtol=rtol, atol=atol,
                    max_num_steps=max_num_steps, steps=accepted + rejected, t=t, finite=finite)
    # XLA drops assertions (forward_fn compiles this loop): a solve that did not reach
    # t1 then returns NaN instead of a silently wrong state.
    y = y + tf.where(t >= t_end, tf.constant(0.0, dtype), tf.constant(math.nan, dtype))
    steps = accepted + rejected
    nfe = initial_nfe + steps * tableau.evaluations_per_step
    return y, SolveStats(nfe, steps, accepted, rejected)


def _adaptive_per_sample(fn, y0, tableau, *, t0, t1, rtol, atol, first_step_size,
                         max_num_steps, jit_step=False, label="solve"):
    """`_adaptive` with a time, step size and error norm per sample.

    One batched loop: every iteration evaluates ``fn`` on the whole batch at each
    sample's own time and step; a sample whose step is rejected keeps its state, and a
    sample that has reached ``t1`` takes steps of size 0 (its evaluations are wasted, the
    price of batching) until all have. The error norm of sample i is the RMS over its own
    elements only, so its accepted steps, and its solution, are those it would take alone
    (to float rounding of the batched kernels). NFE counts batched evaluations.
    """
    dtype = y0.dtype
    ndim = len(y0.shape)
    t1_ = tf.constant(t1, dtype)
    t = tf.fill(tf.shape(y0)[:1], tf.constant(t0, dtype))
    f0, h, initial_nfe = _start(fn, t, y0, tableau, rtol=rtol, atol=atol,
                                first_step_size=first_step_size, per_sample=True)
    max_steps = tf.constant(max_num_steps or 2**31 - 1, tf.int32)
    t_end = t1_ - 1e-6 * tf.abs(t1_)
    step = _step_function(fn, tableau, rtol=rtol, atol=atol, per_sample=True,
                          jit_step=jit_step)

    def body(t, y, f, h, accepted, rejected, iterations, finite):
        active = t < t_end
        h_step = tf.where(active, tf.minimum(h, t1_ - t), tf.zeros_like(h))
        y_new, f_new, ratio = step(t, y, f, h_step)
        ok = tf.math.is_finite(ratio)
        accept = active & ok & (ratio <= 1.0)
        factor = _step_factor(ratio, tableau.step_exponent)
        take = _per_sample(accept, ndim)
        return (tf.where(accept, t + h_step, t), tf.where(take, y_new, y),
                tf.where(take, f_new, f),
                tf.stop_gradient(tf.where(active, h_step * factor, h)),
                accepted + tf.cast(accept, tf.int32),
                rejected + tf.cast(active & ~accept, tf.int32), iterations + 1,
                # Any non-finite error ends the loop at once (see _adaptive).
                tf.reduce_all(ok | ~active))

    def cond(t, y, f, h, accepted, rejected, iterations, finite):
        return tf.reduce_any(t < t_end) & (iterations < max_steps) & finite

    counts = tf.zeros(tf.shape(t), tf.int32)
    t, y, _, _, accepted, rejected, steps, finite = tf.while_loop(
        cond, body, (t, y0, f0, h, counts, counts, tf.constant(0), tf.constant(True)),
        maximum_iterations=max_num_steps)
    _assert_reached(tf.reduce_min(t) >= t_end, label, tableau, t1=t1, rtol=rtol, atol=atol,
                    max_num_steps=max_num_steps, steps=steps, t=tf.reduce_min(t),
                    finite=finite)
    # Under XLA, which drops the assertion: NaN for each sample that did not reach t1.
    y = y + _per_sample(tf.where(t >= t_end, tf.constant(0.0, dtype),
                                 tf.constant(math.nan, dtype)), ndim)
    nfe = initial_nfe + steps * tableau.evaluations_per_step
    return y, SolveStats(nfe, steps, accepted, rejected)
