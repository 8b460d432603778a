"""Decision-based Boundary Attack (Brendel, Rauber & Bethge, ICLR 2018), batched.

Uses only the model's top-1 decisions. Every model query is counted per sample, and no
sample is ever queried more than ``max_queries`` times (the clean check and the
initialization included). The proposal and step-size adaptation follow the paper and
Foolbox 3's implementation: an orthogonal ("spherical") step of relative size
``spherical_step`` on the sphere around the original, then a step of relative size
``source_step`` towards it; every 10 iterations the spherical success rate (window 100)
scales both steps by ``step_adaptation`` (up if > 0.5, down if < 0.2) and the candidate
success rate (window 30) scales the source step (up if > 0.25, down if < 0.1). Both
windows are fed on every 10th step, as in Foolbox, so with 1000 queries the source
step first adapts after 300 steps and the spherical window (1000 steps) never fills.
"""

import numpy as np

from tfnode.attacks import registry
from tfnode.attacks._utils import AttackResult, check_positive_int, predict
from tfnode.errors import TfnodeError

INITS = ("blended_noise",)
_STATS_EVERY = 10
_SPHERICAL_WINDOW, _SOURCE_WINDOW = 100, 30


PADS = ("bucket", "batch")


class _Oracle:
    """Top-1 decisions of the model, counting one query per sample per decision.

    Queries go through `tfnode.attacks.predict`: with ``xla`` every call is padded, to
    the `bucket` size that holds it (``pad="bucket"``: a few compiled shapes, and a call
    of 20 samples computes 32 rows, not the batch's 128) or to ``batch_size`` itself
    (``pad="batch"``: one compiled shape); otherwise through the relaxed graph of any
    batch size. The evaluation confirms the adversarials with the same call
    (`confirm_kwargs`).
    """

    def __init__(self, model, y, max_queries, batch_size, xla, pad):
        self.model = model
        self.y = y
        self.max_queries = max_queries
        self.batch_size = batch_size
        self.xla = xla
        self.pad = pad
        self.queries = np.zeros(len(y), np.int64)

    def remaining(self):
        return self.max_queries - self.queries

    def is_adversarial(self, candidates, idx):
        """Whether the model misclassifies ``candidates[k]`` (a variant of sample ``idx[k]``)."""
        if len(idx) == 0:
            return np.zeros((0,), bool)
        if np.any(self.queries[idx] >= self.max_queries):
            raise RuntimeError("boundary attack bug: a sample's query budget was exceeded")
        self.queries[idx] += 1
        preds = predict(self.model, candidates, batch_size=self.batch_size,
                        **confirm_kwargs({"xla": self.xla, "pad": self.pad}))
        return preds != self.y[idx]


def confirm_kwargs(options):
    """The `tfnode.attacks.predict` options of a query-based attack's oracle, from its
    options (``xla``, default off; ``pad``, default ``"bucket"``): confirm the attack's
    adversarials with them (at the decision boundary an adaptive solver turns another
    compilation's rounding into other steps)."""
    xla, pad = options.get("xla", False), options.get("pad", "bucket")
    if pad not in PADS:
        raise TfnodeError(f"unknown boundary pad {pad!r}; expected one of {list(PADS)}")
    return {"xla": bool(xla), "pad_to_batch": bool(xla) and pad == "batch"}


def _flat_norm(v):
    return np.sqrt(np.sum(np.reshape(v, (len(v), -1)) ** 2, axis=1))


def _expand(v, ndim):
    return np.reshape(v, (-1,) + (1,) * (ndim - 1))


def _initialize(oracle, x, rng, clip_min, clip_max, init_attempts, search_steps):
    """Blended uniform noise: a misclassified noise image, then a bisection of the blend.

    A model can call every noise image the same class; for samples of that class the
    other images of the batch with another label are tried next (one query each, at
    most ``init_attempts``). Returns the starting points and which samples have one.
    """
    n = len(x)
    start, found = x.copy(), np.zeros(n, bool)
    # A sample the model already gets wrong is its own adversarial at distance 0.
    found[:] = oracle.is_adversarial(x, np.arange(n))
    noise = x.copy()
    for _ in range(init_attempts):
        idx = np.flatnonzero(~found & (oracle.remaining() > 0))
        if len(idx) == 0:
            break
        draw = rng.uniform(clip_min, clip_max, size=(len(idx),) + x.shape[1:]).astype(x.dtype)
        adv = oracle.is_adversarial(draw, idx)
        noise[idx[adv]] = draw[adv]
        found[idx[adv]] = True
    for _ in range(init_attempts):
        idx = np.flatnonzero(~found & (oracle.remaining() > 0))
        if len(idx) == 0:
            break
        # Another image of the batch whose label differs (random choice per sample).
        donors = np.array([rng.choice(np.flatnonzero(oracle.y != oracle.y[i]))
                           if np.any(oracle.y != oracle.y[i]) else i for i in idx])
        usable = donors != idx
        idx, donors = idx[usable], donors[usable]
        if len(idx) == 0:
            break
        adv = oracle.is_adversarial(x[donors], idx)
        noise[idx[adv]] = x[donors[adv]]
        found[idx[adv]] = True
    start[found] = noise[found]
    already = np.asarray(oracle.queries == 1) & found  # adversarial at the clean check
    start[already] = x[already]
    # Bisect the blend (1 - a) x + a noise between a = 0 (clean) and 1 (adversarial).
    todo = found & ~already
    low, high = np.zeros(n), np.ones(n)
    for _ in range(search_steps):
        idx = np.flatnonzero(todo & (oracle.remaining() > 0))
        if len(idx) == 0:
            break
        mid = (low[idx] + high[idx]) / 2
        blend = ((1 - _expand(mid, x.ndim)) * x[idx] + _expand(mid, x.ndim) * noise[idx])
        adv = oracle.is_adversarial(blend.astype(x.dtype), idx)
        high[idx[adv]] = mid[adv]
        low[idx[~adv]] = mid[~adv]
    a = _expand(high[todo], x.ndim)
    start[todo] = ((1 - a) * x[todo] + a * noise[todo]).astype(x.dtype)
    return start, found


def _proposals(x, x_adv, rng, spherical_step, source_step, clip_min, clip_max):
    """Brendel et al.'s candidates: a spherical step, then a step towards the original."""
    ndim = x.ndim
    to_source = x - x_adv
    source_norm = _flat_norm(to_source)
    direction = to_source / _expand(np.maximum(source_norm, 1e-12), ndim)
    eta = rng.standard_normal(x.shape).astype(np.float64)
    # Orthogonal to the direction to the original, of relative length spherical_step.
    eta -= _expand(np.sum((eta * direction).reshape(len(x), -1), 1), ndim) * direction
    eta *= _expand(spherical_step * source_norm / np.maximum(_flat_norm(eta), 1e-12), ndim)
    # Back onto the sphere of radius source_norm around x (Pythagoras).
    scale = _expand(1.0 / np.sqrt(spherical_step ** 2 + 1), ndim)
    spherical = np.clip(x + scale * (eta - to_source), clip_min, clip_max)
    new_to_source = x - spherical
    new_norm = _flat_norm(new_to_source)
    # Step length towards x, corrected for the clip's deviation from the sphere.
    length = np.maximum(source_step * source_norm + new_norm - source_norm, 0.0)
    length /= np.maximum(new_norm, 1e-12)
    candidates = np.clip(spherical + _expand(length, ndim) * new_to_source, clip_min, clip_max)
    return candidates, spherical


def boundary_attack(model, x, y, *, max_queries=1000, spherical_step=0.1, source_step=0.1,
                    step_adaptation=1.5, init="blended_noise", init_attempts=50,
                    clip_min=0.0, clip_max=1.0, seed=0, batch_size=None, xla=True,
                    pad="bucket"):
    """Minimizes the L2 distance of a misclassified point to ``x`` from decisions alone.

    Args:
      model: logits callable (only its argmax is used).
      x: inputs ``[N, ...]`` in ``[clip_min, clip_max]``.
      y: true integer labels ``[N]``.
      max_queries: model queries allowed per sample, everything included.
      spherical_step: initial orthogonal step, relative to the current distance (the
        paper's Chu et al. 2020 setting: 0.1).
      source_step: initial step towards ``x``, relative to the current distance.
      step_adaptation: factor by which the steps grow or shrink.
      init: ``"blended_noise"``: uniform noise images until one is misclassified (at
        most ``init_attempts``), else other images of the batch with another label (at
        most ``init_attempts``), then 10 bisection queries of the start/``x`` blend.
      init_attempts: noise draws allowed per sample.
      clip_min: lower end of the input range.
      clip_max: upper end of the input range.
      seed: seed of the noise and the proposals.
      batch_size: model batch size for the queries (default: all samples at once). An
        adaptive ODE solver's decisions can depend on the batch, so it is an input.
      xla: query the XLA-compiled model (an ODE-Net's forward solve runs faster
        compiled whole), every call padded as ``pad`` says. False: the relaxed graph,
        no padding.
      pad: with ``xla``, ``"bucket"``: pad a call to the `bucket` size that holds it
        (the batch or one of its halvings down to 8), ``"batch"``: to ``batch_size``
        itself (one compiled shape; more rows computed where fewer samples are left).

    Returns:
      An `AttackResult`: per sample the closest adversarial found (``x`` itself where
      none was), ``is_adv`` (True also where ``x`` already was misclassified), the
      queries spent (<= ``max_queries``) and ``details["initial_l2"]``, the L2
      distance right after the initialization (0 where none was found). The oracle
      queries through `tfnode.attacks.predict`; confirm its decisions with the same
      call (`confirm_kwargs` and the same ``batch_size``): at the decision boundary an
      adaptive solver turns another compilation's rounding into other steps.
    """
    check_positive_int(max_queries, "max_queries")
    check_positive_int(init_attempts, "init_attempts")
    if init not in INITS:
        raise TfnodeError(f"unknown boundary init {init!r}; expected one of {list(INITS)}")
    for name, value in (("spherical_step", spherical_step), ("source_step", source_step)):
        if not 0 < value < 1:
            raise TfnodeError(f"{name} must lie in (0, 1), got {value!r}")
    if not step_adaptation > 1:
        raise TfnodeError(f"step_adaptation must be > 1, got {step_adaptation!r}")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    n = len(x)
    rng = np.random.default_rng(seed)
    confirm_kwargs({"pad": pad})  # refuses an unknown pad
    oracle = _Oracle(model, y, max_queries, batch_size or max(n, 1), bool(xla), pad)
    best, is_adv = _initialize(oracle, x, rng, clip_min, clip_max, init_attempts,
                               search_steps=10)
    best = best.astype(np.float64)
    best_l2 = np.where(is_adv, _flat_norm(best - x), np.inf)
    initial_l2 = np.where(is_adv, best_l2, 0.0)
    sph_steps = np.full(n, float(spherical_step))
    src_steps = np.full(n, float(source_step))
    sph_stats = np.full((n, _SPHERICAL_WINDOW), np.nan)
    src_stats = np.full((n, _SOURCE_WINDOW), np.nan)
    xd = x.astype(np.float64)
    step = 0
    while True:
        idx = np.flatnonzero(is_adv & (best_l2 > 0) & (oracle.remaining() > 0))
        if len(idx) == 0:
            break
        step += 1
        cands, spherical = _proposals(xd[idx], best[idx], rng, sph_steps[idx],
                                      src_steps[idx], clip_min, clip_max)
        adv = oracle.is_adversarial(cands.astype(np.float32), idx)
        dist = _flat_norm(cands - xd[idx])
        better = adv & (dist < best_l2[idx])
        best[idx[better]] = cands[better]
        best_l2[idx[better]] = dist[better]
        if step % _STATS_EVERY == 0:
            # As in Foolbox 3, both success windows are fed only on every 10th step.
            src_stats[idx] = np.roll(src_stats[idx], 1, axis=1)
            src_stats[idx, 0] = adv
            # Spherical success is measured on samples that still have a query left.
            has = oracle.remaining()[idx] > 0
            sub = idx[has]
            sph_adv = oracle.is_adversarial(spherical[has].astype(np.float32), sub)
            sph_stats[sub] = np.roll(sph_stats[sub], 1, axis=1)
            sph_stats[sub, 0] = sph_adv
            _adapt(sub, sph_stats, src_stats, sph_steps, src_steps, step_adaptation)
    x_adv = np.where(_expand(is_adv, x.ndim), best, xd).astype(np.float32)
    return AttackResult(x_adv=x_adv, is_adv=is_adv, queries=oracle.queries.copy(),
                        details={"initial_l2": initial_l2})


def _adapt(idx, sph_stats, src_stats, sph_steps, src_steps, factor):
    """Foolbox 3's step-size rules, applied per sample once its window is full."""
    full = ~np.isnan(sph_stats[idx]).any(axis=1)
    rate = np.nanmean(np.where(np.isnan(sph_stats[idx]), 0, sph_stats[idx]), axis=1)
    up, down = full & (rate > 0.5), full & (rate < 0.2)
    sph_steps[idx[up]] *= factor
    src_steps[idx[up]] *= factor
    sph_steps[idx[down]] /= factor
    src_steps[idx[down]] /= factor
    sph_stats[idx[up | down]] = np.nan
    full = ~np.isnan(src_stats[idx]).any(axis=1)
    rate = np.mean(np.where(np.isnan(src_stats[idx]), 0, src_stats[idx]), axis=1)
    up, down = full & (rate > 0.25), full & (rate < 0.1)
    src_steps[idx[up]] *= factor
    src_steps[idx[down]] /= factor
    src_stats[idx[up | down]] = np.nan
    # Steps stay proper fractions: a source step >= 1 would jump onto x itself.
    np.clip(sph_steps, 1e-6, 0.99, out=sph_steps)
    np.clip(src_steps, 1e-6, 0.99, out=src_steps)


# The paper's settings (Chu et al. 2020, Sec. 4): 1000 queries, steps 0.1.
registry.register(registry.AttackSpec(
    name="boundary", fn=boundary_attack, kind="decision-based",
    defaults={"max_queries": 1000, "spherical_step": 0.1, "source_step": 0.1,
              "step_adaptation": 1.5, "xla": True, "pad": "bucket"},
    rules={"max_queries": registry.COUNT, "spherical_step": registry.FRACTION,
           "source_step": registry.FRACTION, "step_adaptation": registry.ABOVE_ONE,
           "xla": registry.BOOL, "pad": registry.one_of(*PADS)},
    takes_batch_size=True, survivors_only=True, minimizes_distance=True, in_audit=True,
    summary="decision-based Boundary Attack, batched, exact per-sample query count, "
            "blended-noise start; an eps cell counts the adversarials found within eps "
            "(Linf)",
    reference="Brendel, Rauber & Bethge 2018"))
