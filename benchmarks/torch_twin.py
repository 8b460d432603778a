"""The torchdiffeq twin of tfnode's ODE-Net, for side-by-side benchmarks.

The same architecture as ``tfnode.models.odenet`` (itself Chen et al. 2018's
``torchdiffeq/examples/odenet_mnist.py``), written the way torchdiffeq's example writes
it, with the weights copied from a Keras model so that both compute the same function.
Needs the optional extra ``bench`` (torch CPU + torchdiffeq); nothing in ``tfnode``
imports this.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torchdiffeq
from torch import nn
from torchdiffeq._impl.dopri5 import Dopri5Solver
from torchdiffeq._impl.rk_common import _ButcherTableau


class Dopri5StandardError(Dopri5Solver):
    """torchdiffeq's dopri5 with the standard embedded 4th-order error weights.

    Dormand & Prince's own weights (5179/57600, ...; Hairer's DOPRI5, SciPy's RK45 and
    tfnode) instead of the alternative set torchdiffeq and TFP ship (1951/21600, ...;
    Shampine 1986). The
    two estimate the local error differently, so at the same tolerance they can accept
    different steps: on the main-job ODE-Net's first test batch, 8 steps (tfnode) vs 7
    (torchdiffeq). With the same weights (and torchdiffeq's step controller, which tfnode
    also uses) both take the same steps, so their times compare the same work.
    """

    tableau = _ButcherTableau(
        alpha=Dopri5Solver.tableau.alpha, beta=Dopri5Solver.tableau.beta,
        c_sol=Dopri5Solver.tableau.c_sol,
        c_error=torch.tensor([35 / 384 - 5179 / 57600, 0, 500 / 1113 - 7571 / 16695,
                              125 / 192 - 393 / 640, -2187 / 6784 + 92097 / 339200,
                              11 / 84 - 187 / 2100, -1 / 40], dtype=torch.float64))


# torchdiffeq looks methods up by name in this table (its module is shadowed by odeint).
sys.modules["torchdiffeq._impl.odeint"].SOLVERS["dopri5_standard_error"] = Dopri5StandardError


def _norm(channels):
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-5)


class ConcatConv2d(nn.Module):
    """torchdiffeq's example: ``conv(cat([t * ones, x], channels))``."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.conv = nn.Conv2d(dim_in + 1, dim_out, 3, padding=1)

    def forward(self, t, x):
        tt = torch.ones_like(x[:, :1, :, :]) * t
        return self.conv(torch.cat([tt, x], 1))


class ODEFunc(nn.Module):
    """``GN(conv2(t, relu(GN(conv1(t, relu(GN(y)))))))``, counting its evaluations."""

    def __init__(self, dim):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = _norm(dim), _norm(dim), _norm(dim)
        self.conv1, self.conv2 = ConcatConv2d(dim, dim), ConcatConv2d(dim, dim)
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        out = torch.relu(self.norm1(x))
        out = torch.relu(self.norm2(self.conv1(t, out)))
        return self.norm3(self.conv2(t, out))


class ODENet(nn.Module):
    """Stem to 7x7, one dopri5 ODE block on [0, 1], head: as ``tfnode.models.odenet``.

    Args:
      width: channels.
      num_classes: logits.
      in_channels: image channels.
      rtol, atol: dopri5 tolerances.
      land_on_t1: pass ``step_t=[1]`` so that torchdiffeq clips its last step to land on
        t = 1 as tfnode's loop does; False is torchdiffeq's default, which oversteps
        t = 1 and interpolates back.
      standard_error: use `Dopri5StandardError` (tfnode's error estimate: the same steps,
        NFE and logits as tfnode); False is torchdiffeq's dopri5 as shipped.
      adjoint: differentiate with ``odeint_adjoint`` instead of backprop.
      euler_step: solve with fixed Euler steps of this size instead of dopri5 (the
        computation tfnode's ``solver="euler"`` does, step for step).
    """

    def __init__(self, width=64, num_classes=10, in_channels=1, *, rtol=1e-3, atol=1e-3,
                 land_on_t1=True, standard_error=True, adjoint=False, euler_step=None):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), _norm(width), nn.ReLU(),
            nn.Conv2d(width, width, 4, 2, 1), _norm(width), nn.ReLU(),
            nn.Conv2d(width, width, 4, 2, 1))
        self.odefunc = ODEFunc(width)
        self.head_norm = _norm(width)
        self.fc = nn.Linear(width, num_classes)
        self.rtol, self.atol = rtol, atol
        self.options = {"step_t": torch.tensor([1.0])} if land_on_t1 else None
        self.method = "dopri5_standard_error" if standard_error else "dopri5"
        if euler_step is not None:
            self.method, self.options = "euler", {"step_size": euler_step}
        self.adjoint = adjoint

    def forward(self, x):
        x = self.stem(x)
        odeint = torchdiffeq.odeint_adjoint if self.adjoint else torchdiffeq.odeint
        t = torch.tensor([0.0, 1.0])
        x = odeint(self.odefunc, x, t, rtol=self.rtol, atol=self.atol, method=self.method,
                   options=self.options)[1]
        x = torch.relu(self.head_norm(x)).mean(dim=(2, 3))
        return self.fc(x)


def _conv(conv, arrays, name):
    # Keras HWIO -> torch OIHW. Input channel 0 is t in both (concat([t, y])).
    conv.weight.copy_(torch.from_numpy(np.transpose(arrays[f"{name}.kernel"], (3, 2, 0, 1)).copy()))
    conv.bias.copy_(torch.from_numpy(arrays[f"{name}.bias"]))


def _gn(norm, arrays, name):
    norm.weight.copy_(torch.from_numpy(arrays[f"{name}.gamma"]))
    norm.bias.copy_(torch.from_numpy(arrays[f"{name}.beta"]))


@torch.no_grad()
def load_weights(net, arrays):
    """Loads ``benchmarks.ode_block.keras_weights`` arrays into ``net`` (an `ODENet`).

    Keras' ``"same"`` padding of the stride-2 4x4 convolutions pads 1 on each side for
    these even sizes, as torch's ``padding=1`` does, so the layers map one to one.
    """
    for i, name in zip((0, 3, 6), ("stem_conv1", "stem_conv2", "stem_conv3")):
        _conv(net.stem[i], arrays, name)
    _gn(net.stem[1], arrays, "stem_norm1")
    _gn(net.stem[4], arrays, "stem_norm2")
    for name in ("norm1", "norm2", "norm3"):
        _gn(getattr(net.odefunc, name), arrays, f"odefunc_{name}")
    _conv(net.odefunc.conv1.conv, arrays, "odefunc_conv1")
    _conv(net.odefunc.conv2.conv, arrays, "odefunc_conv2")
    _gn(net.head_norm, arrays, "head_norm")
    net.fc.weight.copy_(torch.from_numpy(arrays["logits.kernel"].T.copy()))
    net.fc.bias.copy_(torch.from_numpy(arrays["logits.bias"]))
    return net


def _callables(net, x, y):
    """One-run callables of a twin: forward, train step, attack step (input gradient)."""
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)

    def forward():
        with torch.no_grad():
            return net(x).numpy()

    def train():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    def attack():
        v = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(net(v), y), v)
        return grad.numpy()

    return {"forward": forward, "train": train, "attack": attack}


def pgd(net, x, y, *, eps, step_size, num_steps, generator):
    """Linf PGD with a random start (Madry et al. 2018), as ``tfnode.attacks.pgd`` does."""
    adv = torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps, generator=generator), 0, 1)
    for _ in range(num_steps):
        adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(net(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + step_size * grad.sign()
            adv = torch.clamp(torch.min(torch.max(adv, x - eps), x + eps), 0, 1)
    return adv.detach()


class Worker:
    """The twins of one set of Keras weights, answering timing requests one at a time.

    Requests and replies are dicts (see `serve`); every time is measured here, around
    the computation only, so the pipe's cost is not in it.
    """

    def __init__(self, arrays, *, adjoint=True):
        self.arrays = arrays
        self.x = torch.from_numpy(np.ascontiguousarray(np.transpose(arrays["x"], (0, 3, 1, 2))))
        self.y = torch.from_numpy(arrays["y"].astype(np.int64))
        self.nets = {"torchdiffeq": self._twin(),
                     "torchdiffeq as shipped": self._twin(land_on_t1=False,
                                                          standard_error=False)}
        if adjoint:
            self.nets["torchdiffeq adjoint"] = self._twin(adjoint=True)
        self.calls = {}
        self.generators = {}

    def _twin(self, **kwargs):
        """An `ODENet` with the Keras weights; ``kwargs`` are its solver options."""
        a = self.arrays
        return load_weights(ODENet(int(a["width"]), a["logits.bias"].shape[0], self.x.shape[1],
                                   rtol=float(a["rtol"]), atol=float(a["atol"]), **kwargs), a)

    def handle(self, request):
        """Answers one request (a dict with ``op`` and its arguments) with a dict."""
        op, name = request.get("op"), request.get("variant", "torchdiffeq")
        if name not in self.nets:
            raise ValueError(f"unknown variant {name!r}; expected one of {list(self.nets)}")
        net = self.nets[name]
        if op == "info":
            return {"torch_version": torch.__version__, "threads": torch.get_num_threads(),
                    "variants": list(self.nets)}
        if op == "logits":  # the checks that both frameworks compute the same function
            step = request.get("euler_step")
            twin = self._twin(euler_step=step) if step else net
            with torch.no_grad():
                return {"logits": twin(self.x).numpy().tolist()}
        if op == "nfe":
            net.odefunc.nfe = 0
            with torch.no_grad():
                net(self.x)
            return {"nfe": net.odefunc.nfe}
        if op == "time":  # one run of forward, train or attack on the whole batch
            if name not in self.calls:
                self.calls[name] = _callables(net, self.x, self.y)
            fn = self.calls[name][request["what"]]
            start = time.perf_counter()
            fn()
            return {"seconds": time.perf_counter() - start}
        if op == "pgd":  # PGD on x[start:stop]; each variant draws from its own seeded stream
            if name not in self.generators:
                self.generators[name] = torch.Generator().manual_seed(0)
            generator = self.generators[name]
            batch = slice(request["start"], request["stop"])
            x, y = self.x[batch], self.y[batch]
            net.odefunc.nfe = 0
            start = time.perf_counter()
            adv = pgd(net, x, y, eps=request["eps"], step_size=request["step_size"],
                      num_steps=request["num_steps"], generator=generator)
            seconds, nfe = time.perf_counter() - start, net.odefunc.nfe
            with torch.no_grad():
                fooled = int((net(adv).argmax(1) != y).sum())
            return {"seconds": seconds, "fooled": fooled, "nfe": nfe / request["num_steps"]}
        raise ValueError(f"unknown op {op!r}; expected info, logits, nfe, time or pgd")


def serve(arrays_path, *, adjoint=True, stdin=sys.stdin, stdout=sys.stdout):
    """Answers JSON requests, one per line on ``stdin``, with one JSON line each on ``stdout``.

    Run by ``benchmarks.ode_block`` and ``benchmarks.attack`` as a process of its own,
    alive for the whole benchmark, so that tfnode's and torch's runs can alternate (a
    drift of the machine's speed then hits both alike) while the two frameworks' thread
    pools never share a process: in one process they slowed torch by about a third here.
    An empty line or end of input ends it.
    """
    worker = Worker(dict(np.load(arrays_path)), adjoint=adjoint)
    for line in stdin:
        if not line.strip():
            break
        stdout.write(json.dumps(worker.handle(json.loads(line))) + "\n")
        stdout.flush()


def main():
    parser = argparse.ArgumentParser(description="torchdiffeq twin worker (see `serve`)")
    parser.add_argument("--arrays", required=True, help="npz: weights, x, y, width, rtol, atol")
    parser.add_argument("--skip_adjoint", action="store_true")
    args = parser.parse_args()
    # Nothing but replies on the reply pipe: file descriptor 1 itself (where native
    # libraries print too) is pointed at stderr, and the replies go to a copy of it.
    sys.stdout.flush()
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(args.arrays, adjoint=not args.skip_adjoint, stdout=replies)


if __name__ == "__main__":
    main()
