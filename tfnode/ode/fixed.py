"""The fixed-step loop (``euler``, ``midpoint``, ``heun``, ``rk4``, ...), and the stage sum
that every explicit Runge-Kutta step of `tfnode.ode` is made of.

``t1 / step_size`` steps, the last one shortened to land on ``t1``, differentiated by
backpropagating through them (the exact gradient of what is computed). A ResNet block
``y + h f(y)`` is one Euler step with step ``h``.
"""

import math

import tensorflow as tf

from tfnode.ode.stats import SolveStats

# Above this many steps the fixed-step loop is a tf.while_loop instead of unrolled ops,
# so that a small h does not build a huge graph.
_MAX_UNROLL = 8


def num_fixed_steps(t1, step_size, t0=0.0):
    """Steps of size ``step_size`` to go from t0 to t1 (the last one may be shorter)."""
    # The 1e-9 slack keeps t1/h = 10.000000001 (float rounding) at 10 steps.
    return max(1, math.ceil((t1 - t0) / step_size - 1e-9))


def weighted(h, weights, ks):
    """``h * sum_i w_i k_i`` over the nonzero weights (None if all are zero)."""
    terms = [w * k for w, k in zip(weights, ks) if w]
    return h * tf.add_n(terms) if terms else None


def fixed_step(fn, y0, tableau, *, t0, t1, step_size):
    """Integrates ``dy/dt = fn(t, y)`` from ``t0`` to ``t1`` with the fixed-step
    ``tableau``; returns ``(y1, SolveStats)``."""
    n = num_fixed_steps(t1, step_size, t0)
    dtype = y0.dtype

    def step(t, y, h):
        ks = []
        for i, ci in enumerate(tableau.c):
            increment = weighted(h, tableau.a[i - 1], ks) if i else None
            ks.append(fn(t + ci * h, y if increment is None else y + increment))
        return y + weighted(h, tableau.b, ks)

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
