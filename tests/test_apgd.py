"""APGD against a numpy port of the reference loop, and its budget, strength, seeds, restarts."""

import numpy as np
import pytest
import tensorflow as tf

from tfnode.attacks._utils import logits_fn
import importlib
from tfnode.attacks.apgd import apgd, apgd_ce, apgd_dlr, apgd_start
from tfnode.attacks.apgd_losses import GRADIENTS, _dlr, _dlr_targeted
from tfnode.attacks.apgd_t import apgd_t
from tfnode.attacks.gradient import pgd
from tfnode.errors import TfnodeError

from tests.test_attacks import SHAPE, images
from tests.test_attacks import mlp_model as conv_model


def linear_model(num_classes=4, seed=0, hidden=0):
    """logits = flatten(x - 0.5) @ W + b, as a plain tf.function, and its parameters.

    ``hidden > 0``: ``tanh(flatten(x - 0.5) @ V) @ W + b`` instead, whose loss is not
    concave in the box, so that an iterate can lose ground (still with a hand-written
    gradient for the reference).
    """
    rng = np.random.default_rng(seed)
    features = int(np.prod(SHAPE))
    v = rng.normal(size=(features, hidden)).astype(np.float32) if hidden else None
    w = rng.normal(size=(hidden or features, num_classes)).astype(np.float32)
    b = (rng.normal(size=(num_classes,)) * 0.1).astype(np.float32)

    def logits(x):
        h = tf.reshape(x - 0.5, (tf.shape(x)[0], -1))
        return (tf.tanh(h @ v) if hidden else h) @ w + b
    return tf.function(logits), (v, w, b)


def predictions(model, x):
    # The logits callable the attack differentiates, so that its decisions are the ones
    # checked here (an XLA-compiled forward could round a boundary sample the other way).
    return np.argmax(logits_fn(model, per_shape=True)(tf.constant(x)).numpy(), axis=-1)


def ce(model, x, y):
    logits = logits_fn(model, per_shape=True)(tf.constant(x))
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits).numpy()


def loss_and_gradient(params, x, y, loss):
    """Per-sample loss (float32), logits and analytic input gradient (float32)."""
    v, w, b = (None if p is None else p.astype(np.float64) for p in params)
    n = len(x)
    rows = np.arange(n)
    h = (x.astype(np.float64) - 0.5).reshape(n, -1)
    a = h if v is None else np.tanh(h @ v)
    z = a @ w + b
    if loss == "ce":
        m = z.max(axis=1, keepdims=True)
        p = np.exp(z - m)
        p /= p.sum(axis=1, keepdims=True)
        value = m[:, 0] + np.log(np.exp(z - m).sum(axis=1)) - z[rows, y]
        dz = p.copy()
        dz[rows, y] -= 1.0
    else:  # the reference's dlr_loss, sorted ascending as torch.sort does
        order = np.argsort(z, axis=1)
        first, second, third = order[:, -1], order[:, -2], order[:, -3]
        other = np.where(first == y, second, first)
        num = z[rows, y] - z[rows, other]
        den = z[rows, first] - z[rows, third] + 1e-12
        value = -num / den
        dz = np.zeros_like(z)
        dz[rows, y] -= 1.0 / den
        dz[rows, other] += 1.0 / den
        dz[rows, first] += num / den ** 2
        dz[rows, third] -= num / den ** 2
    grad = dz @ w.T
    if v is not None:
        grad = (grad * (1.0 - a * a)) @ v.T
    grad = grad.reshape(x.shape)
    return value.astype(np.float32), z, grad.astype(np.float32)


def reference_single_run(evaluate, x, y, *, eps, n_iter, rho=0.75, seed=0):
    """A numpy port of AutoAttack's ``APGDAttack.attack_single_run`` (Linf, eot_iter=1).

    Written from fra31/auto-attack's autoattack/autopgd_base.py, with its names, from the
    same start; ``evaluate(x_adv)`` gives the per-sample loss, the logits and the
    gradient of the summed loss (the reference's ``criterion_indiv`` and autograd).
    Returns ``(x_best, acc, loss_best, x_best_adv, counts)``, counts of the events a
    test must see to exercise a condition: ``halved`` (per sample), ``halved_no_impr``
    (halvings for no improvement alone, per sample), ``no_impr_first`` (samples whose
    best loss did not improve before the first checkpoint, where the initial
    ``reduced_last_check`` decides), ``at_threshold`` (checks with exactly ``rho * k``
    rises, where ``<=`` decides) and ``y_third`` (evaluations where z_y was the third
    logit).
    """
    x = np.asarray(x, np.float32)
    n = len(x)
    eps32 = np.float32(eps)

    def clip_to_ball(z):  # the reference's min/max/clamp
        return np.clip(np.minimum(np.maximum(z, x - eps32), x + eps32), 0.0, 1.0)

    x_adv = apgd_start(x, eps=eps, seed=seed).numpy()
    x_best, x_best_adv = x_adv.copy(), x_adv.copy()
    loss_steps = np.zeros((n_iter, n), np.float32)
    counts = {"halved": np.zeros(n, int), "halved_no_impr": np.zeros(n, int),
              "no_impr_first": 0, "at_threshold": 0, "y_third": 0}

    def criterion_indiv(x_adv):
        loss_indiv, z, grad = evaluate(x_adv)
        counts["y_third"] += np.sum((z > z[np.arange(n), y][:, None]).sum(axis=1) == 2)
        return loss_indiv, z.argmax(axis=1), grad

    loss_indiv, pred, grad = criterion_indiv(x_adv)
    grad_best = grad.copy()
    acc = pred == y
    loss_best = loss_indiv.copy()
    step_size = np.full((n, 1, 1, 1), 2.0 * eps, np.float32)
    x_adv_old = x_adv.copy()
    n_iter_2 = max(int(0.22 * n_iter), 1)
    n_iter_min = max(int(0.06 * n_iter), 1)
    size_decr = max(int(0.03 * n_iter), 1)
    k = n_iter_2
    counter3 = 0
    loss_best_last_check = loss_best.copy()
    reduced_last_check = np.ones(n, np.float32)
    for i in range(n_iter):
        grad2 = x_adv - x_adv_old
        x_adv_old = x_adv.copy()
        a = 0.75 if i > 0 else 1.0
        x_adv_1 = clip_to_ball(x_adv + step_size * np.sign(grad))
        x_adv_1 = clip_to_ball(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a))
        x_adv = x_adv_1

        loss_indiv, pred, grad = criterion_indiv(x_adv)
        pred = pred == y
        acc = np.minimum(acc, pred)
        x_best_adv[~pred] = x_adv[~pred]
        loss_steps[i] = loss_indiv
        ind = loss_indiv > loss_best
        x_best[ind] = x_adv[ind]
        grad_best[ind] = grad[ind]
        loss_best[ind] = loss_indiv[ind]

        counter3 += 1
        if counter3 == k:
            # check_oscillation; index -1 wraps to the last row, as torch's does.
            t = np.zeros(n)
            for counter5 in range(k):
                t += loss_steps[i - counter5] > loss_steps[i - counter5 - 1]
            fl_oscillation = (t <= k * rho).astype(np.float32)
            fl_reduce_no_impr = (1.0 - reduced_last_check) * (
                loss_best_last_check >= loss_best)
            counts["halved_no_impr"] += (fl_reduce_no_impr > fl_oscillation)
            counts["at_threshold"] += np.sum(t == k * rho)
            if i == n_iter_2 - 1:
                counts["no_impr_first"] += np.sum((loss_best_last_check >= loss_best)
                                                  & (fl_oscillation == 0))
            fl_oscillation = np.maximum(fl_oscillation, fl_reduce_no_impr)
            reduced_last_check = fl_oscillation.copy()
            loss_best_last_check = loss_best.copy()
            ind_fl_osc = fl_oscillation > 0
            if ind_fl_osc.any():
                step_size[ind_fl_osc] /= 2.0
                counts["halved"] += ind_fl_osc
                x_adv[ind_fl_osc] = x_best[ind_fl_osc]
                grad[ind_fl_osc] = grad_best[ind_fl_osc]
            k = max(k - size_decr, n_iter_min)
            counter3 = 0
    return x_best, acc, loss_best, x_best_adv, counts


def compiled_loss_and_gradient(model, y, loss, target=None):
    """`loss_and_gradient` through apgd's own compiled loss and gradient, on numpy."""
    gradient, fn, labels = GRADIENTS[loss], logits_fn(model, per_shape=True), tf.constant(y)
    target = tf.constant(np.zeros(len(y), np.int64) if target is None else target)

    def evaluate(x_adv):
        value, logits, grad = gradient(fn, tf.constant(x_adv), labels, target)
        return value.numpy(), logits.numpy(), grad.numpy()
    return evaluate


def check_against_reference(fn, evaluate, x, y, *, loss, eps, n_iter, rho=0.75):
    x_best, acc, _, x_best_adv, counts = reference_single_run(
        evaluate, x, y, eps=eps, n_iter=n_iter, rho=rho)
    # The run must exercise what it checks: the checkpoints' halvings, and both fooled
    # samples (x_best_adv) and robust ones (x_best).
    assert counts["halved"].max() >= 1
    assert 0 < acc.sum() < len(x)
    expected = np.where(acc[:, None, None, None], x_best, x_best_adv)
    ours = apgd(fn, x, y, eps=eps, num_steps=n_iter, loss=loss, rho=rho).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_array_equal(predictions(fn, ours) != y, ~acc)
    return counts


# Hand-written losses and gradients in float64 against apgd's float32 graph: equal up to
# rounding, and the loop's comparisons agree where no two losses compared are within
# rounding of each other. On the linear model the iterates settle on vertices of the
# box, whose losses repeat exactly; that also makes this test blind to most details of
# the step and the checkpoints, which the next one checks. Where z_y is exactly the
# third logit, DLR is (z_pi1 - z_y) / (z_pi1 - z_y) = 1, flat, and its gradient is
# rounding noise (in the reference too): the DLR setting never gets there (asserted).
@pytest.mark.parametrize("loss,num_classes,model_seed,eps", [
    ("ce", 4, 0, 0.03),
    ("dlr", 3, 1, 0.01),
])
def test_apgd_is_the_reference_loop_on_a_linear_model(loss, num_classes, model_seed, eps):
    fn, params = linear_model(num_classes, model_seed)
    x = images(n=24)
    y = predictions(fn, x)

    def evaluate(x_adv):
        return loss_and_gradient(params, x_adv, y, loss)
    counts = check_against_reference(fn, evaluate, x, y, loss=loss, eps=eps, n_iter=60)
    if loss == "dlr":
        assert counts["y_third"] == 0


def peaked_model(loss, eps, *, slope=4.0, floor=4.0):
    """A model whose loss peaks at a chosen point of each eps-ball, and its images.

    The logits depend on pixel (0, 0) alone, ``u``: ``z = [0, b - slope * |u - p|]``
    (``loss="ce"``) or ``[0, b - slope * |u - p|, -floor]`` (``"dlr"``; with y = 0 and
    ``z_1 < 0`` the DLR loss is ``z_1 / floor``), so the loss of y = 0 rises as ``u``
    nears the peak ``p``, which pixel (0, 1) holds, and ``b`` (pixel (0, 2) minus 0.5)
    decides whether the peak is misclassified. Both are read through ``stop_gradient``:
    every other pixel's gradient is exactly 0, so APGD moves ``u`` alone. Every sixth
    peak is APGD's start itself (seed 0), where ``|u - p|`` is written as a maximum so
    that its gradient is not 0; the others sit at fractions of eps from the clean ``u``
    (pixels (0, 1) and (0, 2) as APGD's start leaves them, which no step moves).

    Why the checkpoints' conditions hold by construction, not by rounding: APGD's first
    step (2 eps) jumps past the peak, so the best loss is set in the first steps (at a
    start on the peak: by the start, the maximum, which no step can exceed) and the
    later ones oscillate below it: the loss rises in many steps of a window (no halving
    for oscillation) while the best loss stays where it was (a halving for no
    improvement at the next checkpoint). And the model is elementwise TensorFlow ops
    only: no matmul or convolution, whose oneDNN kernels (and so their rounding) are
    chosen per CPU, which is what made a tanh-MLP version of this case halve on one
    CPU and not on another.
    """
    x = images(n=24)
    # Pixels (0, 1) and (0, 2) get no gradient, so they keep the values APGD's start
    # (seed 0) gives them: the images are set so that those are the peak and 0.5 + b.
    # The start's offsets do not depend on x here (no pixel is clipped).
    offset = apgd_start(x, eps=eps, seed=0).numpy() - x
    fractions = np.resize([0.1, 0.37, -0.3, 0.61, -0.77, np.nan], len(x))
    u = x[:, 0, 0, 0]
    peaks = np.where(np.isnan(fractions), u + offset[:, 0, 0, 0],
                     u + np.nan_to_num(fractions) * eps)
    x[:, 0, 1, 0] = peaks - offset[:, 0, 1, 0]
    x[:, 0, 2, 0] = np.where(np.arange(len(x)) % 2 == 0, 0.8, 0.3) - offset[:, 0, 2, 0]
    assert x.min() > 0 and x.max() < 1

    def logits(v):
        u = v[:, 0, 0, 0]
        peak, b = tf.stop_gradient(v[:, 0, 1, 0]), tf.stop_gradient(v[:, 0, 2, 0] - 0.5)
        # |u - p| whose gradient at u = p is that of u - p (TF's maximum passes a tie's
        # gradient to its first argument), not tf.abs's 0.
        z1 = b - slope * tf.maximum(u - peak, peak - u)
        columns = [tf.zeros_like(z1), z1] + ([tf.fill(tf.shape(z1), -floor)]
                                             if loss == "dlr" else [])
        return tf.stack(columns, axis=1)
    return tf.function(logits), x


# A loss that is not concave in the box, where the iterates lose ground and a checkpoint
# halves for no improvement alone (fl_reduce_no_impr; never on the linear model), built
# so that it does on most samples (`peaked_model`). The reference loop evaluates through
# apgd's own compiled loss and gradient: what is compared is the loop. rho = 0.3 leaves
# room for that condition; 100 steps reach the shortest checkpoint interval.
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_is_the_reference_loop_where_it_halves_for_no_improvement(loss):
    eps = 0.1
    fn, x = peaked_model(loss, eps)
    y = np.zeros(len(x), np.int64)
    counts = check_against_reference(fn, compiled_loss_and_gradient(fn, y, loss), x, y,
                                     loss=loss, eps=eps, n_iter=100, rho=0.3)
    assert np.sum(counts["halved_no_impr"] >= 1) >= len(x) // 2  # most samples
    assert counts["no_impr_first"] >= 1  # the initial reduced_last_check decides too


# rho = 0.5 makes k * rho a whole number at the checkpoints of k = 22, 16, 10 and 6,
# where the loss rose in exactly that many steps of some windows: ``<=`` against ``<``
# decides.
def test_apgd_is_the_reference_loop_where_the_rises_equal_the_threshold():
    eps = 0.1
    fn, x = peaked_model("dlr", eps)
    y = np.zeros(len(x), np.int64)
    counts = check_against_reference(fn, compiled_loss_and_gradient(fn, y, "dlr"), x, y,
                                     loss="dlr", eps=eps, n_iter=100, rho=0.5)
    assert counts["at_threshold"] >= 1


def test_dlr_loss_is_the_reference_formula_and_scale_invariant():
    z = tf.constant([[1.0, 3.0, 2.0, -1.0], [4.0, 0.5, 1.0, 3.5], [-1.0, 3.0, 2.0, 1.0]])
    y = tf.constant([0, 0, 0], tf.int64)
    # z_y third: -(1 - 3) / (3 - 1); z_y on top: -(4 - 3.5) / (4 - 1); z_y last:
    # -(-1 - 3) / (3 - 1).
    np.testing.assert_allclose(_dlr(z, y, None).numpy(), [1.0, -0.5 / 3.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(_dlr(3.0 * z + 7.0, y, None).numpy(), _dlr(z, y, None).numpy(),
                               rtol=1e-5)


def test_targeted_dlr_loss_is_the_reference_formula_and_scale_invariant():
    z = tf.constant([[1.0, 3.0, 2.0, -1.0, 0.0], [4.0, 0.5, 1.0, 3.5, 2.0]])
    y, t = tf.constant([0, 0], tf.int64), tf.constant([1, 3], tf.int64)
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): sorted [3, 2, 1, 0, -1] and
    # [4, 3.5, 2, 1, 0.5].
    expected = [-(1.0 - 3.0) / (3.0 - 0.5), -(4.0 - 3.5) / (4.0 - 1.5)]
    np.testing.assert_allclose(_dlr_targeted(z, y, t).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(_dlr_targeted(2.0 * z - 5.0, y, t).numpy(), expected, rtol=1e-5)


def test_apgd_t_runs_the_reference_loop_per_target_on_the_ranked_classes():
    """One target: the numpy port of the reference loop on the targeted DLR loss (through
    apgd's own compiled loss, so the loops are compared), the target being the second
    largest clean logit."""
    fn, _ = linear_model(5, 2)
    x = images(n=24)
    y = predictions(fn, x)
    target = np.argsort(np.asarray(fn(tf.constant(x))), axis=-1, kind="stable")[:, -2]
    eps, n_iter = 0.03, 60
    x_best, acc, _, x_best_adv, counts = reference_single_run(
        compiled_loss_and_gradient(fn, y, "dlr_targeted", target), x, y, eps=eps,
        n_iter=n_iter)
    assert counts["halved"].max() >= 1 and 0 < acc.sum() < len(x)
    expected = np.where(acc[:, None, None, None], x_best, x_best_adv)
    ours = apgd_t(fn, x, y, eps=eps, num_steps=n_iter, num_targets=1).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_apgd_t_attacks_each_ranked_target_in_turn_on_what_is_left(monkeypatch):
    fn, _ = linear_model(5, 2)
    x = images(n=32)
    y = predictions(fn, x)
    apgd_module = importlib.import_module("tfnode.attacks.apgd")
    seen, original = [], apgd_module._single_run

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append((args[4].copy(), kwargs["todo"].copy(), kwargs["seed"],
                     out[3] & kwargs["todo"]))
        return out

    monkeypatch.setattr(apgd_module, "_single_run", recording)
    result = apgd_t(fn, x, y, eps=0.02, num_steps=5, num_targets=3, seed=2,
                    early_exit=True, return_result=True)
    ranked = np.argsort(np.asarray(fn(tf.constant(x))), axis=-1, kind="stable")
    assert [seed for _, _, seed, _ in seen] == [2000, 2001, 2002]
    fooled = np.zeros(len(x), bool)
    for k, (target, todo, _, fooled_here) in enumerate(seen):
        np.testing.assert_array_equal(target, ranked[:, -(k + 2)])
        assert not np.any(target == y)  # the most likely wrong classes, in order
        np.testing.assert_array_equal(todo, ~fooled)  # only what no earlier target fooled
        fooled |= fooled_here
    np.testing.assert_array_equal(result.is_adv, fooled)
    assert 0 < fooled.sum() < len(x)  # the later targets had samples to attack
    assert np.all(predictions(fn, result.x_adv)[result.is_adv] != y[result.is_adv])
    edges = images(edges=True)  # pixels at 0 and 1: the clip has work to do
    adv = apgd_t(fn, edges, predictions(fn, edges), eps=0.1, num_steps=5,
                 num_targets=2).numpy()
    assert 0.05 < np.max(np.abs(adv - edges)) <= 0.1 + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    with pytest.raises(TfnodeError, match="^num_targets must be below the number of classes"):
        apgd_t(fn, x, y, eps=0.02, num_targets=5)
    small, _ = linear_model(3)
    with pytest.raises(TfnodeError, match="needs at least 4 classes"):
        apgd_t(small, x, predictions(small, x), eps=0.02, num_targets=2)


@pytest.mark.parametrize("attack", [apgd_ce, apgd_dlr])
def test_apgd_respects_eps_and_the_clip_range(attack):
    model = conv_model()
    x = images(edges=True)
    y = predictions(model, x)
    eps = 0.1
    x_adv = attack(model, x, y, eps=eps, num_steps=10)
    assert isinstance(x_adv, tf.Tensor) and x_adv.dtype == tf.float32
    x_adv = x_adv.numpy()
    assert x_adv.shape == x.shape
    assert np.max(np.abs(x_adv - x)) <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.max(np.abs(x_adv - x)) > eps / 2  # it did move
    start = apgd_start(x, eps=eps, seed=3).numpy()
    assert np.max(np.abs(start - x)) <= eps + 1e-6
    assert start.min() >= 0.0 and start.max() <= 1.0


def test_the_start_is_autoattacks():
    x = images()  # in [0.2, 0.8]: the clip does not act
    eps = 0.1
    delta = np.abs(apgd_start(x, eps=eps, seed=0).numpy() - x).reshape(len(x), -1)
    # eps * t / max|t|: each sample's largest coordinate is eps, the others spread below.
    np.testing.assert_allclose(delta.max(axis=1), eps, rtol=1e-5)
    assert 0.4 * eps < delta.mean() < 0.6 * eps


def test_apgd_ce_is_at_least_as_strong_as_pgd():
    model = conv_model()
    x = images(n=64)
    y = predictions(model, x)
    eps, steps = 0.03, 20
    pgd_acc = np.mean(predictions(model, pgd(model, x, y, eps=eps, step_size=eps / 4,
                                             num_steps=steps).numpy()) == y)
    apgd_acc = np.mean(predictions(model, apgd_ce(model, x, y, eps=eps,
                                                  num_steps=steps).numpy()) == y)
    assert 0.0 < pgd_acc < 1.0  # an eps where the comparison means something
    assert apgd_acc <= pgd_acc + 2 / len(x)


def test_apgd_is_seeded():
    # A non-concave model and short runs, where the start matters (on a linear model any
    # start ends in the same corner of the box).
    fn, _ = linear_model(3, 3, hidden=8)
    x = images(n=8)
    y = predictions(fn, x)
    runs = [apgd(fn, x, y, eps=0.05, num_steps=2, loss=loss, seed=seed).numpy()
            for loss in ("ce", "dlr") for seed in (1, 1, 2)]
    for same, again, other in (runs[:3], runs[3:]):
        np.testing.assert_array_equal(same, again)
        assert np.max(np.abs(same - other)) > 1e-3


def test_restarts_keep_the_first_success_and_the_highest_loss():
    # A non-concave model and short runs, where the start matters.
    model, _ = linear_model(3, 3, hidden=8)
    x = images(n=32)
    y = predictions(model, x)
    eps = 0.03
    once = apgd_ce(model, x, y, eps=eps, num_steps=4, seed=1).numpy()
    thrice = apgd_ce(model, x, y, eps=eps, num_steps=4, restarts=3, seed=1).numpy()
    fooled_once = predictions(model, once) != y
    fooled_thrice = predictions(model, thrice) != y
    assert 0 < fooled_once.sum() < fooled_thrice.sum() < len(x)  # the restarts do work
    # Run 0 of both calls is the same run: its successes are kept as they were.
    np.testing.assert_array_equal(thrice[fooled_once], once[fooled_once])
    assert np.all(fooled_thrice[fooled_once])
    # A sample no run fooled gets the highest-loss point of all runs.
    robust = ~fooled_thrice
    gain = ce(model, thrice, y)[robust] - ce(model, once, y)[robust]
    assert np.all(gain >= -1e-6) and np.any(gain > 1e-4)


@pytest.mark.parametrize("options,match", [
    ({"eps": -0.1}, "^eps must be >= 0"),
    ({"eps": 1.5}, "^eps must lie in"),
    ({"eps": 0.1, "num_steps": 0}, "^num_steps must be an integer >= 1"),
    ({"eps": 0.1, "num_steps": 2.5}, "^num_steps must be an integer >= 1"),
    ({"eps": 0.1, "restarts": 0}, "^restarts must be an integer >= 1"),
    ({"eps": 0.1, "loss": "hinge"}, "^loss must be one of"),
    ({"eps": 0.1, "rho": 0.0}, r"^rho must lie in \(0, 1\)"),
    ({"eps": 0.1, "rho": 1.0}, r"^rho must lie in \(0, 1\)"),
    ({"eps": 0.1, "rho": "0.5"}, r"^rho must lie in \(0, 1\)"),
])
def test_bad_options_are_one_line_errors(options, match):
    fn, _ = linear_model()
    x = images(n=2)
    with pytest.raises(TfnodeError, match=match) as err:
        apgd(fn, x, np.zeros(2, int), **options)
    assert "\n" not in str(err.value)


def test_dlr_on_two_classes_is_a_one_line_error():
    fn, _ = linear_model(num_classes=2)
    x = images(n=2)
    for call in (lambda: apgd_dlr(fn, x, np.zeros(2, int), eps=0.1),
                 lambda: apgd(fn, x, np.zeros(2, int), eps=0.1, loss="dlr")):
        with pytest.raises(TfnodeError, match="^loss='dlr' needs at least 3 classes") as err:
            call()
        assert "\n" not in str(err.value)
    # CE works on two classes.
    assert apgd_ce(fn, x, np.zeros(2, int), eps=0.1, num_steps=2).shape == x.shape
