"""Every registered solver against truth: its coefficients, exactness, order, and NFE.

Registry-driven: a tableau added to `tfnode.ode.TABLEAUX` is checked here
without editing this file (coefficients against an independent source where one is
listed in `INDEPENDENT`).
"""

import keras
import numpy as np
import pytest
import scipy.integrate
import tensorflow as tf
from scipy.integrate._ivp import rk as scipy_rk

from tests.layer_test_util import run_layer_test
from tfnode import layers
from tfnode.errors import TfnodeError
from tfnode import ode
from tfnode.ode import TABLEAUX, Tableau, tableaux

ADAPTIVE = [name for name, t in TABLEAUX.items() if t.adaptive]
FIXED = [name for name, t in TABLEAUX.items() if not t.adaptive]


def full_a(t):
    """The tableau's ``a`` as an ``s x s`` strictly lower-triangular matrix."""
    a = np.zeros((t.stages, t.stages))
    for i, row in enumerate(t.a):
        a[i + 1, :len(row)] = row
    return a


# --- coefficients ------------------------------------------------------------------

def _scipy(method):
    """(c, a, b, b - b_hat, orders) of a scipy RK method: scipy stores E = b_hat - b, and
    its last FSAL stage (at c = 1, row b) implicitly."""
    s = method.n_stages
    a = np.zeros((s + 1, s + 1))
    a[:s, :method.A.shape[1]] = method.A
    a[s, :s] = method.B
    return (np.append(method.C, 1.0), a, np.append(method.B, 0.0), -method.E,
            (method.order, method.error_estimator_order))


def _tsit5_ordinarydiffeq():
    """Tsit5 as OrdinaryDiffEq.jl carries it (``Tsit5ConstantCache``): ``a_i1`` given, not
    derived, and the error weights ``btilde = b_hat - b`` to 17+ digits."""
    c = [0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0]
    a = np.zeros((7, 7))
    a[1, 0] = 0.161
    a[2, :2] = [-0.008480655492356989, 0.335480655492357]
    a[3, :3] = [2.8971530571054935, -6.359448489975075, 4.3622954328695815]
    a[4, :4] = [5.325864828439257, -11.748883564062828, 7.4955393428898365,
                -0.09249506636175525]
    a[5, :5] = [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
                -0.028269050394068383]
    b = [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
         -3.290069515436081, 2.324710524099774, 0.0]
    a[6] = b
    btilde = [-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995,
              -0.1447110071732629, 0.5823571654525552, -0.45808210592918697,
              0.015151515151515152]
    return np.array(c), a, np.array(b), -np.array(btilde), (5, 4)


# Sources that did not write tfnode's tables: scipy's RK23/RK45 tables and Julia's Tsit5.
INDEPENDENT = {"bosh3": lambda: _scipy(scipy_rk.RK23),
               "dopri5": lambda: _scipy(scipy_rk.RK45),
               "tsit5": _tsit5_ordinarydiffeq}


@pytest.mark.parametrize("name", sorted(INDEPENDENT))
def test_coefficients_match_an_independent_source(name):
    t = TABLEAUX[name]
    c, a, b, error, orders = INDEPENDENT[name]()
    # The orders set the step controller's exponent 1 / (error_order + 1) (scipy's
    # error_exponent), which the convergence tests below cannot see.
    assert (t.order, t.error_order) == orders
    assert t.step_exponent == 1 / (orders[1] + 1)
    np.testing.assert_allclose(t.c, c, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(full_a(t), a, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(t.b, b, rtol=1e-14, atol=1e-15)
    # The printed Tsit5 error weights have 15 decimals.
    np.testing.assert_allclose(t.error, error, rtol=1e-11, atol=1e-15)


def _attach(tree):
    """Every tree made by adding one leaf to ``tree`` (a sorted tuple of subtrees)."""
    grown = [tuple(sorted(tree + ((),)))]
    for i, child in enumerate(tree):
        grown += [tuple(sorted(tree[:i] + (g,) + tree[i + 1:])) for g in _attach(child)]
    return grown


def rooted_trees(order):
    """The rooted trees with ``order`` nodes (1, 1, 2, 4, 9, 20 for orders 1..6)."""
    trees = {()}
    for _ in range(order - 1):
        trees = {g for t in trees for g in _attach(t)}
    return sorted(trees)


def _size(tree):
    return 1 + sum(_size(u) for u in tree)


def _gamma(tree):
    return _size(tree) * np.prod([_gamma(u) for u in tree])


def _phi(a, tree):
    """Per stage: the elementary weight of ``tree`` without its root's ``b``."""
    out = np.ones(len(a))
    for u in tree:
        out = out * (a @ _phi(a, u))
    return out


def order_residuals(weights, a, order):
    """``b . Phi(t) - 1 / gamma(t)`` for every tree with ``order`` nodes (Butcher's order
    conditions: weights ``b`` give order p iff these vanish for all orders <= p)."""
    return np.array([np.dot(weights, _phi(a, t)) - 1 / _gamma(t)
                     for t in rooted_trees(order)])


def test_rooted_trees_are_counted_right():
    assert [len(rooted_trees(n)) for n in range(1, 7)] == [1, 1, 2, 4, 9, 20]


@pytest.mark.parametrize("name", list(TABLEAUX))
def test_rows_sum_to_the_nodes(name):
    t = TABLEAUX[name]
    np.testing.assert_allclose(full_a(t).sum(axis=1), t.c, atol=1e-14)


@pytest.mark.parametrize("name", list(TABLEAUX))
def test_order_conditions_hold_to_the_stated_order_and_no_further(name):
    t = TABLEAUX[name]
    a = full_a(t)
    pairs = [(np.array(t.b), t.order)]
    if t.adaptive:  # the embedded solution has its own (lower) order
        pairs.append((np.array(t.b) - np.array(t.error), t.error_order))
    for weights, order in pairs:
        for p in range(1, order + 1):
            np.testing.assert_allclose(order_residuals(weights, a, p), 0, atol=1e-12,
                                       err_msg=f"{name}: order {p} of {order}")
        assert np.abs(order_residuals(weights, a, order + 1)).max() > 1e-6, (name, order)


# --- the loops against exact solutions ---------------------------------------------

class Power:
    """``dy/dt = k t^(k-1)``: ``y(t) = y0 + t^k``; counts its own calls."""

    def __init__(self, k):
        self.k = k
        self.calls = tf.Variable(0, dtype=tf.int64)

    def __call__(self, t, y):
        self.calls.assign_add(1)
        rate = self.k * tf.math.pow(t, float(self.k - 1)) if self.k > 1 else tf.ones_like(t)
        return tf.zeros_like(y) + tf.reshape(rate, [-1] + [1] * (len(y.shape) - 1))


Y0 = np.array([[0.5, -1.0], [2.0, 0.25]])


def _solve(fn, name, dtype=tf.float64, **options):
    tableau = TABLEAUX[name]
    if tableau.adaptive:
        options = {"rtol": 1e-6, "atol": 1e-6, "gradient": "backprop", "max_num_steps": 2000,
                   **options}
    else:
        options = {"step_size": 0.25, **options}
    return ode.solve(fn, tf.constant(Y0, dtype), solver=name, **options)


@pytest.mark.parametrize("name", FIXED)
def test_fixed_step_is_its_quadrature_rule_in_time(name):
    # One step of h = 1 on dy/dt = k t^(k-1) is the quadrature sum_i b_i k c_i^(k-1):
    # exactly 1 for k up to the order, and exactly that sum beyond it (a wrong node c_i
    # shows at once; a time-independent test never reads c).
    t = TABLEAUX[name]
    for k in range(1, t.order + 3):
        y, _ = _solve(Power(k), name, step_size=1.0)
        quadrature = sum(b * k * c ** (k - 1) for b, c in zip(t.b, t.c))
        np.testing.assert_allclose(y - Y0, quadrature, rtol=1e-12, err_msg=f"k={k}")
        if k <= t.order:
            np.testing.assert_allclose(y - Y0, 1.0, rtol=1e-12, err_msg=f"k={k}")
    assert abs(quadrature - 1.0) > 1e-3  # k = order + 2 is not exact: the test can fail


@pytest.mark.parametrize("per_sample", [False, True], ids=["batched", "per_sample"])
@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_solvers_integrate_polynomials_in_time_exactly(name, per_sample):
    # Whatever steps the controller takes, k <= order is integrated exactly; k above the
    # order is not (to within the tolerance), which shows the check has teeth.
    t = TABLEAUX[name]
    for k in range(1, t.order + 1):
        y, _ = _solve(Power(k), name, t1=1.5, per_sample_steps=per_sample)
        np.testing.assert_allclose(y - Y0, 1.5 ** k, rtol=1e-12, err_msg=f"k={k}")
    y, _ = _solve(Power(t.order + 1), name, t1=1.5, per_sample_steps=per_sample)
    assert np.abs(y - Y0 - 1.5 ** (t.order + 1)).max() > 1e-12


def _nonlinear(t, y):
    """A time-dependent, nonlinear, non-stiff test problem (for numpy and TF alike)."""
    sin = tf.sin if isinstance(y, tf.Tensor) else np.sin
    return -0.5 * y + sin(3.0 * t) * y * y / (1.0 + y * y)


def _reference(t1=2.0):
    sol = scipy.integrate.solve_ivp(lambda t, y: _nonlinear(t, y), (0.0, t1), Y0.ravel(),
                                    method="DOP853", rtol=1e-13, atol=1e-13)
    return sol.y[:, -1].reshape(Y0.shape)


@pytest.mark.parametrize("name", FIXED)
def test_fixed_step_convergence_order(name):
    t = TABLEAUX[name]
    exact = _reference()
    h = {1: 0.01, 2: 0.02}.get(t.order, 0.05)
    errors = [np.abs(_solve(_nonlinear, name, t1=2.0, step_size=s)[0] - exact).max()
              for s in (h, h / 2)]
    observed = np.log2(errors[0] / errors[1])
    assert abs(observed - t.order) < 0.25, (errors, observed)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_error_follows_the_tolerance_and_steps_follow_the_order(name):
    # Per-step error control makes the global error proportional to the tolerance, and
    # the step count grow as tol^(-1 / order): the slope tells a 3rd- from a 5th-order
    # pair, and a wrong error weight or exponent moves it.
    t = TABLEAUX[name]
    exact = _reference(t1=20.0)
    # Four tolerances over which each method takes tens to hundreds of steps.
    tols = [1e-4, 1e-5, 1e-6, 1e-7] if t.order <= 3 else [1e-5, 1e-7, 1e-9, 1e-11]
    errors, steps = [], []
    for tol in tols:
        # The budget is 5x what the tightest tolerance needs: a broken method fails
        # here instead of crawling.
        y, stats = _solve(_nonlinear, name, t1=20.0, rtol=tol, atol=tol, max_num_steps=2000)
        errors.append(np.abs(y.numpy() - exact).max())
        steps.append(int(stats.steps))
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:])), errors
    assert all(0.01 * tol < e < 100 * tol for e, tol in zip(errors, tols)), errors
    slope = np.polyfit(np.log(tols), np.log(steps), 1)[0]
    assert abs(slope + 1 / t.order) < 0.2 / t.order, (steps, slope)


# --- NFE and step statistics, counted by the function itself ------------------------

def _stiffish(counter):
    def fn(t, y):
        counter.assign_add(1)
        return tf.cos(5.0 * tf.reshape(t, [-1, 1]) * tf.ones_like(y)) * 4.0 - y
    return fn


WAYS = {"backprop": dict(gradient="backprop"),
        "backprop_jit": dict(gradient="backprop", jit_step=True),
        "per_sample": dict(gradient="backprop", per_sample_steps=True),
        "per_sample_jit": dict(gradient="backprop", per_sample_steps=True, jit_step=True),
        "adjoint": dict(gradient="adjoint")}


def _ways(name):
    return [w for w in WAYS if w != "adjoint" or name in ode.ADJOINT_SOLVERS]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("name,way", [(n, w) for n in ADAPTIVE for w in _ways(n)])
def test_nfe_is_the_true_count_and_the_statistics_add_up(name, way, graph):
    counter = tf.Variable(0, dtype=tf.int32)
    fn = _stiffish(counter)
    y0 = tf.constant(np.random.default_rng(0).normal(size=(3, 4)) * [[1.0], [10.0], [0.1]],
                     tf.float32)
    # A first step of 1 on [0, 3] at tight tolerances forces rejected steps.
    options = dict(solver=name, t1=3.0, rtol=1e-5, atol=1e-5, first_step_size=1.0,
                   **WAYS[way])

    def run(y):
        return ode.solve(fn, y, **options)

    _, stats = (tf.function(run) if graph else run)(y0)
    nfe, steps = int(stats.nfe), int(stats.steps)
    assert nfe == int(counter.numpy()), (nfe, int(counter.numpy()))
    per_step = TABLEAUX[name].evaluations_per_step
    assert nfe == 1 + per_step * steps
    if stats.accepted is None:  # TFP: it does not report accepted and rejected steps
        assert way == "adjoint"
        return
    accepted, rejected = np.asarray(stats.accepted), np.asarray(stats.rejected)
    assert rejected.min() > 0 and accepted.min() > 0, (accepted, rejected)
    if "per_sample" in way:
        assert accepted.shape == (3,) and (accepted + rejected).max() == steps
        assert len(set(accepted.tolist())) > 1  # samples on other scales step apart
    else:
        assert accepted + rejected == steps


@pytest.mark.parametrize("name", FIXED)
def test_fixed_step_nfe_is_the_true_count(name):
    counter = tf.Variable(0, dtype=tf.int32)
    _, stats = ode.solve(_stiffish(counter), tf.ones((2, 3)), solver=name,
                         step_size=0.3, t1=3.0)  # 10 steps: the tf.while_loop path
    assert int(stats.nfe) == int(counter.numpy()) == 10 * TABLEAUX[name].stages
    assert (int(stats.accepted), int(stats.rejected)) == (10, 0)


def test_automatic_first_step_costs_one_evaluation_more():
    counts = []
    for first in (None, 0.1):
        counter = tf.Variable(0, dtype=tf.int32)
        _, stats = ode.solve(_stiffish(counter), tf.ones((2, 3)), solver="tsit5",
                             first_step_size=first)
        assert int(stats.nfe) == int(counter.numpy())
        counts.append(int(stats.nfe) - 6 * int(stats.steps))
    assert counts == [2, 1]


# --- the block: every solver is a layer, with its statistics as metrics --------------

def _block_options(name):
    return {"rtol": 1e-2, "atol": 1e-2} if TABLEAUX[name].adaptive else {"step_size": 0.5}


@pytest.mark.parametrize("name", list(TABLEAUX))
def test_every_solver_makes_a_valid_layer(name):
    run_layer_test(lambda: layers.ODEBlock(layers.ODEFunc(4), solver=name,
                                           **_block_options(name)), (3, 3, 4))


@pytest.mark.parametrize("name", ADAPTIVE)
def test_step_statistics_are_keras_metrics(name):
    inputs = keras.Input((3, 3, 4))
    x = layers.ODEBlock(layers.ODEFunc(4), solver=name, gradient="backprop",
                        **_block_options(name))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    xs = np.random.default_rng(0).normal(size=(8, 3, 3, 4)).astype("float32")
    logs = model.evaluate(xs, np.arange(8) % 2, batch_size=8, verbose=0, return_dict=True)
    stats = model.get_layer("ode_block").stats
    assert logs["nfe"] == stats["nfe"] > 0
    assert logs["accepted_steps"] == stats["accepted_steps"] >= 1
    assert logs["rejected_steps"] == stats["rejected_steps"] >= 0
    per_step = TABLEAUX[name].evaluations_per_step
    assert stats["nfe"] == 2 + per_step * (stats["accepted_steps"] + stats["rejected_steps"])


def test_tfp_and_fixed_step_blocks_have_no_step_metrics():
    for options in (dict(), dict(solver="heun", step_size=0.5)):
        block = layers.ODEBlock(layers.ODEFunc(4), **options)
        block(np.ones((1, 3, 3, 4), "float32"))
        assert set(block.stats) == {"nfe"}


# --- options -------------------------------------------------------------------------

@pytest.mark.parametrize("options,match", [
    (dict(solver="tsit5", gradient="adjoint"), "needs solver dopri5"),
    (dict(solver="bosh3", rtol=0.0), "rtol"),
    (dict(solver="heun"), "step_size"),
    (dict(solver="midpoint", step_size=0.1, gradient="adjoint"), "needs solver dopri5"),
    (dict(solver="rk45"), "unknown solver 'rk45'; expected one of"),
])
def test_bad_options_name_the_option(options, match):
    with pytest.raises(TfnodeError, match=match) as err:
        layers.ODEBlock(layers.ODEFunc(4), **options)
    assert "\n" not in str(err.value)


def test_other_adaptive_solvers_default_to_tfnodes_loop():
    # gradient=None means TFP's adjoint only for dopri5: tsit5 per-sample needs nothing.
    block = layers.ODEBlock(layers.ODEFunc(4), solver="tsit5", per_sample_steps=True)
    assert block.step_metrics is not None
    with pytest.raises(TfnodeError, match="per_sample_steps=True needs gradient='backprop'"):
        layers.ODEBlock(layers.ODEFunc(4), solver="dopri5", per_sample_steps=True)


# --- the registry is the extension point ----------------------------------------------

@pytest.fixture
def heun_euler():
    """An adaptive 2(1) pair that is not FSAL (torchdiffeq's adaptive_heun), registered
    for one test only."""
    tableau = tableaux.register(Tableau(
        "heun_euler_test", c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), order=2,
        error=(0.5 - 1.0, 0.5), error_order=1))
    yield tableau
    del TABLEAUX[tableau.name]


def test_a_new_tableau_is_one_registry_entry(heun_euler):
    # Not FSAL: each trial step pays an evaluation at the new solution.
    assert heun_euler.evaluations_per_step == 2 and heun_euler.step_exponent == 0.5
    counter = tf.Variable(0, dtype=tf.int32)
    y, stats = ode.solve(_stiffish(counter), tf.ones((2, 3), tf.float64),
                         solver=heun_euler.name, rtol=1e-6, atol=1e-6)
    assert int(stats.nfe) == int(counter.numpy()) == 2 + 2 * int(stats.steps)
    exact = scipy.integrate.solve_ivp(lambda t, y: 4 * np.cos(5 * t) - y, (0, 1), [1.0],
                                      rtol=1e-12, atol=1e-12).y[0, -1]
    np.testing.assert_allclose(y, exact, rtol=1e-4)
    block = layers.ODEBlock(layers.ODEFunc(4), solver=heun_euler.name)
    assert block.step_metrics is not None


def test_tableau_shapes_are_checked():
    with pytest.raises(ValueError, match="explicit stages"):
        Tableau("bad", c=(0.0, 1.0), a=(), b=(0.5, 0.5), order=2)
    with pytest.raises(ValueError, match="fsal"):
        Tableau("bad", c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), order=2,
                error=(0.5, -0.5), error_order=1, fsal=True)
    with pytest.raises(ValueError, match="registered twice"):
        tableaux.register(TABLEAUX["rk4"])


# --- the step controller ---------------------------------------------------------------

@pytest.mark.parametrize("ratio,exponent,factor", [
    (0.5, 0.2, 0.9 * 0.5 ** -0.2),  # accepted: grow by the optimal factor
    (0.99, 0.2, 1.0),  # accepted: 0.9 * 0.99^-0.2 < 1, but never shrink after an accept
    (1.0, 0.2, 0.9),  # the boundary counts as accepted by the loop, yet may shrink
    (8.0, 1 / 3, 0.45),  # rejected, bosh3's exponent: 0.9 / 2
    (1e6, 0.2, 0.2),  # rejected badly: shrink at most 5x
    (0.0, 0.2, 10.0),  # no error at all: grow at most 10x
])
def test_step_factor_is_torchdiffeqs(ratio, exponent, factor):
    from tfnode.ode.adaptive_loop import _step_factor

    for dtype in (tf.float32, tf.float64):
        got = _step_factor(tf.constant(ratio, dtype), exponent)
        assert got.dtype == dtype
        np.testing.assert_allclose(float(got), factor, rtol=1e-6)


@pytest.mark.parametrize("per_sample", [False, True], ids=["batched", "per_sample"])
def test_a_non_finite_state_ends_the_solve_at_once(per_sample):
    # NaN from t = 0.5 on: no smaller step can be trusted, so the loop stops at the first
    # non-finite error instead of spending its budget of 1000 trial steps.
    counter = tf.Variable(0, dtype=tf.int32)

    def fn(t, y):
        counter.assign_add(1)
        bad = tf.reshape(t, [-1, 1]) > 0.5
        return tf.where(bad, tf.constant(np.nan, y.dtype), -y)

    with pytest.raises(tf.errors.InvalidArgumentError, match="did not reach t1"):
        ode.solve(fn, tf.ones((2, 3)), solver="tsit5", max_num_steps=1000,
                  per_sample_steps=per_sample)
    assert int(counter.numpy()) < 100, int(counter.numpy())


@pytest.mark.parametrize("per_sample", [False, True], ids=["batched", "per_sample"])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_a_blown_up_solve_names_the_block_tolerances_and_steps_in_one_line(per_sample, graph):
    from tfnode import errors

    def fn(t, y):
        return 50.0 * y * y  # y' = 50 y^2 from y = 1 blows up at t = 0.02

    def solve(y0):
        return ode.solve(fn, y0, solver="dopri5", gradient="backprop", rtol=1e-4,
                         atol=1e-5, max_num_steps=30, per_sample_steps=per_sample,
                         label="ODE block 'odeblk'")[0]

    run = tf.function(solve, autograph=False) if graph else solve
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        run(tf.ones((2, 3)))
    line = errors.solver_failure(info.value)
    assert "\n" not in line
    assert line.startswith("ODE block 'odeblk': dopri5 did not reach t1=1 (rtol=0.0001, "
                           "atol=1e-05, max_num_steps=30); trial steps taken: 30; time "
                           "reached: 0.0"), line
    assert errors.solver_failure(tf.errors.InvalidArgumentError(None, None, "other")) is None

