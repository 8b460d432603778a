"""`ODEBlock`: a Keras layer that maps ``y0`` to the solution ``y(t1)`` of ``dy/dt = f(t, y)``."""

import keras
import tensorflow as tf

from tfnode import ode
from tfnode.layers.odefunc import ODEFunc, xla_enabled
from tfnode.layers.tiny import TinyConfig


def deserialize_sublayer(config, key):
    """A copy of a layer config with the serialized sub-layer at ``key`` rebuilt."""
    return {**config, key: keras.saving.deserialize_keras_object(config[key])}


def build_time_function(fn, input_shape):
    """Builds a layer with ``call(t, y)`` for ``y`` of ``input_shape``, whatever its build().

    ``t`` goes by keyword: Keras takes only tensors positionally, and a float ``t`` keeps
    the time out of the shapes that Keras hands to a one-argument ``build(input_shape)``.
    """
    if not fn.built:
        fn(t=0.0, y=keras.KerasTensor(input_shape))  # a symbolic call builds it


@keras.saving.register_keras_serializable(package="tfnode")
class SolveMetric(keras.metrics.Metric):
    """Mean of one solve statistic (NFE, accepted or rejected steps) per solve, plus the
    last value seen. A statistic given per sample (per-sample steps) counts as its mean
    over the batch."""

    def __init__(self, name="nfe", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")
        self.last = self.add_variable(shape=(), initializer="zeros", name="last")

    def update_state(self, value):
        value = tf.reduce_mean(tf.cast(value, self.dtype))
        self.total.assign_add(value)
        self.count.assign_add(1.0)
        self.last.assign(value)

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)


class _Caller:
    """``odefunc(t, y)`` under a name of its own (see `ODEBlock.call`)."""

    def __init__(self, odefunc):
        self.odefunc = odefunc

    def __call__(self, t, y):
        return self.odefunc(t, y)


@keras.saving.register_keras_serializable(package="tfnode")
class ODEBlock(keras.layers.Layer):
    """Solves ``dy/dt = odefunc(t, y)`` on ``[0, t1]`` from the layer input ``y(0)``.

    A Neural ODE block (Chen et al. 2018). With ``solver="euler"`` and ``step_size=h`` it
    is ``t1 / h`` weight-tied residual updates ``y + h f(t, y)``; a ResNet block is one
    of them with ``h = 1`` (Chu et al. 2020, Sec. 3).

    Each call's solve statistics are Keras metrics during ``fit``/``evaluate``: ``nfe``
    (function evaluations) and, where tfnode's adaptive loop solves, ``accepted_steps``
    and ``rejected_steps`` (means per solve; per sample with per-sample steps). A block
    not named ``ode_block`` prefixes them with its name. `nfe` and `stats` give the last
    call's values.

    Args:
      odefunc: a Keras layer whose ``call(t, y)`` returns ``dy/dt`` with ``y``'s shape.
      solver: a name in ``tfnode.ode.SOLVERS``: adaptive ``"dopri5"``,
        ``"tsit5"``, ``"bosh3"``, or fixed-step ``"rk4"``, ``"heun"``, ``"midpoint"``,
        ``"euler"``.
      rtol: relative tolerance of an adaptive solver.
      atol: absolute tolerance of an adaptive solver. TFP's default of 1e-6 costs many
        evaluations for no accuracy the classifier needs; 1e-3 is Chen et al.'s setting.
      t1: integration end time.
      first_step_size: first trial step of an adaptive solver; None (default) picks it
        with Hairer's rule (1 extra evaluation; 2 with TFP's solver, which evaluates
        ``f(t0)`` again) instead of TFP's fixed 1e-3.
      max_num_steps: trial-step budget of an adaptive solver; None is unbounded.
      step_size: step ``h`` of a fixed-step solver.
      gradient: how an adaptive solver is differentiated. ``"backprop"``: tfnode's own
        loop, differentiated through the steps it took: the exact gradient of the
        computed function, and on CPU the faster one to train with. Each of its steps
        runs as one XLA-compiled function, forward and backward, when the batch size is
        known (not inside `tfnode.layers.no_xla`, where it runs on TF's kernels: the same
        math). ``"adjoint"`` (dopri5 only): TFP's DormandPrince with its adjoint method
        (a backward ODE solve, as exact as the tolerances); its error control is not
        tfnode's (see `tfnode.ode.adjoint`), so it also computes a slightly
        different forward solution. None: ``"adjoint"`` for dopri5, ``"backprop"`` for
        the others. Fixed-step solvers always backpropagate.
      per_sample_steps: with tfnode's adaptive loop: every sample keeps its own time,
        step size and error norm, so its output does not depend on its batch-mates
        (TFP's solver, torchdiffeq's and the default share one step size and one error
        norm over the batch). ``odefunc`` is then called with one time per sample,
        ``t`` of shape ``[N]``. Costs evaluations: the batch loops until its slowest
        sample is done.
      **kwargs: standard layer arguments.
    """

    # The layer's default (TFP's adjoint dopri5) and the models' (tfnode's own loop, its
    # step XLA-compiled); tests/test_solvers.py runs the shared test for every solver.
    TINY_CONFIGS = (
        TinyConfig(lambda cls: cls(ODEFunc(4)), (5, 5, 4), label="adjoint"),
        TinyConfig(lambda cls: cls(ODEFunc(4), gradient="backprop"), (5, 5, 4),
                   label="backprop"),
    )

    def __init__(self, odefunc, *, solver="dopri5", rtol=1e-3, atol=1e-3, t1=1.0,
                 first_step_size=None, max_num_steps=1000, step_size=None, gradient=None,
                 per_sample_steps=False, **kwargs):
        kwargs.setdefault("name", "ode_block")
        super().__init__(**kwargs)
        ode.validate(solver=solver, rtol=rtol, atol=atol, t1=t1, step_size=step_size,
                     first_step_size=first_step_size, max_num_steps=max_num_steps,
                     gradient=gradient, per_sample_steps=per_sample_steps)
        self.odefunc = odefunc
        self.solver = solver
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.t1 = float(t1)
        self.first_step_size = None if first_step_size is None else float(first_step_size)
        self.max_num_steps = None if max_num_steps is None else int(max_num_steps)
        self.step_size = None if step_size is None else float(step_size)
        self.gradient = gradient
        self.per_sample_steps = bool(per_sample_steps)
        # Keras' jit_compile="auto" would XLA-compile fit on a GPU: TFP's adjoint solve
        # is much slower under XLA (issue 4; see benchmarks/README.md), so this layer
        # opts out.
        self.supports_jit = False
        prefix = "" if self.name == "ode_block" else f"{self.name}_"
        self.nfe_metric = SolveMetric(name=f"{prefix}nfe")
        # Accepted and rejected steps: only tfnode's adaptive loop counts them (a fixed
        # step solver rejects nothing; TFP does not report them).
        self.step_metrics = None
        if ode.adaptive(solver) and not ode.uses_tfp(solver, gradient):
            self.step_metrics = (SolveMetric(name=f"{prefix}accepted_steps"),
                                 SolveMetric(name=f"{prefix}rejected_steps"))
        # Not a tracked attribute: Keras need not see it (it holds no new weights).
        object.__setattr__(self, "_odefunc_callers", {})

    def build(self, input_shape):
        build_time_function(self.odefunc, input_shape)

    def call(self, inputs, training=None):
        # The XLA-compiled step of an adaptive solver is traced once per ODE function and
        # shape, then reused by every graph that solves with it, so whatever the function reads at
        # trace time must be part of that function's identity: Keras' training mode
        # (which nested layers such as Dropout inherit) gets one caller per value.
        jit_step = xla_enabled() and isinstance(training, (bool, type(None)))
        fn = self.odefunc
        if jit_step:
            fn = self._odefunc_callers.setdefault(training, _Caller(self.odefunc))
        y1, stats = ode.solve(
            fn, inputs, solver=self.solver, t1=self.t1, rtol=self.rtol,
            atol=self.atol, first_step_size=self.first_step_size,
            max_num_steps=self.max_num_steps, step_size=self.step_size,
            gradient=self.gradient, per_sample_steps=self.per_sample_steps,
            jit_step=jit_step, label=f"ODE block {self.name!r}")
        self.nfe_metric.update_state(stats.nfe)
        if self.step_metrics:
            self.step_metrics[0].update_state(stats.accepted)
            self.step_metrics[1].update_state(stats.rejected)
        return y1

    @property
    def nfe(self):
        """Function evaluations of the last call (an int)."""
        return int(self.nfe_metric.last.numpy())

    @property
    def stats(self):
        """The last call's statistics: ``nfe`` and, where counted, ``accepted_steps`` and
        ``rejected_steps`` (means over the batch with per-sample steps)."""
        stats = {"nfe": float(self.nfe_metric.last.numpy())}
        for metric, key in zip(self.step_metrics or (), ("accepted_steps", "rejected_steps")):
            stats[key] = float(metric.last.numpy())
        return stats

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            odefunc=keras.saving.serialize_keras_object(self.odefunc), solver=self.solver,
            rtol=self.rtol, atol=self.atol, t1=self.t1, first_step_size=self.first_step_size,
            max_num_steps=self.max_num_steps, step_size=self.step_size,
            gradient=self.gradient, per_sample_steps=self.per_sample_steps)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_sublayer(config, "odefunc"))
