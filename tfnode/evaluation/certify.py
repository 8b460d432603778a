"""Certified robust accuracy by interval bound propagation (``--certify``).

Per eps, an example is certified when the interval bounds of `tfnode.bounds` prove the
model's label logit the largest over the whole L-infinity ball (within the image range):
no attack can break it. Certified accuracy is therefore a lower bound of the true
robust accuracy, and the attacks' worst case an upper bound: the report brackets the
truth, ``certified <= robust <= worst case``, per example (the check
``certificate holds``: no certified example broken by any attack) and per eps.

IBP bounds are loose for models not trained for them (Gowal et al. 2018): expect 0%
certified at MNIST's budgets for standard or PGD-trained models, most of all through
GroupNorm; ``--defense=ibp`` trains models whose bounds are tight.
"""

import time

import numpy as np

from tfnode import bounds, stats
from tfnode.evaluation import outcomes


def check(models):
    """Raises a one-line `ConfigError` before any work for a model bounds cannot pass
    (`tfnode.bounds.check_model`: an adaptive solver, a layer without a rule)."""
    for model in models:
        bounds.check_model(model)


def cell(mask, seconds, eps):
    """One eps's certified result from its per-example mask (``eps`` exact: its key in
    the report rounds it)."""
    mask = np.asarray(mask, bool)
    return {"eps": float(eps), "certified": outcomes.encode(mask), "num_certified": int(mask.sum()),
            "num_examples": int(mask.size), "certified_accuracy": float(mask.mean()),
            "ci95": list(stats.wilson(int(mask.sum()), mask.size)), "seconds": seconds}


def certify(model, x, y, eps, batch_size):
    """``{eps_key: cell}`` over the examples ``x, y`` (numpy), in batches."""
    out = {}
    for e in eps:
        start = time.time()
        mask = np.concatenate([
            bounds.certified(model, x[i:i + batch_size], y[i:i + batch_size], e).numpy()
            for i in range(0, len(y), batch_size)])
        out[outcomes.eps_key(e)] = cell(mask, time.time() - start, e)
    return out


def merged(results):
    """The certified cells of shard results joined in order (`tfnode.evaluation.shards`)."""
    if "certified" not in results[0]:
        return None
    return {k: cell(np.concatenate([outcomes.decode(r["certified"][k]["certified"])
                                    for r in results]),
                    sum(r["certified"][k]["seconds"] for r in results),
                    results[0]["certified"][k].get("eps", k))  # older reports: the key
            for k in results[0]["certified"]}
