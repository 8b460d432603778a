"""tfnode's adaptive loop (``bosh3``, ``dopri5``, ``tsit5``, ...): batched and per sample,
and its step-size control.

One ``tf.while_loop`` of trial steps with torchdiffeq's step controller (below),
differentiated through the steps it took (accepted and rejected): the exact gradient of
the computed function whatever the tolerance, and no second ODE solve. With
``per_sample_steps`` every sample keeps its own time, step and error norm. Each step can
run as one XLA-compiled function (`tfnode.ode.xla`).

Error control: error ratio = RMS over the state of
``err / (atol + rtol max(|y|, |y_new|))`` with ``err`` the embedded-pair estimate of the
tableau; accept if ratio <= 1; next step ``h * clip(0.9 ratio^(-1/(q+1)), lo, 10)`` for an
embedded order ``q``, with ``lo = 0.2`` after a rejected step and ``lo = 1`` after an
accepted one (an accepted step is never followed by a smaller one); the last step is
shortened to land on ``t1``. The norm, exponent and clamps are torchdiffeq's
(``_optimal_step_size``, ``_rms_norm``); the error weights are the tableau's (for
dopri5, Dormand and Prince's). TFP's DormandPrince differs in five ways: see
`tfnode.ode.adjoint`.

A solve that does not reach ``t1`` (``max_num_steps`` used up, or a non-finite state)
fails an assertion that names the block, the solver and the tolerances
(`tfnode.errors.SOLVER_FAILURE`), and under XLA, which drops assertions, returns NaN.
"""

import math

import tensorflow as tf

from tfnode import errors
from tfnode.ode import xla
from tfnode.ode.fixed import weighted
from tfnode.ode.stats import SolveStats

_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


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
        increment = weighted(hb, ai, ks)
        yi = y if increment is None else y + increment
        ks.append(fn(t + ci * h, yi))
    if tableau.fsal:  # the last stage was evaluated at the new solution yi
        y_new, f_new = yi, ks[-1]
    else:
        y_new = y + weighted(hb, tableau.b, ks)
        f_new = fn(t + h, y_new)
    err = weighted(hb, tableau.error, ks)
    scale = atol + rtol * tf.maximum(tf.abs(y), tf.abs(y_new))
    axes = list(range(1, len(y.shape))) if per_sample else None
    return y_new, f_new, tf.stop_gradient(_rms(err / scale, axes))


def _start(fn, t0, y0, tableau, *, rtol, atol, first_step_size, per_sample):
    """``(f0, h, initial_nfe)``: ``fn`` at the start and the first trial step."""
    f0 = fn(t0, y0)
    if first_step_size is None:
        h = initial_step_size(fn, t0, y0, rtol=rtol, atol=atol, f0=f0,
                              order=tableau.error_order + 1, per_sample=per_sample)
        return f0, h, 2
    return f0, tf.fill(tf.shape(t0), tf.constant(first_step_size, y0.dtype)), 1


def batch_loop(fn, y0, tableau, *, t0, t1, rtol, atol, first_step_size, max_num_steps,
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
    step = xla.step_function(_rk_step, fn, tableau, rtol=rtol, atol=atol, per_sample=False,
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


def per_sample_loop(fn, y0, tableau, *, t0, t1, rtol, atol, first_step_size,
                    max_num_steps, jit_step=False, label="solve"):
    """`batch_loop` with a time, step size and error norm per sample.

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
    step = xla.step_function(_rk_step, fn, tableau, rtol=rtol, atol=atol, per_sample=True,
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
                # Any non-finite error ends the loop at once (see batch_loop).
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
