"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), Linf, batched.

A score-based black-box attack: random search over square patches of +-eps, keeping a
change only if it lowers the margin ``logit_y - max_{k != y} logit_k``. It uses no
gradients, so gradient masking by an adaptive solver cannot fool it (Huang et al. 2020
use it, with SPSA, to show that ODE-Nets' PGD robustness is partly obfuscated gradients).
Every model query is counted per sample; no sample is queried more than ``max_queries``.
"""

import dataclasses

import numpy as np

from tfnode.attacks._utils import check_eps, check_positive_int, logits_fn
from tfnode.errors import TfnodeError


@dataclasses.dataclass
class SquareResult:
    """Per sample: ``x_adv`` (the lowest-margin point found), ``is_adv``, ``queries``."""
    x_adv: np.ndarray
    is_adv: np.ndarray
    queries: np.ndarray


def _fraction(p_init, it, num_iters):
    """The paper's schedule of the patch area as a fraction of the image (halving)."""
    it = int(it / num_iters * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
                       (4000, 64), (6000, 128), (8000, 256), (10000, 512)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def _margins(fn, x, y, batch_size):
    out = []
    for i in range(0, len(x), batch_size):
        logits = np.asarray(fn(np.asarray(x[i:i + batch_size], np.float32)), np.float64)
        yi = y[i:i + batch_size]
        true = logits[np.arange(len(yi)), yi]
        logits[np.arange(len(yi)), yi] = -np.inf
        out.append(true - logits.max(axis=1))
    return np.concatenate(out) if out else np.zeros((0,))


def square_attack(model, x, y, *, eps, max_queries=1000, p_init=0.05, clip_min=0.0,
                  clip_max=1.0, seed=0, batch_size=None):
    """Linf Square Attack (untargeted, margin loss), images ``[N, H, W, C]``.

    Args:
      model: logits callable (only its logits are used, never gradients).
      x: inputs in ``[clip_min, clip_max]``.
      y: true labels.
      eps: Linf budget.
      max_queries: model queries per sample, the initialization included.
      p_init: initial patch area as a fraction of the image (the paper's Linf default
        0.05); it halves on the paper's schedule over ``max_queries``.
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.
      seed: seed of the random search.
      batch_size: model batch size (default: all samples at once).

    Returns:
      A `SquareResult`.
    """
    check_eps(eps, clip_min=clip_min, clip_max=clip_max)
    check_positive_int(max_queries, "max_queries")
    if not 0 < p_init <= 1:
        raise TfnodeError(f"p_init must lie in (0, 1], got {p_init!r}")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    if x.ndim != 4:
        raise TfnodeError(f"square_attack needs images [N, H, W, C], got shape {x.shape}")
    n, height, width, channels = x.shape
    fn = logits_fn(model)
    batch_size = batch_size or max(n, 1)
    rng = np.random.default_rng(seed)
    # Vertical stripes of +-eps: the paper's initialization (1 query).
    stripes = rng.choice([-eps, eps], size=(n, 1, width, channels))
    best = np.clip(x + stripes, clip_min, clip_max).astype(np.float32)
    margin = _margins(fn, best, y, batch_size)
    queries = np.ones(n, np.int64)
    for it in range(1, max_queries):
        active = np.flatnonzero(margin > 0)
        if len(active) == 0:
            break
        side = int(round(np.sqrt(_fraction(p_init, it, max_queries) * height * width)))
        side = min(max(side, 1), height - 1 if height > 1 else 1)
        cand = best[active].copy()
        for k, i in enumerate(active):
            top = rng.integers(0, height - side + 1)
            left = rng.integers(0, width - side + 1)
            signs = rng.choice([-eps, eps], size=(1, 1, channels))
            window = x[i, top:top + side, left:left + side] + signs
            cand[k, top:top + side, left:left + side] = window
        cand = np.clip(cand, clip_min, clip_max)
        new_margin = _margins(fn, cand, y[active], batch_size)
        queries[active] += 1
        better = new_margin < margin[active]
        best[active[better]] = cand[better]
        margin[active[better]] = new_margin[better]
    return SquareResult(x_adv=best, is_adv=margin <= 0, queries=queries)
