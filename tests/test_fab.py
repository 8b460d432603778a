"""FAB-T against truth: its Linf projection against a linear program (scipy), and on a
linear model, whose decision boundaries are hyperplanes, the closest adversarial it finds
against the exact minimal Linf distance (a linear program per wrong class); the eps ball,
the clip range, the verdict, and the registry."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linprog

from tfnode import attacks
from tfnode.attacks.fab import fab_t, projection_linf
from tfnode.errors import TfnodeError

from tests.test_attacks import images, linear_model


def min_linf(t, w, b, *, halfspace=False):
    """min ||d||_inf with w.(t + d) = b (or >= b), 0 <= t + d <= 1: a linear program in
    (d, s), minimizing s with -s <= d_i <= s."""
    n = len(t)
    c = np.r_[np.zeros(n), 1.0]
    box = [(-ti, 1 - ti) for ti in t] + [(0, None)]
    rows = np.vstack([np.c_[np.eye(n), -np.ones(n)], np.c_[-np.eye(n), -np.ones(n)]])
    eq = dict(A_eq=[np.r_[w, 0.0]], b_eq=[b - w @ t])
    if halfspace:
        eq = dict(A_ub=np.vstack([rows, np.r_[-w, 0.0]]), b_ub=np.r_[np.zeros(2 * n), w @ t - b])
        res = linprog(c, bounds=box, method="highs", **eq)
    else:
        res = linprog(c, A_ub=rows, b_ub=np.zeros(2 * n), bounds=box, method="highs", **eq)
    assert res.status == 0
    return res.fun


def test_projection_is_the_linear_programs_minimum():
    rng = np.random.default_rng(0)
    n, dims = 40, 12
    t = rng.uniform(0, 1, (n, dims))
    w = rng.normal(size=(n, dims)) * (rng.random((n, dims)) < 0.8)  # some zero weights
    b = np.sum(w * rng.uniform(0, 1, (n, dims)), axis=1)  # a box point lies on each plane
    d = projection_linf(t, w, b)
    np.testing.assert_allclose(np.sum(w * (t + d), axis=1), b, atol=1e-9)
    assert np.all(t + d >= -1e-12) and np.all(t + d <= 1 + 1e-12)
    want = [min_linf(t[i], w[i], b[i]) for i in range(n)]
    np.testing.assert_allclose(np.max(np.abs(d), axis=1), want, rtol=1e-7, atol=1e-9)


def exact_minimal_distance(w, b, x, y):
    """Per sample, the smallest Linf perturbation within [0, 1] that makes a wrong class's
    logit reach the true one's, for logits (x - 0.5) @ w + b."""
    out = []
    for xi, yi in zip(np.reshape(x, (len(x), -1)).astype(np.float64), y):
        out.append(min(min_linf(xi, w[:, t] - w[:, yi], 0.5 * np.sum(w[:, t] - w[:, yi])
                                - (b[t] - b[yi]), halfspace=True)
                       for t in range(w.shape[1]) if t != yi))
    return np.array(out)


def test_on_a_linear_model_it_finds_the_minimal_adversarial():
    fn, w, b = linear_model(num_classes=4, seed=1)
    x = images(12, seed=3)
    y = attacks.predict(fn, x)
    exact = exact_minimal_distance(w, b, x, y)
    result = fab_t(fn, x, y, eps=1.0, num_targets=3, return_result=True)
    found = result.details["distance"]
    assert np.all(result.is_adv)
    # Never closer than the exact minimum. The first step lands exactly at the
    # overshoot eta = 1.05 of it (the projection is exact on a hyperplane); the pull-backs
    # by beta then bring it within 1%.
    assert np.all(found >= exact * (1 - 1e-5)), (found, exact)
    assert np.all(found <= exact * 1.01), (found / exact)
    one = fab_t(fn, x, y, eps=1.0, num_targets=3, num_steps=1, return_result=True)
    np.testing.assert_allclose(one.details["distance"], 1.05 * exact, rtol=1e-4)


def test_the_verdict_and_the_eps_ball():
    fn, w, b = linear_model(num_classes=4, seed=1)
    x = images(12, seed=3, edges=True)
    y = attacks.predict(fn, x)
    exact = exact_minimal_distance(w, b, x, y)
    eps = float(np.median(exact))
    result = fab_t(fn, x, y, eps=eps, num_targets=3, return_result=True)
    x_adv = np.asarray(result.x_adv)
    gap = np.max(np.abs(np.reshape(x_adv - x, (len(x), -1))), axis=1)
    assert np.all(gap <= eps + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1
    # Broken exactly where an adversarial within eps was found, and never below the
    # exact minimum; unbroken samples come back unchanged.
    np.testing.assert_array_equal(result.is_adv, result.details["distance"] <= eps)
    assert not np.any(result.is_adv & (exact > eps * (1 + 1e-5)))
    assert np.all(attacks.predict(fn, x_adv)[result.is_adv] != y[result.is_adv])
    np.testing.assert_array_equal(x_adv[~result.is_adv], x[~result.is_adv])
    # Early exit changes no verdict.
    fast = fab_t(fn, x, y, eps=eps, num_targets=3, early_exit=True, return_result=True)
    np.testing.assert_array_equal(fast.is_adv, result.is_adv)


def test_registry_entry_and_one_line_errors():
    spec = attacks.get("fab_t")
    assert spec.options() == {"num_steps": 100, "num_targets": 9, "restarts": 1,
                              "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}
    fn, _, _ = linear_model(num_classes=4, seed=1)
    x = images(4)
    y = attacks.predict(fn, x)
    with pytest.raises(TfnodeError, match="num_targets must be below the number of classes"):
        fab_t(fn, x, y, eps=0.1)
    result = spec.run(fn, x, y, eps=0.3, seed=1, num_targets=2, num_steps=5, restarts=2)
    assert result.x_adv.shape == x.shape and result.is_adv.dtype == bool
