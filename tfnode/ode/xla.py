"""The XLA-compiled trial step of tfnode's adaptive loop (``jit_step``), and its cache.

`tfnode.ode.solving` compiles each step when asked (``jit_step=True``) and the batch size
is known; the switch that decides whether to ask is the caller's: `ODEBlock` asks unless
traced inside `tfnode.layers.no_xla`, which also turns off GroupNorm's compiled
normalization (so it lives with the layers, not here).
"""

import functools
import weakref

import tensorflow as tf


def step_function(rk_step, fn, tableau, *, rtol, atol, per_sample, jit_step):
    """``rk_step`` (the adaptive loop's trial step) for ``fn``, as one XLA-compiled
    function with ``jit_step``.

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

    Args:
      rk_step: ``rk_step(tableau, fn, t, y, f, h, *, rtol, atol, per_sample)``, one trial
        step (`tfnode.ode.adaptive_loop`).
      fn: the ODE function ``fn(t, y)``.
      tableau: the adaptive `Tableau`.
      rtol: relative tolerance.
      atol: absolute tolerance.
      per_sample: whether ``t`` and ``h`` are per sample (``[N]``).
      jit_step: whether to compile; without it, ``rk_step`` as it is.

    Returns:
      ``step(t, y, f, h) -> (y_new, f_new, ratio)``.
    """
    options = dict(rtol=rtol, atol=atol, per_sample=per_sample)
    if not jit_step:
        return functools.partial(rk_step, tableau, fn, **options)
    # One compiled function per (fn, tableau, options): a new tf.function per solve would
    # make every eager call (and every retrace) compile the step again. The cached
    # function holds fn weakly, so the cache does not keep fn (a layer and its weights)
    # alive.
    try:
        ref = weakref.ref(fn)
        cache = _JIT_STEPS.setdefault(fn, {})
    except TypeError:  # fn cannot be weakly referenced: no caching
        return tf.function(functools.partial(rk_step, tableau, fn, **options),
                           jit_compile=True)
    key = (tableau.name, float(rtol), float(atol), bool(per_sample))
    if key not in cache:
        cache[key] = tf.function(
            lambda t, y, f, h: rk_step(tableau, ref(), t, y, f, h, **options),
            jit_compile=True)
    return cache[key]


_JIT_STEPS = weakref.WeakKeyDictionary()
