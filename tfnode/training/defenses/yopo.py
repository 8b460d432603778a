"""YOPO, "You Only Propagate Once" (Zhang, Zhang, Lu, Zhu & Dong, NeurIPS 2019).

Adversarial training where most of the attack's steps run through the first layer only.
Per batch, with ``eta`` uniform in the eps ball (clipped to the image range), ``m =
outer_steps`` times: one full forward/backward at ``x + eta`` gives the weights' gradient
of the cross-entropy (summed over the ``m`` passes, as the authors' code calls
``loss.backward()`` ``m`` times before one optimizer step) and the adjoint ``p = -dL/dz``
at the first layer's output ``z``; then ``n = inner_steps`` signed steps of size
``step_size`` on the Hamiltonian ``H = sum(first(clip(x + eta)) * p)``,
``eta <- eta - step_size * sign(dH/d eta)`` (an ascent on the loss, since ``p`` is
minus its gradient), projected onto the ball and the image range; and the first
layer's weights also get the gradient of ``-H`` at the new ``eta``.

This follows the authors' CIFAR-10 code (``experiments/CIFAR10/pre-res18.yopo-5-3``),
where the first layer (the first convolution) gets both gradients and the same learning
rate as the rest, so one optimizer serves. Their MNIST code keeps the first layer's
weights out of the cross-entropy gradient and gives it a learning-rate schedule of its
own; that variant is not reproduced. Their random start is not clipped to the image
range before the first pass; here it is.
"""

import weakref

import keras
import tensorflow as tf

from tfnode.errors import TfnodeError
from tfnode.registry import COUNT, NONNEGATIVE, NONNEGATIVE_COUNT, POSITIVE
from tfnode.training.defenses import registry
from tfnode.training.defenses._inner import cross_entropy

_SPLITS = weakref.WeakKeyDictionary()


def split_first_layer(model):
    """``(first, rest)``: the layer that takes the model's input, and the model after it.

    Raises:
      TfnodeError: the model is not a one-input functional model whose input feeds one
        layer with weights (YOPO's "layer one").
    """
    try:
        return _SPLITS[model]
    except KeyError:
        pass
    layers = [layer for layer in getattr(model, "layers", [])
              if not isinstance(layer, keras.layers.InputLayer)]
    inputs = getattr(model, "inputs", None) or []
    first = layers[0] if layers else None
    if (len(inputs) != 1 or first is None or not first.trainable_weights
            or first.input is not inputs[0]):
        raise TfnodeError(f"defense yopo needs a functional model whose input feeds one "
                          f"layer with weights (its 'layer one'); {model.name!r} is not")
    try:
        rest = keras.Model(first.output, model.outputs, name=f"{model.name}_after_layer_one")
    except ValueError as err:
        raise TfnodeError(f"defense yopo: {model.name!r} uses its input beyond its first "
                          f"layer {first.name!r} ({err})") from None
    _SPLITS[model] = (first, rest)
    return first, rest


def yopo_loss(model, x, y, *, seed, eps, step_size, outer_steps, inner_steps):
    """YOPO-m-n's loss on one batch: ``(mean CE of the m passes, the last pass's logits)``.

    The authors' code accumulates, before one optimizer step, the weights' gradients of
    the m passes' cross-entropies and, for the first layer, of the m ``-H``. Here that is
    the gradient of one objective, their sum, with every ``eta`` and adjoint ``p``
    stop-gradient'd (constants, as their ``eta`` and detached ``p`` are); the
    adjoint of each pass is taken with a tape of its own, since the next pass needs it.
    The value returned is the mean cross-entropy of the m passes (what their code logs):
    ``mean + (objective - stop_gradient(objective))`` is that value exactly (``a - a``
    is 0 in floating point) and has the objective's gradient.
    """
    first, rest = split_first_layer(model)
    eta = keras.random.uniform(tf.shape(x), -eps, eps, seed=seed)
    eta = tf.stop_gradient(tf.clip_by_value(x + eta, 0.0, 1.0) - x)
    losses, terms = [], []
    logits = None
    for _ in range(outer_steps):
        with tf.GradientTape() as tape:
            z = first(x + eta, training=True)
            logits = rest(z, training=True)
            loss = cross_entropy(y, logits)
        p = -tf.stop_gradient(tape.gradient(loss, z))
        losses.append(loss)

        def hamiltonian(e, p=p):
            return tf.reduce_sum(first(tf.clip_by_value(x + e, 0.0, 1.0), training=True) * p)

        for _ in range(inner_steps):
            with tf.GradientTape() as tape:
                tape.watch(eta)
                h = hamiltonian(eta)
            eta = tf.clip_by_value(eta - step_size * tf.sign(tape.gradient(h, eta)), -eps, eps)
            eta = tf.stop_gradient(tf.clip_by_value(x + eta, 0.0, 1.0) - x)
        # The pass's cross-entropy, then the first layer's -H at the new eta: the order in
        # which the authors' code adds them to the accumulated gradient.
        terms += [loss, -hamiltonian(eta)]
    objective = tf.add_n(terms)
    mean = tf.stop_gradient(tf.add_n(losses) / len(losses))
    return mean + (objective - tf.stop_gradient(objective)), logits


# CIFAR-10: YOPO-5-3 (eps 8/255, sigma 2/255); MNIST: YOPO-5-10 (eps 0.3, sigma 0.01),
# the authors' config.py files. Their learning rates are set for the gradient summed
# over the m passes (CIFAR-10: SGD 0.2 / m; MNIST: 0.01 / m).
registry.register(registry.DefenseSpec(
    name="yopo", fn=yopo_loss,
    defaults={"eps": 0.3, "step_size": 0.01, "outer_steps": 5, "inner_steps": 10},
    dataset_defaults={"cifar10": {"eps": 8 / 255, "step_size": 2 / 255, "inner_steps": 3}},
    rules={"eps": NONNEGATIVE, "step_size": POSITIVE, "outer_steps": COUNT,
           "inner_steps": NONNEGATIVE_COUNT},
    summary="YOPO-m-n: m full passes, each followed by n attack steps through the first "
            "layer only on the Hamiltonian of its adjoint",
    reference="Zhang et al. 2019 (YOPO)"))
