"""RNODE's kinetic-energy and Jacobian-norm regularizer (Finlay, Jacobsen, Nurbekyan &
Oberman, "How to train your neural ODE", ICML 2020; their code: cfinlay/ffjord-rnode).

Along each ODE block's trajectory ``dz/dt = f(t, z)`` it integrates, per sample,

    kinetic energy   K = int 0.5 * mean(f(t, z)^2) dt
    Jacobian norm    J = int mean((e^T df/dz)^2) dt     (Hutchinson: E ||e^T J||^2 = ||J||_F^2)

as two extra components of the solved state, so the block's own solver (fixed-step or
adaptive, whose error control then also sees them) integrates them on the same steps;
``e`` is one standard normal draw per solve, as in their code, and the means are over the
state's elements, as theirs are. A skip-connection block ``y + h Phi(y)`` (a ResNet block,
the other schemes) adds ``h`` times the same two terms of ``Phi`` at ``y``: one Euler step
of the integrals. The penalty is ``kinetic_energy * mean_batch(sum K) + jacobian_norm2 *
mean_batch(sum J)``, their two coefficients (0.01 each in their MNIST runs).
"""

import keras
import numpy as np
import tensorflow as tf

from tfnode import layers, ode
from tfnode.errors import ConfigError
from tfnode.registry import NONNEGATIVE
from tfnode.training.regularizers import registry


def _terms(fn, t, z, e):
    """``(f, K', J')``: ``f = fn(t, z)`` and the per-sample integrands at ``z``."""
    with tf.GradientTape() as tape:
        tape.watch(z)
        dz = fn(t, z)
    # A vector-Jacobian product, differentiable in the weights (the outer tape records it).
    e_jac = tape.gradient(dz, z, output_gradients=e)
    axes = list(range(1, len(z.shape)))
    return (dz, 0.5 * tf.reduce_mean(tf.square(dz), axis=axes),
            tf.reduce_mean(tf.square(e_jac), axis=axes))


def _ode_block(block, z0, seed):
    """The block's solve with ``(K, J)`` appended to the flattened state."""
    shape = [-1] + list(z0.shape[1:])
    size = int(np.prod(z0.shape[1:]))
    e = keras.random.normal(tf.shape(z0), seed=seed, dtype=z0.dtype)

    def augmented(t, y):
        dz, kinetic, jacobian = _terms(block.odefunc, t, tf.reshape(y[:, :size], shape), e)
        return tf.concat([tf.reshape(dz, [-1, size]), kinetic[:, None], jacobian[:, None]], 1)

    y0 = tf.concat([tf.reshape(z0, [-1, size]), tf.zeros([tf.shape(z0)[0], 2], z0.dtype)], 1)
    y1, _ = ode.solve(augmented, y0, solver=block.solver, t1=block.t1, rtol=block.rtol,
                      atol=block.atol, first_step_size=block.first_step_size,
                      max_num_steps=block.max_num_steps, step_size=block.step_size,
                      gradient=block.gradient, per_sample_steps=block.per_sample_steps,
                      label=f"ODE block {block.name!r} (kinetic_jacobian)")
    return tf.reshape(y1[:, :size], shape), y1[:, size], y1[:, size + 1]


def _scheme_block(block, y, seed):
    """``y + h Phi(y)`` and ``h`` times the integrands of ``Phi`` at ``y``."""
    e = keras.random.normal(tf.shape(y), seed=seed, dtype=y.dtype)
    phi, kinetic, jacobian = _terms(lambda _, z: block.increment(z), None, y, e)
    h = block.step_size
    return y + h * phi, h * kinetic, h * jacobian


def walk(model, x, seed):
    """``(logits, K, J)``: ``model`` on ``x`` in training mode, and the per-sample sums of
    the two integrals over its ODE and skip-connection blocks.

    Raises:
      ConfigError: the model has no such block (nothing to regularize), or is not a
        functional Keras model.
    """
    totals = []

    def apply(layer, *args, **kwargs):
        if isinstance(layer, layers.ODEBlock):
            out, kinetic, jacobian = _ode_block(layer, args[0], seed)
        elif isinstance(layer, layers.SchemeBlock):
            out, kinetic, jacobian = _scheme_block(layer, args[0], seed)
        else:
            kwargs["training"] = True
            return layer(*args, **kwargs)
        totals.append((kinetic, jacobian))
        return out

    check_model(model)
    logits = layers.through_graph(model, x, apply)
    return logits, tf.add_n([k for k, _ in totals]), tf.add_n([j for _, j in totals])


def check_model(model):
    """Raises a one-line `ConfigError` for a model with nothing to regularize (no ODE block
    or skip-connection block at its top level) or that is not a functional Keras model."""
    if not isinstance(model, keras.Model) or isinstance(model, keras.Sequential):
        raise ConfigError(None, f"kinetic_jacobian: model {getattr(model, 'name', model)!r} "
                          "is not a functional Keras model; its blocks cannot be walked")
    if not any(isinstance(layer, (layers.ODEBlock, layers.SchemeBlock))
               for layer in model.layers):
        raise ConfigError(None, f"kinetic_jacobian: model {model.name!r} has no ODE block "
                          "or skip-connection block (tfnode.layers.SchemeBlock) to regularize")


def kinetic_jacobian(model, x, *, seed, kinetic_energy, jacobian_norm2):
    """RNODE's penalty on one batch: ``(logits, penalty)`` (see the module docstring)."""
    logits, kinetic, jacobian = walk(model, x, seed)
    penalty = (kinetic_energy * tf.reduce_mean(kinetic)
               + jacobian_norm2 * tf.reduce_mean(jacobian))
    return logits, penalty


registry.register(registry.RegularizerSpec(
    name="kinetic_jacobian", fn=kinetic_jacobian, model_check=check_model,
    defaults={"kinetic_energy": 0.01, "jacobian_norm2": 0.01},
    rules={"kinetic_energy": NONNEGATIVE, "jacobian_norm2": NONNEGATIVE},
    summary="RNODE: kinetic energy and Jacobian Frobenius norm (Hutchinson) integrated "
            "along each block's trajectory",
    reference="Finlay et al. 2020 (cfinlay/ffjord-rnode)"))
