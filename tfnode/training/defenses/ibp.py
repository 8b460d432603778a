"""Certified training with interval bound propagation (Gowal, Dvijotham, Stanforth,
Bunel, Qin, Uesato, Arandjelovic, Mann & Kohli, "On the Effectiveness of Interval Bound
Propagation for Training Verifiably Robust Models", 2018).

The loss mixes the natural cross-entropy with the cross-entropy of the worst-case
logits ``z_hat`` that the interval bounds give over the eps ball (`tfnode.bounds`,
the last layer elided): ``kappa * CE(z, y) + (1 - kappa) * CE(z_hat(eps), y)``. As in
the paper, eps ramps linearly from 0 (``eps_warmup`` steps) and kappa from 1 down to
``kappa_final`` over the same ramp; the paper trains MNIST with eps 0.4 for a test eps
of 0.3 (their Sec. 4, Table 1) and kappa_final 0.5. Minimizing the bound's loss is what
makes the bounds tight: a model trained otherwise certifies next to nothing.

Interval bounds through a network initialized for ordinary training are astronomically
loose: each 3x3 convolution of Glorot/He weights widens a box by its rows' absolute
sums (about 19 for 288 inputs), so a width-32 ResNet of six blocks without norm layers
starts with logit bounds ten or more orders of magnitude wide at eps 0.01, an ODE-Net
wider still (the measured widths: docs/robust.md), and the worst-case cross-entropy
swamps the natural one from the first step. ``init="ibp"`` (the default) therefore
re-draws every kernel but the classifier's with Shi, Wang, Zhang, Yi & Hsieh's IBP
initialization ("Fast Certified Robust Training with Short Warmup", NeurIPS 2021; their
``manual_init.ibp_init``): normal with standard deviation ``sqrt(2 pi) / fan_in``, which
keeps a box's width about constant through each affine map and ReLU (of order one for
the same two models; measured in docs/robust.md). Their halving
of a layer's weights after a residual addition is not applied: tfnode's blocks are
layers, not a graph of additions, and the widths are already of order one.
``init="model"`` keeps the model's own initialization (Gowal et al.'s setting).

Only models the bounds pass can train this way (`tfnode.bounds.check_model`): a
fixed-step solver for ODE-Nets (an adaptive solver's steps depend on the input), and
``norm="none"`` in practice (bounds through GroupNorm are nearly vacuous).
"""

import math

import keras
import numpy as np

from tfnode import bounds, layers
from tfnode.errors import ConfigError
from tfnode.registry import FRACTION, NONNEGATIVE, NONNEGATIVE_COUNT, one_of
from tfnode.training.defenses import registry
from tfnode.training.defenses._inner import cross_entropy


def ibp_loss(model, x, y, *, seed, eps, kappa_final, ramp, init):
    """IBP's loss on one batch: ``(mixed loss, clean logits)``; ``ramp`` in [0, 1] is the
    eps ramp's fraction, which kappa follows from 1 to ``kappa_final``."""
    del seed, init  # no random start: the bounds cover the whole ball
    logits = model(x, training=True)
    kappa = 1.0 - ramp * (1.0 - kappa_final)
    worst = bounds.worst_case_logits(model, x, y, eps)
    return kappa * cross_entropy(y, logits) + (1.0 - kappa) * cross_entropy(y, worst), logits


def check_model(net):
    """A one-line `ConfigError` for a model IBP cannot train: one the bounds do not pass
    (`tfnode.bounds.check_model`), or one with a norm layer. Through GroupNorm the bounds
    grow by up to ``1 / sqrt(epsilon)`` (~316) per norm once the box is wider than the
    group's spread, so an ODE function's three norms per evaluation overflow float32
    within a few steps (measured: a width-8 rk4 ODE-Net at eps 1e-3); BatchNorm trains on
    batch statistics, which the bounds (moving statistics) do not describe."""
    bounds.check_model(net)
    norms = layers.sublayers(net, (layers.GroupNorm, keras.layers.BatchNormalization))
    if norms:
        raise ConfigError(None, f"the model has norm layers ({norms[0].name!r}, "
                          f"{type(norms[0]).__name__}), through which interval bounds "
                          "overflow: train ibp with --model_option=norm=none")


def initialize(net, options, *, seed):
    """Shi et al. 2021's IBP initialization (``options["init"] == "ibp"``): every
    convolution and dense kernel but the last (the classifier) re-drawn from
    ``N(0, (sqrt(2 pi) / fan_in)^2)``, ``fan_in`` the kernel's inputs per output
    (``prod(shape[:-1])``); biases stay as built (zeros). Drawn with numpy from ``seed``,
    so every worker of a run draws the same weights."""
    if options.get("init") != "ibp":
        return
    kernels = [w for w in net.weights if w.path.endswith("kernel") and len(w.shape) >= 2]
    rng = np.random.default_rng(seed)
    for w in kernels[:-1]:
        fan_in = int(np.prod(w.shape[:-1]))
        w.assign(rng.normal(0.0, math.sqrt(2 * math.pi) / fan_in, tuple(w.shape))
                 .astype(w.dtype))


registry.register(registry.DefenseSpec(
    name="ibp", fn=ibp_loss,
    # Gowal et al. ramp eps over 10k of 60k steps (batch 100); tfnode's MNIST budgets
    # are a few thousand steps, so the ramp is 2000 steps by default.
    defaults={"eps": 0.4, "kappa_final": 0.5, registry.EPS_WARMUP: 2000, "init": "ibp"},
    dataset_defaults={"cifar10": {"eps": 8.8 / 255}},
    rules={"eps": NONNEGATIVE, "kappa_final": FRACTION,
           registry.EPS_WARMUP: NONNEGATIVE_COUNT, "init": one_of("ibp", "model")},
    summary="certified training: natural and interval-bound worst-case cross-entropy, "
            "eps and kappa ramped",
    reference="Gowal et al. 2018",
    metrics_on="the clean examples", takes_ramp=True, model_check=check_model,
    initialize=initialize))
