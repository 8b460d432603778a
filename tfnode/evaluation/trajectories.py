"""The paper's bound, measured: how an input perturbation grows through the network.

Chu et al. 2020 (Theorems 3.1 and 3.2) bound the distance between the hidden states of
a clean input and a perturbed one, ``|z(t) - y(t)| <= c |eps|``, and argue that an
ODE-Net's small steps keep ``c`` small, unlike a ResNet's unit steps. This module
measures it: for clean ``x`` and ``x + delta``, the hidden state along the ODE
trajectory (at ``num_times`` evenly spaced times of ``[0, t1]``), or after each residual
block of a ResNet, and per sample

* ``growth``: ``|z - y| / |z(0) - y(0)|``, the perturbation at depth relative to where
  it entered the ODE block or the first residual block (the theorems' ``c``);
* ``per_input``: ``|z - y| / |delta|``, relative to the input perturbation;
* ``lipschitz``: ``|f(t, z) - f(t, y)| / |z - y|`` at the recorded points, an empirical
  lower bound on the Lipschitz constant of the ODE (or residual) function along the
  trajectories that the theorems' constants grow with.

All norms are per-sample L2 norms over every element. The ODE trajectory is solved
segment by segment (``[t_k, t_k+1]``) with the block's own solver options: for an
adaptive solver the points are solutions to the block's tolerance, not the model's
exact steps; for a fixed-step solver the segments are whole numbers of its steps, so
the points lie on the model's own step grid.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfnode import ode
from tfnode.evaluation import outcomes
from tfnode.layers import ODEBlock, SchemeBlock, sublayers
from tfnode.layers.odefunc import xla_enabled


def stages(model):
    """``("ode", block)`` or ``("residual", [blocks])`` for a model, or None if neither."""
    found = sublayers(model)
    odes = [layer for layer in found if isinstance(layer, ODEBlock)]
    if len(odes) == 1:
        return "ode", odes[0]
    residual = [layer for layer in found if isinstance(layer, SchemeBlock)]
    if residual and not odes:
        return "residual", residual
    return None


def _norms(a):
    return np.sqrt(np.sum(np.square(a.reshape(len(a), -1)), axis=1))


def _ratio(num, den):
    return num / np.maximum(den, 1e-12)


def measure(model, x, x_pert, *, num_times=11, batch_size=100):
    """Per-sample growth of ``x_pert - x`` along the model's ODE block or residual blocks.

    Args:
      model: a Keras model with exactly one `ODEBlock`, or with `SchemeBlock` layers
        (ResNet, PolyNet, Heun, FractalNet, RevNet blocks).
      x: clean inputs (numpy float32).
      x_pert: perturbed inputs of the same shape.
      num_times: recorded times of an ODE block (evenly spaced on ``[0, t1]``).
      batch_size: batch size of the model calls.

    Returns:
      A dict with ``kind`` (``"ode"`` or ``"residual"``), ``positions`` (times, or block
      indices 0..B with 0 the first block's input), and per-sample arrays ``growth``,
      ``per_input`` ``[N, len(positions)]`` and ``lipschitz`` ``[N, len(positions)]``
      (of block k's update direction `SchemeBlock.increment` at its input, for a ResNet
      its residual function; the last column NaN).

    Raises:
      ValueError: the model has neither one ODE block nor residual blocks.
    """
    kind = stages(model)
    if kind is None:
        raise ValueError("trajectories need a model with one ODEBlock or with scheme blocks")
    kind, found = kind
    delta = _norms(np.asarray(x_pert, np.float32) - np.asarray(x, np.float32))
    if kind == "ode":
        positions, states, lipschitz = _ode_states(found, model, x, x_pert, num_times,
                                                   batch_size)
    else:
        positions, states, lipschitz = _residual_states(found, model, x, x_pert, batch_size)
    dist = np.stack([_norms(z - y) for y, z in states], axis=1)
    return {"kind": kind, "positions": positions, "growth": _ratio(dist, dist[:, :1]),
            "per_input": _ratio(dist, delta[:, None]), "lipschitz": lipschitz,
            "input_l2": delta}


def _batched(fn, *arrays, batch_size):
    outs = [fn(*(tf.constant(a[i:i + batch_size]) for a in arrays))
            for i in range(0, len(arrays[0]), batch_size)]
    return np.concatenate([np.asarray(o) for o in outs])


def _ode_states(block, model, x, x_pert, num_times, batch_size):
    pre = keras.Model(model.inputs, block.input)
    func = block.odefunc
    times = np.linspace(0.0, block.t1, num_times)
    if not ode.adaptive(block.solver):
        # Record on the model's own step grid (whole numbers of its steps per segment):
        # segments of another length would cut its steps, i.e. measure another network.
        h = block.step_size
        per_segment = math.ceil(ode.num_fixed_steps(block.t1, h) / (num_times - 1))
        times = np.arange(0.0, block.t1 - 1e-9, per_segment * h).tolist() + [block.t1]
    opts = dict(solver=block.solver, rtol=block.rtol, atol=block.atol,
                first_step_size=block.first_step_size, max_num_steps=block.max_num_steps,
                step_size=block.step_size, gradient=block.gradient,
                per_sample_steps=block.per_sample_steps, jit_step=xla_enabled())

    def segment(t0, t1):
        # func itself, the same object at every call: its compiled solver step is reused.
        return tf.function(lambda y: ode.solve(func, y, t0=t0, t1=t1, **opts)[0])

    def rate(t):
        return tf.function(lambda y: func(t=tf.constant(t, tf.float32), y=y))

    ys = [_batched(pre, x, batch_size=batch_size), _batched(pre, x_pert, batch_size=batch_size)]
    states = [tuple(ys)]
    for t0, t1 in zip(times[:-1], times[1:]):
        step = segment(float(t0), float(t1))
        ys = [_batched(step, y, batch_size=batch_size) for y in ys]
        states.append(tuple(ys))
    lipschitz = []
    for t, (y, z) in zip(times, states):
        f = rate(float(t))
        fy, fz = _batched(f, y, batch_size=batch_size), _batched(f, z, batch_size=batch_size)
        lipschitz.append(_ratio(_norms(fz - fy), _norms(z - y)))
    return [float(t) for t in times], states, np.stack(lipschitz, axis=1)


def _residual_states(blocks, model, x, x_pert, batch_size):
    taps = keras.Model(model.inputs, [blocks[0].input] + [b.output for b in blocks])
    outs = [taps.predict(v, batch_size=batch_size, verbose=0) for v in (x, x_pert)]
    states = list(zip(outs[0], outs[1]))
    lipschitz = []
    for b, (y, z) in zip(blocks, states):
        f = tf.function(lambda v, b=b: b.increment(v))
        fy, fz = _batched(f, y, batch_size=batch_size), _batched(f, z, batch_size=batch_size)
        lipschitz.append(_ratio(_norms(fz - fy), _norms(z - y)))
    lipschitz.append(np.full(len(x), np.nan))
    return list(range(len(blocks) + 1)), states, np.stack(lipschitz, axis=1)


def summarize(result):
    """Medians and maxima over samples, per position, of a `measure` result (for reports)."""
    out = {"kind": result["kind"], "positions": result["positions"],
           "input_l2_median": float(np.median(result["input_l2"]))}
    for key in ("growth", "per_input", "lipschitz"):
        values = result[key]
        finite = ~np.isnan(values).all(axis=0)
        out[f"{key}_median"] = [float(np.median(v)) if ok else None
                                for v, ok in zip(values.T, finite)]
        out[f"{key}_max"] = [float(np.max(v)) if ok else None for v, ok in zip(values.T, finite)]
    return out


def report_entry(model, info, x, eps, *, craft, batch_size, seed):
    """The evaluation report's ``trajectories``: `summarize` d `measure` ments of
    random-sign and PGD perturbations of each eps.

    Args:
      model: the Keras model.
      info: its `tfnode.exports.read.load_model` info.
      x: clean images.
      eps: budgets.
      craft: ``craft(model, eps, title) -> x_adv``, the evaluation's PGD.
      batch_size: batch size of the measurements.
      seed: seed of the random signs.

    Returns:
      ``{eps_key: {"random": summary, "pgd": summary}}``, or ``{"skipped": why}``.
    """
    if info.get("format") != "keras":
        return {"skipped": "needs a Keras model (a bare SavedModel has no hidden states)"}
    if stages(model) is None:
        return {"skipped": "needs a Keras model with one ODEBlock or with scheme blocks"}
    rng = np.random.default_rng(seed)
    out = {}
    for e in eps:
        random_x = np.clip(x + e * rng.choice([-1.0, 1.0], size=x.shape), 0, 1).astype(x.dtype)
        adv_x = craft(model, e, "trajectories, pgd")
        out[outcomes.eps_key(e)] = {
            kind: summarize(measure(model, x, pert, batch_size=batch_size))
            for kind, pert in (("random", random_x), ("pgd", adv_x))}
    return out
