"""ODE solvers behind `ODEBlock`, chosen by name from `SOLVERS`.

* ``"dopri5"``: TFP's ``tfp.math.ode.DormandPrince`` (adaptive Dormand-Prince 5(4),
  Dormand & Prince 1980). Note two properties of TFP's implementation that matter for
  robustness work: its gradient is always the adjoint method (Chen et al. 2018), i.e. a
  second ODE solve backwards in time, only as exact as the tolerances; and its step-size
  controller uses ONE RMS error norm over the whole state, so with a batch as the state
  each sample's steps (and hence its logits) depend on the other samples in the batch.
* ``"rk4"``, ``"euler"``: fixed-step explicit Runge-Kutta methods with step ``step_size``;
  differentiated by backpropagating through the steps (exact gradient of what is
  computed). A ResNet block ``y + h f(y)`` is one Euler step with step ``h``.

Every solver returns the state at ``t1`` and the number of ``fn`` evaluations it made.
"""

import functools
import math
import weakref

import tensorflow as tf
import tensorflow_probability as tfp

from tfnode.errors import TfnodeError

# Butcher tableaux (a, b, c) of the fixed-step methods.
_TABLEAUX = {
    "euler": ((), (1.0,), (0.0,)),
    "rk4": (((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
            (1 / 6, 1 / 3, 1 / 3, 1 / 6),
            (0.0, 0.5, 0.5, 1.0)),
}
ADAPTIVE = ("dopri5",)
GRADIENTS = ("adjoint", "backprop")
FIXED_STEP = tuple(_TABLEAUX)
SOLVERS = ADAPTIVE + FIXED_STEP
# Above this many steps the fixed-step loop is a tf.while_loop instead of unrolled ops,
# so that a small h does not build a huge graph.
_MAX_UNROLL = 8


def validate(*, solver, rtol, atol, t1, step_size, first_step_size, max_num_steps,
             gradient=None, per_sample_steps=False):
    """Raises `TfnodeError` (one line) for solver options that cannot work."""
    if per_sample_steps and solver in ADAPTIVE and gradient != "backprop":
        raise TfnodeError("per_sample_steps=True needs gradient='backprop' (tfnode's dopri5 "
                          "loop): TFP's DormandPrince has one step size for the whole batch")
    if solver not in SOLVERS:
        raise TfnodeError(f"unknown solver {solver!r}; expected one of {list(SOLVERS)}")
    if gradient is not None and gradient not in GRADIENTS:
        raise TfnodeError(f"unknown gradient {gradient!r}; expected one of {list(GRADIENTS)}")
    if gradient == "adjoint" and solver not in ADAPTIVE:
        raise TfnodeError(f"gradient='adjoint' needs an adaptive solver {list(ADAPTIVE)}; "
                          f"{solver!r} backpropagates through its steps")
    if not float(t1) > 0:
        raise TfnodeError(f"t1 must be > 0, got {t1!r}")
    if solver in ADAPTIVE:
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
          per_sample_steps=False, jit_step=False):
    """Integrates ``dy/dt = fn(t, y)`` from ``t0`` to ``t1``.

    Args:
      fn: callable ``fn(t, y) -> dy/dt`` with ``t`` a float32 scalar tensor (``[N]``
        with ``per_sample_steps``).
      y0: initial state tensor (float32).
      solver: a name in `SOLVERS`.
      t0: initial time.
      t1: final time.
      rtol: relative tolerance (adaptive solvers).
      atol: absolute tolerance (adaptive solvers).
      first_step_size: first trial step of an adaptive solver; None picks it with
        Hairer's rule from two extra evaluations of ``fn`` (counted in the NFE).
      max_num_steps: step budget of an adaptive solver (None: unbounded).
      step_size: step of a fixed-step solver.
      gradient: ``"adjoint"`` (TFP's DormandPrince; the default for dopri5) or
        ``"backprop"`` (tfnode's own dopri5 loop, differentiated through its steps; the
        only choice for fixed-step solvers).
      per_sample_steps: with dopri5 and ``gradient="backprop"``, every sample (index 0
        of ``y0``) keeps its own time, step size and error norm, so its solution does
        not depend on the rest of the batch; ``fn`` is then called with a time per
        sample (``t`` of shape ``[N]``). Fixed-step solvers are batch-independent anyway.
      jit_step: with dopri5 and ``gradient="backprop"``, run each step (its six
        evaluations of ``fn``) as one XLA-compiled function, forward and backward, if
        the batch size (``y0.shape[0]``) is known; the same math, faster on CPU (see
        `_step_function`). ``fn`` must then be XLA-compilable.

    Returns:
      ``(y1, nfe)``: the state at ``t1`` and the number of ``fn`` evaluations (int32).
    """
    validate(solver=solver, rtol=rtol, atol=atol, t1=t1 - t0, step_size=step_size,
             first_step_size=first_step_size, max_num_steps=max_num_steps, gradient=gradient,
             per_sample_steps=per_sample_steps)
    # XLA compiles per concrete shape: in a graph relaxed to an unknown batch size (as
    # Square and Boundary query shrinking subsets) it would compile a step for every new
    # size, and the compiled step ran slower there too (see tfnode.attacks.logits_fn).
    jit_step = jit_step and y0.shape[0] is not None
    if solver in ADAPTIVE and per_sample_steps:
        return _dopri5_per_sample(fn, y0, t0=t0, t1=t1, rtol=rtol, atol=atol,
                                  first_step_size=first_step_size, max_num_steps=max_num_steps,
                                  jit_step=jit_step)
    if solver in ADAPTIVE and gradient == "backprop":
        return _dopri5_backprop(fn, y0, t0=t0, t1=t1, rtol=rtol, atol=atol,
                                first_step_size=first_step_size, max_num_steps=max_num_steps,
                                jit_step=jit_step)
    if solver in ADAPTIVE:
        return _dopri5_tfp(fn, y0, t0=t0, t1=t1, rtol=rtol, atol=atol,
                           first_step_size=first_step_size, max_num_steps=max_num_steps)
    return _fixed_step(fn, y0, _TABLEAUX[solver], t0=t0, t1=t1, step_size=step_size)


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
    rule lands close to the step the controller settles on. The result is a
    stop-gradient: the step size is a control choice, not part of the model's math.
    With ``per_sample`` (``t0`` of shape ``[N]``), one step per sample of ``y0``.
    """
    y0 = tf.stop_gradient(y0)
    t0 = tf.convert_to_tensor(t0, y0.dtype)
    axes = list(range(1, len(y0.shape))) if per_sample else None
    expand = (lambda v: _per_sample(v, len(y0.shape))) if per_sample else (lambda v: v)
    scale = atol + tf.abs(y0) * rtol
    f0 = tf.stop_gradient(fn(t0, y0) if f0 is None else f0)
    d0, d1 = _rms(y0 / scale, axes), _rms(f0 / scale, axes)
    h0 = tf.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
    f1 = tf.stop_gradient(fn(t0 + h0, y0 + expand(h0) * f0))
    d2 = _rms((f1 - f0) / scale, axes) / h0
    h1 = tf.where(tf.maximum(d1, d2) <= 1e-15, tf.maximum(1e-6, h0 * 1e-3),
                  (0.01 / tf.maximum(d1, d2)) ** (1.0 / order))
    return tf.minimum(100 * h0, h1)


def _dopri5_tfp(fn, y0, *, t0, t1, rtol, atol, first_step_size, max_num_steps):
    extra_nfe = 0
    if first_step_size is None:
        first_step_size = initial_step_size(fn, t0, y0, rtol=rtol, atol=atol)
        extra_nfe = 2
    ode = tfp.math.ode.DormandPrince(rtol=rtol, atol=atol, first_step_size=first_step_size,
                                     max_num_steps=max_num_steps)
    results = ode.solve(fn, t0, y0, solution_times=[t1])
    nfe = tf.cast(results.diagnostics.num_ode_fn_evaluations, tf.int32) + extra_nfe
    return results.states[-1], nfe


def _fixed_step(fn, y0, tableau, *, t0, t1, step_size):
    a, b, c = tableau
    n = num_fixed_steps(t1, step_size, t0)

    def step(t, y, h):
        ks = []
        for i, ci in enumerate(c):
            yi = y
            for aij, k in zip(a[i - 1] if i else (), ks):
                if aij:
                    yi = yi + (h * aij) * k
            ks.append(fn(t + ci * h, yi))
        return y + h * tf.add_n([bi * k for bi, k in zip(b, ks)])

    def h_at(i):
        # Every step is step_size except the last, which lands exactly on t1.
        return tf.minimum(tf.constant(step_size, tf.float32), t1 - (t0 + i * step_size))

    t0_ = tf.constant(t0, tf.float32)
    if n <= _MAX_UNROLL:
        y = y0
        for i in range(n):
            y = step(t0_ + i * step_size, y, h_at(float(i)))
    else:
        def body(i, y):
            fi = tf.cast(i, tf.float32)
            return i + 1, step(t0_ + fi * step_size, y, h_at(fi))

        _, y = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), y0),
                             maximum_iterations=n)
    return y, tf.constant(n * len(c), tf.int32)


# Dormand & Prince (1980) 5(4) tableau; the 7th stage is FSAL (first same as last).
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
# Error weights: 5th-order weights (= last row of A, then 0) minus the 4th-order ones.
_DP_E = tuple(b - bs for b, bs in zip(
    _DP_A[-1] + (0.0,),
    (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)))
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


def _step_factor(ratio):
    """Next step / this step from the error ratio (error norm / tolerance).

    ``0.9 ratio^(-1/5)`` clipped to [0.2, 10], except that an accepted step (ratio < 1)
    is never followed by a smaller one: torchdiffeq's rule (TFP's controller may shrink
    the step after an accepted step whose ratio is close to 1). A next step that is too
    long is simply rejected, so the tolerance is met either way; the rule is kept so
    that tfnode and torchdiffeq take the same steps where their error estimates agree
    (benchmarks/ode_block.py checks exactly that).
    """
    factor = _SAFETY * tf.math.pow(tf.maximum(ratio, 1e-10), -0.2)
    return tf.clip_by_value(factor, tf.where(ratio < 1.0, 1.0, _MIN_FACTOR), _MAX_FACTOR)


def _dp_step(fn, t, y, f, h, *, rtol, atol, per_sample):
    """One Dormand-Prince 5(4) trial step from ``(t, y)``, with ``f = fn(t, y)`` (FSAL).

    Returns ``(y_new, f_new, ratio)``: the 5th-order solution at ``t + h``, ``fn`` there
    (the next step's first stage if this one is accepted), and the stop-gradient error
    ratio (RMS of error / tolerance scale; one per sample with ``per_sample``, where ``t``
    and ``h`` are ``[N]``).
    """
    # No gradient flows to the times (the controller's steps are stop-gradients and t0
    # a constant); saying so spares the compiled backward step their reductions.
    t, h = tf.stop_gradient(t), tf.stop_gradient(h)
    hb = _per_sample(h, len(y.shape)) if per_sample else h
    ks = [f]
    for ci, ai in zip(_DP_C[1:], _DP_A):
        yi = y + hb * tf.add_n([a * k for a, k in zip(ai, ks) if a])
        ks.append(fn(t + ci * h, yi))
    # The 7th stage was evaluated at the 5th-order solution yi (FSAL).
    err = hb * tf.add_n([e * k for e, k in zip(_DP_E, ks) if e])
    scale = atol + rtol * tf.maximum(tf.abs(y), tf.abs(yi))
    axes = list(range(1, len(y.shape))) if per_sample else None
    return yi, ks[-1], tf.stop_gradient(_rms(err / scale, axes))


def _step_function(fn, *, rtol, atol, per_sample, jit_step):
    """`_dp_step` for ``fn``, as one XLA-compiled function with ``jit_step``.

    Why XLA per step and not per loop: XLA compiles a whole step (six evaluations of
    ``fn`` and the stage sums) and its gradient well on CPU, fusing the stage sums and
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
        return functools.partial(_dp_step, fn, **options)
    # One compiled function per (fn, options): a new tf.function per solve would make
    # every eager call (and every retrace) compile the step again. The cached function
    # holds fn weakly, so the cache does not keep fn (a layer and its weights) alive.
    try:
        ref = weakref.ref(fn)
        cache = _JIT_STEPS.setdefault(fn, {})
    except TypeError:  # fn cannot be weakly referenced: no caching
        return tf.function(functools.partial(_dp_step, fn, **options), jit_compile=True)
    key = (float(rtol), float(atol), bool(per_sample))
    if key not in cache:
        cache[key] = tf.function(lambda t, y, f, h: _dp_step(ref(), t, y, f, h, **options),
                                 jit_compile=True)
    return cache[key]


_JIT_STEPS = weakref.WeakKeyDictionary()


def _dopri5_backprop(fn, y0, *, t0, t1, rtol, atol, first_step_size, max_num_steps,
                     jit_step=False):
    """Adaptive Dormand-Prince 5(4) as a differentiable ``tf.while_loop``.

    Same method and error norm as TFP's DormandPrince (one RMS error norm over the
    whole state, safety 0.9, step factor in [0.2, 10], but no shrinking after an
    accepted step, as torchdiffeq: `_step_factor`); the difference is the gradient:
    TF backpropagates through the steps actually taken (accepted and rejected), so the
    gradient is exact for the function computed, whatever the tolerance, and costs no
    second ODE solve. The step-size controller is a stop-gradient (a control decision),
    as in `initial_step_size`.
    """
    dtype = y0.dtype
    t0 = tf.constant(t0, dtype)
    t1 = tf.constant(t1, dtype)
    f0 = fn(t0, y0)
    nfe = tf.constant(1, tf.int32)
    if first_step_size is None:
        h = initial_step_size(fn, t0, y0, rtol=rtol, atol=atol, f0=f0)
        nfe += 1
    else:
        h = tf.constant(first_step_size, dtype)
    max_steps = tf.constant(max_num_steps or 2**31 - 1, tf.int32)
    step = _step_function(fn, rtol=rtol, atol=atol, per_sample=False, jit_step=jit_step)

    def body(t, y, f, h, nfe, steps):
        h = tf.minimum(h, t1 - t)
        y_new, f_new, ratio = step(t, y, f, h)
        finite = tf.math.is_finite(ratio)
        accept = finite & (ratio <= 1.0)
        factor = _step_factor(ratio)
        # A non-finite error (NaN/inf in a stage) cannot be fixed by a smaller step that
        # we could trust; end the loop at once so the check below reports it, instead of
        # burning max_num_steps rejected steps (or looping forever with no budget).
        steps = tf.where(finite, steps + 1, max_steps)
        return (tf.where(accept, t + h, t), tf.where(accept, y_new, y),
                tf.where(accept, f_new, f), tf.stop_gradient(h * factor), nfe + 6, steps)

    # Stop a hair before t1 so float rounding cannot leave a step of size ~1e-8.
    t_end = t1 - 1e-6 * tf.abs(t1)
    cond = lambda t, y, f, h, nfe, steps: (t < t_end) & (steps < max_steps)  # noqa: E731
    state = (t0, y0, f0, h, nfe, tf.constant(0, tf.int32))
    # A plain while_loop. Unrolling the first 10 steps as tf.cond-guarded steps was
    # measured slower to train and much slower to trace (see benchmarks/README.md).
    # maximum_iterations bounds the loop, which XLA needs to differentiate it.
    t, y, _, _, nfe, steps = tf.while_loop(
        cond, body, state, maximum_iterations=max_num_steps)
    tf.debugging.assert_greater_equal(t, t_end, message=(
        "dopri5 did not reach t1: max_num_steps used up, or the state became non-finite; "
        "raise max_num_steps or rtol/atol, or check the inputs"))
    # XLA drops assertions (forward_fn compiles this loop): a solve that did not reach
    # t1 then returns NaN instead of a silently wrong state.
    return y + tf.where(t >= t_end, 0.0, float("nan")), nfe


def _dopri5_per_sample(fn, y0, *, t0, t1, rtol, atol, first_step_size, max_num_steps,
                       jit_step=False):
    """`_dopri5_backprop` with a time, step size and error norm per sample.

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
    f0 = fn(t, y0)
    nfe = tf.constant(1, tf.int32)
    if first_step_size is None:
        h = initial_step_size(fn, t, y0, rtol=rtol, atol=atol, f0=f0, per_sample=True)
        nfe += 1
    else:
        h = tf.fill(tf.shape(t), tf.constant(first_step_size, dtype))
    max_steps = tf.constant(max_num_steps or 2**31 - 1, tf.int32)
    t_end = t1_ - 1e-6 * tf.abs(t1_)
    step = _step_function(fn, rtol=rtol, atol=atol, per_sample=True, jit_step=jit_step)

    def body(t, y, f, h, nfe, steps):
        active = t < t_end
        h_step = tf.where(active, tf.minimum(h, t1_ - t), 0.0)
        y_new, f_new, ratio = step(t, y, f, h_step)
        finite = tf.math.is_finite(ratio)
        accept = active & finite & (ratio <= 1.0)
        factor = _step_factor(ratio)
        # Any non-finite error ends the loop at once (see _dopri5_backprop).
        steps = tf.where(tf.reduce_all(finite | ~active), steps + 1, max_steps)
        take = _per_sample(accept, ndim)
        return (tf.where(accept, t + h_step, t), tf.where(take, y_new, y),
                tf.where(take, f_new, f),
                tf.stop_gradient(tf.where(active, h_step * factor, h)), nfe + 6, steps)

    cond = lambda t, y, f, h, nfe, steps: (  # noqa: E731
        tf.reduce_any(t < t_end) & (steps < max_steps))
    t, y, _, _, nfe, _ = tf.while_loop(cond, body, (t, y0, f0, h, nfe, tf.constant(0, tf.int32)),
                                       maximum_iterations=max_num_steps)
    tf.debugging.assert_greater_equal(tf.reduce_min(t), t_end, message=(
        "dopri5 did not reach t1 for every sample: max_num_steps used up, or a state "
        "became non-finite; raise max_num_steps or rtol/atol, or check the inputs"))
    # Under XLA, which drops the assertion: NaN for each sample that did not reach t1.
    return y + _per_sample(tf.where(t >= t_end, 0.0, float("nan")), ndim), nfe
