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

Only models the bounds pass can train this way (`tfnode.bounds.check_model`): a
fixed-step solver for ODE-Nets (an adaptive solver's steps depend on the input), and
``norm="none"`` in practice (bounds through GroupNorm are nearly vacuous).
"""

import keras

from tfnode import bounds, layers
from tfnode.errors import ConfigError
from tfnode.registry import FRACTION, NONNEGATIVE, NONNEGATIVE_COUNT
from tfnode.training.defenses import registry
from tfnode.training.defenses._inner import cross_entropy


def ibp_loss(model, x, y, *, seed, eps, kappa_final, ramp):
    """IBP's loss on one batch: ``(mixed loss, clean logits)``; ``ramp`` in [0, 1] is the
    eps ramp's fraction, which kappa follows from 1 to ``kappa_final``."""
    del seed  # no random start: the bounds cover the whole ball
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


registry.register(registry.DefenseSpec(
    name="ibp", fn=ibp_loss,
    # Gowal et al. ramp eps over 10k of 60k steps (batch 100); tfnode's MNIST budgets
    # are a few thousand steps, so the ramp is 2000 steps by default.
    defaults={"eps": 0.4, "kappa_final": 0.5, registry.EPS_WARMUP: 2000},
    dataset_defaults={"cifar10": {"eps": 8.8 / 255}},
    rules={"eps": NONNEGATIVE, "kappa_final": FRACTION,
           registry.EPS_WARMUP: NONNEGATIVE_COUNT},
    summary="certified training: natural and interval-bound worst-case cross-entropy, "
            "eps and kappa ramped",
    reference="Gowal et al. 2018",
    metrics_on="the clean examples", takes_ramp=True, model_check=check_model))
