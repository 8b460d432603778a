"""The statistics every reported number carries, from statsmodels and scipy.

* `wilson`: a proportion's 95% Wilson score interval (Wilson 1927), the interval
  RobustBench-style tables need at small n and near 0 or 1, where the normal
  approximation's interval leaves [0, 1].
* `mcnemar`: two models (or two attacks) on the same images: the exact two-sided
  McNemar test (a binomial test on the discordant pairs), which uses the pairing that
  two independent proportions' tests throw away.
* `holm`: Holm's step-down correction of the p-values of one claim's cells (Holm 1979):
  a claim judged at several eps is one family of tests.
* `wilcoxon`: paired distances (the Boundary Attack's L2 on the same images), the
  Wilcoxon signed-rank test.

No formula is written out here: each is the library's, so it is checked where the
library is.
"""

import numpy as np

ALPHA = 0.05


def wilson(successes, n, *, alpha=ALPHA):
    """The Wilson score interval of ``successes`` out of ``n``.

    Returns:
      ``(low, high)`` as proportions; ``(None, None)`` for ``n == 0``.
    """
    if n == 0:
        return None, None
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(int(successes), int(n), alpha=alpha, method="wilson")
    # statsmodels returns numpy floats a hair outside [0, 1] at the ends; JSON wants floats.
    return float(max(0.0, low)), float(min(1.0, high))


def proportion(successes, n, *, alpha=ALPHA):
    """A proportion as the reports store it: ``{"k", "n", "p", "ci95"}``."""
    low, high = wilson(successes, n, alpha=alpha)
    return {"k": int(successes), "n": int(n), "p": float(successes) / n if n else None,
            "ci95": [low, high]}


def mcnemar(a, b):
    """The exact two-sided McNemar test of two bool outcomes on the same examples.

    Args:
      a, b: bool arrays of one length (e.g. "robust" per example, model A and model B).

    Returns:
      ``{"n", "a_only", "b_only", "both", "neither", "difference", "p_value"}``:
      ``a_only`` counts the examples where only ``a`` holds, ``difference`` is
      ``mean(a) - mean(b)``; ``p_value`` is 1.0 when no pair is discordant.

    Raises:
      ValueError: the arrays differ in length.
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in shape: {a.shape} vs {b.shape}")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    both, neither = int(np.sum(a & b)), int(np.sum(~a & ~b))
    p_value = 1.0
    if a_only + b_only:
        from statsmodels.stats.contingency_tables import mcnemar as _mcnemar

        p_value = float(_mcnemar([[both, a_only], [b_only, neither]], exact=True).pvalue)
    return {"n": int(a.size), "a_only": a_only, "b_only": b_only, "both": both,
            "neither": neither,
            "difference": float(a.mean() - b.mean()) if a.size else 0.0,
            "p_value": p_value}


def holm(p_values, *, alpha=ALPHA):
    """Holm-corrected p-values, in the order given (an empty list for none)."""
    if len(p_values) == 0:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(p_values), alpha=alpha, method="holm")[1]]


def significant(p_value, difference, *, alpha=ALPHA):
    """Whether a paired difference counts: its (corrected) p-value below ``alpha`` and
    the difference itself nonzero (a p-value of None, no test, never counts)."""
    return p_value is not None and p_value < alpha and bool(difference)


def no_difference(n):
    """What a verdict says where `significant` does not hold, at ``n`` pairs."""
    return f"no difference measurable at n = {n}"


def wilcoxon(a, b):
    """The two-sided Wilcoxon signed-rank test of paired values ``a`` and ``b``.

    Returns:
      ``{"n", "median_a", "median_b", "median_difference", "p_value"}``, over the pairs
      where both are finite; ``p_value`` is None with fewer than one non-zero
      difference (nothing to rank).
    """
    from scipy import stats as scipy_stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    out = {"n": int(a.size),
           "median_a": float(np.median(a)) if a.size else None,
           "median_b": float(np.median(b)) if b.size else None,
           "median_difference": float(np.median(d)) if d.size else None, "p_value": None}
    if np.any(d != 0):
        out["p_value"] = float(scipy_stats.wilcoxon(a, b, alternative="two-sided").pvalue)
    return out
