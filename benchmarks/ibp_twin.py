"""tfnode's interval bounds against an independent implementation: ART's IBP layers.

``python -m benchmarks.ibp_twin``: builds the small certifiable models (an ODE-Net with
rk4 and no norm, a ResNet and a Heun net with no norm), copies their weights into a
PyTorch twin made of the Adversarial Robustness Toolbox's interval layers
(``art.estimators.certification.interval``: convolutions as their equivalent dense
matrices, Dense, ReLU; Chen et al.'s time channel concatenated as the original
``ConcatConv2d`` does, not tfnode's separate time map), and compares the logit bounds of
both on MNIST-shaped inputs at several eps. The composition of boxes (residual sums,
Runge-Kutta stages, average pooling) is written again here, in torch, from the schemes'
formulas.

auto_LiRPA was the first choice: its only PyPI release (0.3) pins torch < 1.13, which
has no wheel for Python 3.11; with the current torch it fails to import (it uses
``numpy.lib.arraysetops`` and ``torch.onnx`` internals that are gone). Newer releases
install only from GitHub, which these machines do not reach.

Needs the optional extra ``bench`` (torch CPU, ART); nothing in ``tfnode`` imports this.
"""

import argparse
import json

import numpy as np
import torch
from art.estimators.certification.interval.interval import (PyTorchIntervalConv2D,
                                                            PyTorchIntervalDense)

from tfnode import bounds, layers, models, ode

SIZE = 28


def _conv(layer, size):
    """ART's interval convolution with the weights of Keras ``layer`` (NHWC -> NCHW)."""
    kernel = np.transpose(np.asarray(layer.kernel), (3, 2, 0, 1))  # [out, in, kh, kw]
    out_ch, in_ch, k = kernel.shape[0], kernel.shape[1], kernel.shape[2]
    stride = layer.strides[0] if isinstance(layer.strides, tuple) else layer.strides
    bias = np.asarray(layer.bias) if layer.use_bias else np.zeros(out_ch, "float32")
    # Keras' "same": (k - 1) // 2 each side for these kernels (3x3 stride 1; 4x4 stride 2
    # on even sizes pads 1 and 1).
    padding = 1
    art = PyTorchIntervalConv2D(
        in_channels=in_ch, out_channels=out_ch, kernel_size=k, input_shape=(1, in_ch, size, size),
        device="cpu", stride=stride, padding=padding, dilation=1, bias=True,
        supplied_input_weights=torch.tensor(kernel), supplied_input_bias=torch.tensor(bias))
    return art


def _add(*terms):
    """sum c_i * box_i over independent boxes in ART's layout, ``[N, 2, ...]`` (lower,
    upper)."""
    lo = hi = 0
    for c, b in terms:
        a, z = c * b[:, 0], c * b[:, 1]
        lo, hi = lo + torch.minimum(a, z), hi + torch.maximum(a, z)
    return torch.stack([lo, hi], 1)


def _relu(b):
    return torch.relu(b)


class Twin:
    """ART interval layers wired as a tfnode model with ``norm="none"``."""

    def __init__(self, net):
        self.net = net
        sizes = {"stem_conv1": SIZE, "stem_conv2": SIZE, "stem_conv3": SIZE // 2}
        self.convs = {name: _conv(net.get_layer(name), size) for name, size in sizes.items()}
        self.functions = {}
        for layer in layers.sublayers(net, layers.ODEFunc):
            self.functions[layer.name] = (layer, self._function(layer))
        dense = net.get_layer("logits")
        self.dense = PyTorchIntervalDense(dense.kernel.shape[0], dense.kernel.shape[1])
        self.dense.weight = torch.nn.Parameter(torch.tensor(np.asarray(dense.kernel).T))
        self.dense.bias = torch.nn.Parameter(torch.tensor(np.asarray(dense.bias)))

    def _function(self, layer):
        size = SIZE // 4
        if layer.time_dependent:
            return (_conv(layer.conv1.conv, size), _conv(layer.conv2.conv, size))
        return (_conv(layer.conv1, size), _conv(layer.conv2, size))

    def f(self, name, t, b):
        layer, (conv1, conv2) = self.functions[name]

        def conv(art, x):
            if layer.time_dependent:  # Chen et al.'s ConcatConv2d: [t * ones, y]
                time = torch.full_like(x[:, :, :1], float(t))
                x = torch.cat([time, x], 2)
            return art(x)

        h = conv(conv1, _relu(b))
        return conv(conv2, _relu(h))

    def block(self, layer, b):
        h = layer.step_size if hasattr(layer, "step_size") else None
        if isinstance(layer, layers.ResidualBlock):
            return _add((1.0, b), (h, self.f(layer.residual_fn.name, 0.0, b)))
        if isinstance(layer, layers.HeunBlock):
            k1 = self.f(layer.residual_fn.name, 0.0, b)
            k2 = self.f(layer.residual_fn.name, h, _add((1.0, b), (h, k1)))
            return _add((1.0, b), (0.5 * h, k1), (0.5 * h, k2))
        if isinstance(layer, layers.ODEBlock):
            tab, y = ode.get(layer.solver), b
            for i in range(ode.num_fixed_steps(layer.t1, layer.step_size)):
                t = i * layer.step_size
                h = min(layer.step_size, layer.t1 - t)
                ks = []
                for c, row in zip(tab.c, ((),) + tuple(tab.a)):
                    stage = _add((1.0, y), *[(h * a, k) for a, k in zip(row, ks) if a])
                    ks.append(self.f(layer.odefunc.name, t + c * h, stage))
                y = _add((1.0, y), *[(h * w, k) for w, k in zip(tab.b, ks) if w])
            return y
        raise ValueError(f"no twin for {type(layer).__name__}")

    def logit_bounds(self, x, eps):
        x = torch.tensor(np.transpose(x, (0, 3, 1, 2)))
        b = torch.stack([torch.clamp(x - eps, 0, 1), torch.clamp(x + eps, 0, 1)], 1)
        b = _relu(self.convs["stem_conv1"](b))
        b = _relu(self.convs["stem_conv2"](b))
        b = self.convs["stem_conv3"](b)
        for layer in self.net.layers:
            if isinstance(layer, (layers.SchemeBlock, layers.ODEBlock)):
                b = self.block(layer, b)
        b = _relu(b).mean(dim=(3, 4))  # head: ReLU, global average pool
        return self.dense(b)


CASES = {"node_rk4": ("node", dict(width=8, solver="rk4", step_size=0.5, norm="none")),
         "resnet": ("resnet", dict(width=8, num_blocks=2, norm="none")),
         "heunnet": ("heunnet", dict(width=8, num_blocks=2, step_size=0.5, norm="none"))}


def compare(name, eps_values=(0.0, 1e-3, 0.01, 0.05), n=4, seed=0):
    model, options = CASES[name]
    net = models.get_model(model, dataset="mnist", **options)
    twin = Twin(net)
    x = np.random.default_rng(seed).uniform(0, 1, (n, SIZE, SIZE, 1)).astype("float32")
    rows = []
    for eps in eps_values:
        ours = bounds.logit_bounds(net, x, eps)
        theirs = twin.logit_bounds(x, eps).detach().numpy()
        scale = np.maximum(1.0, np.abs(theirs).max())
        rows.append({"eps": eps,
                     "max_abs_diff_lo": float(np.abs(ours.lo.numpy() - theirs[:, 0]).max()),
                     "max_abs_diff_hi": float(np.abs(ours.hi.numpy() - theirs[:, 1]).max()),
                     "scale": float(scale),
                     "mean_width": float((theirs[:, 1] - theirs[:, 0]).mean())})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    out = {name: compare(name) for name in args.cases.split(",")}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
